// Shared by the libFuzzer targets: the readers under test take paths (they memory-map or stream
// files), so each input is written to one per-process file in /dev/shm (or /tmp).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace glmimage::fuzz {

// A file or folder in /dev/shm (or /tmp) owned by this process, removed when the fuzzer exits
// (libFuzzer ends a -max_total_time run through exit(), which runs this destructor), so runs leave
// nothing behind.
struct ScratchPath {
    std::string path;
    enum Kind { kFile, kFolder };
    explicit ScratchPath(const std::string& name, Kind kind = kFile)
        : path((access("/dev/shm", W_OK) == 0 ? "/dev/shm/" : "/tmp/") + name) {
        if (kind == kFolder) std::filesystem::create_directories(path);
    }
    ScratchPath(const ScratchPath&) = delete;
    ScratchPath& operator=(const ScratchPath&) = delete;
    ~ScratchPath() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
};

inline std::string input_file(const uint8_t* data, size_t size, const char* suffix) {
    static const ScratchPath scratch("glmi_fuzz_" + std::to_string(getpid()) + suffix);
    const std::string& path = scratch.path;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) __builtin_trap();
    if (size && std::fwrite(data, 1, size, f) != size) __builtin_trap();
    std::fclose(f);
    return path;
}

}  // namespace glmimage::fuzz
