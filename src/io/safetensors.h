// Safetensors reading by memory mapping, with a header validated before any byte of
// tensor data is trusted. Torch-free, so it can be fuzzed and run under sanitizers alone.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace glmimage::io {

// Element types that may appear in a safetensors header.
enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

size_t dtype_size(DType d);
// The safetensors spelling ("BF16", "F32", ...).
const char* dtype_name(DType d);
std::optional<DType> parse_dtype(const std::string& s);
bool dtype_is_floating(DType d);

// A read-only view of a whole file. Copy-on-write private mapping: if a consumer writes
// into a zero-copy tensor, the file on disk is never modified.
class MappedFile {
  public:
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
    uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

struct TensorInfo {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // byte offsets relative to the start of the data section
    uint64_t end = 0;

    int64_t numel() const;
};

std::string shape_to_string(const std::vector<int64_t>& shape);

class SafetensorsFile {
  public:
    // Opens and validates the file; throws FormatError on any inconsistency.
    static std::shared_ptr<const SafetensorsFile> open(const std::string& path);

    const std::string& path() const { return file_->path(); }
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* find(const std::string& name) const;
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    // First byte of a tensor's data inside the mapping.
    const uint8_t* data(const TensorInfo& t) const { return data_start_ + t.begin; }

  private:
    SafetensorsFile() = default;
    std::unique_ptr<MappedFile> file_;
    const uint8_t* data_start_ = nullptr;
    std::vector<TensorInfo> tensors_;  // sorted by name
    std::map<std::string, size_t> index_;
    std::map<std::string, std::string> metadata_;
};

// Upper bound on the JSON header (the real 7B DiT header is ~60 KB); a larger value means
// a corrupt or hostile file, not a model.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

}  // namespace glmimage::io
