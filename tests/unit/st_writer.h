// Test helper: writes safetensors files byte by byte, so malformed ones can be made too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glmimage::testing {

// A fresh empty directory under the system temp dir, removed (with the others) when the process exits.
std::string make_temp_dir(const std::string& tag);
void write_file(const std::string& path, const std::string& bytes);
// 8-byte little-endian header length + header + data.
std::string safetensors_bytes(const std::string& header_json, const std::string& data);

struct StTensor {
    std::string name;
    std::string dtype;  // "F32", "BF16", ...
    std::vector<int64_t> shape;
    std::string bytes;  // raw little-endian data
};
// A well-formed file holding the given tensors, laid out one after another.
std::string safetensors_file(const std::vector<StTensor>& tensors);
std::string f32_bytes(const std::vector<float>& values);

}  // namespace glmimage::testing
