// Path questions and path arithmetic for the library, on POSIX calls and plain strings, never
// throwing: a path that cannot be examined (a name too long, a loop of links, no permission on a
// folder) counts as absent, and `why` (if given) receives the system's reason for the caller's
// own error message.
//
// Why not std::filesystem: LibTorch's libraries export their own copies of libstdc++'s
// std::filesystem functions, built with their toolchain, while the inline parts of
// std::filesystem::path come from this compiler's headers. On the GPU machine's Python (torch
// 2.11+cu130, this library built with GCC 13.3) LD_DEBUG showed this library's std::filesystem
// calls bound to libtorch_cpu.so's copies. Path work needs none of it, and no library of ours
// imports a std::filesystem symbol any more (tests/python/test_import_order.py checks).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace glmimage::detail {

enum class PathKind { kAbsent, kFile, kDirectory, kOther };

// What `p` names, following symbolic links (as stat(2)).
PathKind path_kind(const std::string& p, std::string* why = nullptr);

inline bool path_exists(const std::string& p, std::string* why = nullptr) {
    return path_kind(p, why) != PathKind::kAbsent;
}

inline bool is_directory(const std::string& p, std::string* why = nullptr) {
    return path_kind(p, why) == PathKind::kDirectory;
}

// `dir` and `name` joined by one '/' ("a" + "b" -> "a/b", "a/" + "b" -> "a/b", "" + "b" -> "b").
std::string join_path(std::string_view dir, std::string_view name);

// The last component of `p` ("a/b.json" -> "b.json"; "a/b/" -> "").
std::string file_name(std::string_view p);

// The names in folder `dir` (no "." or ".."), in the order the system gives them. On failure
// returns false and sets `why`.
bool list_folder(const std::string& dir, std::vector<std::string>& names, std::string& why);

// " (reason)" when there is one, for appending to a message.
inline std::string reason_suffix(const std::string& why) { return why.empty() ? std::string() : " (" + why + ")"; }

}  // namespace glmimage::detail
