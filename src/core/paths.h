// Filesystem questions that never throw. std::filesystem's plain overloads throw
// filesystem_error for a path they cannot examine (a name too long, a loop of links, no
// permission on a folder), which is not a glmimage::Error; here such a path counts as absent
// and `why` (if given) receives the system's reason, for the caller's own error message.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

namespace glmimage::detail {

enum class PathKind { kAbsent, kFile, kDirectory, kOther };

inline PathKind path_kind(const std::filesystem::path& p, std::string* why = nullptr) {
    std::error_code ec;
    const auto st = std::filesystem::status(p, ec);
    if (ec && ec != std::errc::no_such_file_or_directory && why) *why = ec.message();
    if (ec || !std::filesystem::exists(st)) return PathKind::kAbsent;
    if (std::filesystem::is_directory(st)) return PathKind::kDirectory;
    if (std::filesystem::is_regular_file(st)) return PathKind::kFile;
    return PathKind::kOther;
}

inline bool path_exists(const std::filesystem::path& p, std::string* why = nullptr) {
    return path_kind(p, why) != PathKind::kAbsent;
}

inline bool is_directory(const std::filesystem::path& p, std::string* why = nullptr) {
    return path_kind(p, why) == PathKind::kDirectory;
}

// " (reason)" when there is one, for appending to a message.
inline std::string reason_suffix(const std::string& why) { return why.empty() ? std::string() : " (" + why + ")"; }

}  // namespace glmimage::detail
