#include "core/paths.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace glmimage::detail {

PathKind path_kind(const std::string& p, std::string* why) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
        if (errno != ENOENT && why) *why = std::strerror(errno);
        return PathKind::kAbsent;
    }
    if (S_ISDIR(st.st_mode)) return PathKind::kDirectory;
    if (S_ISREG(st.st_mode)) return PathKind::kFile;
    return PathKind::kOther;
}

std::string join_path(std::string_view dir, std::string_view name) {
    std::string out(dir);
    if (!out.empty() && out.back() != '/') out += '/';
    out += name;
    return out;
}

std::string file_name(std::string_view p) {
    const auto slash = p.rfind('/');
    return std::string(slash == std::string_view::npos ? p : p.substr(slash + 1));
}

bool list_folder(const std::string& dir, std::vector<std::string>& names, std::string& why) {
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), &::closedir);
    if (!d) {
        why = std::strerror(errno);
        return false;
    }
    for (;;) {
        errno = 0;
        const dirent* e = ::readdir(d.get());
        if (!e) break;
        const std::string_view name = e->d_name;
        if (name != "." && name != "..") names.emplace_back(name);
    }
    if (errno != 0) {
        why = std::strerror(errno);
        return false;
    }
    return true;
}

}  // namespace glmimage::detail
