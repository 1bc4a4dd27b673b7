// How much memory the host can still give: MemAvailable of /proc/meminfo (page cache that can
// be dropped counts as available, as it should for memory-mapped weights). Torch-free.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

namespace glmimage::detail {

inline std::optional<int64_t> available_host_bytes() {
    std::ifstream f("/proc/meminfo");
    std::string key;
    int64_t kib = 0;
    std::string unit;
    while (f >> key >> kib >> unit)
        if (key == "MemAvailable:") return kib * 1024;
    return std::nullopt;  // not Linux, or no /proc: no estimate-based limit
}

}  // namespace glmimage::detail
