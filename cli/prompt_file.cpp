#include "prompt_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "core/paths.h"
#include "glmimage/errors.h"

namespace glmimage::cli {

namespace fs = std::filesystem;

namespace {
// Far above any real prompt list; a larger input is a mistake (a binary, a log), not prompts.
constexpr size_t kMaxPromptFileBytes = 64u << 20;
}  // namespace

std::vector<std::string> read_prompt_file(const std::string& path) {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (path != "-") {
        if (detail::is_directory(path)) throw InputError("prompt file '" + path + "' is a directory");
        file.open(path, std::ios::binary);
        if (!file) throw InputError("cannot read prompt file '" + path + "': " + std::strerror(errno));
        in = &file;
    }
    std::vector<std::string> prompts;
    std::string line;
    size_t total = 0;
    while (std::getline(*in, line)) {
        total += line.size() + 1;
        if (total > kMaxPromptFileBytes)
            throw InputError("prompt file '" + path + "' is larger than 64 MiB");
        if (!line.empty() && line.back() == '\r') line.pop_back();  // files written on Windows
        if (line.find_first_not_of(" \t") != std::string::npos) prompts.push_back(line);
    }
    if (in->bad()) throw InputError("cannot read prompt file '" + path + "'");
    if (prompts.empty()) throw InputError("prompt file '" + path + "' holds no prompt");
    return prompts;
}

}  // namespace glmimage::cli
