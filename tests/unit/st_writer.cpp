#include "st_writer.h"

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <unistd.h>

namespace glmimage::testing {

namespace {

// Every folder a test process makes sits in one per-process folder, removed when the process exits
// normally, so that runs leave nothing behind in the temp dir (a failed test's files go too: its
// assertion message is what to read).
struct ProcessTempRoot {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("glmi_test_" + std::to_string(::getpid()));
    ~ProcessTempRoot() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
};

}  // namespace

std::string make_temp_dir(const std::string& tag) {
    static ProcessTempRoot root;
    static std::atomic<int> counter{0};
    auto dir = root.path / (tag + "_" + std::to_string(counter++));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir.string();
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + path);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string safetensors_bytes(const std::string& header_json, const std::string& data) {
    std::string out(8, '\0');
    uint64_t n = header_json.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header_json + data;
}

std::string safetensors_file(const std::vector<StTensor>& tensors) {
    std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
    std::string data;
    for (const auto& t : tensors) {
        std::string shape;
        for (size_t i = 0; i < t.shape.size(); ++i) {
            if (i) shape += ',';
            shape += std::to_string(t.shape[i]);
        }
        header += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[" + shape +
                  "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
                  std::to_string(data.size() + t.bytes.size()) + "]}";
        data += t.bytes;
    }
    header += "}";
    while ((8 + header.size()) % 8 != 0) header += ' ';  // aligned data, as real writers do
    return safetensors_bytes(header, data);
}

std::string f32_bytes(const std::vector<float>& values) {
    std::string s(values.size() * 4, '\0');
    std::memcpy(s.data(), values.data(), s.size());
    return s;
}

}  // namespace glmimage::testing
