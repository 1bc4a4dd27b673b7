// Internal invariant checks that throw glmimage errors carrying file:line.
#pragma once

#include <sstream>
#include <string>

#include "glmimage/errors.h"

namespace glmimage::detail {

template <typename... Args>
std::string str_cat(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}

}  // namespace glmimage::detail

// Throws glmimage::Error("<file>:<line>: <message>") when cond is false. For invariants
// of our own code; user-facing problems throw the specific error class instead.
#define GLMI_CHECK(cond, ...)                                                         \
    do {                                                                              \
        if (!(cond)) {                                                                \
            throw ::glmimage::Error(::glmimage::detail::str_cat(                      \
                __FILE__, ":", __LINE__, ": check failed '", #cond, "': ", __VA_ARGS__)); \
        }                                                                             \
    } while (0)
