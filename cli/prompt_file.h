// --prompt-file: one prompt per line of a text file (or stdin for "-").
#pragma once

#include <string>
#include <vector>

namespace glmimage::cli {

// The non-blank lines of `path` ("-": standard input), each without its line ending (\n or
// \r\n). InputError for a directory, an unreadable file, a file over 64 MiB or one with no prompt.
std::vector<std::string> read_prompt_file(const std::string& path);

}  // namespace glmimage::cli
