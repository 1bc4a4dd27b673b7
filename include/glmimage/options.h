// Options for loading a GLM-Image checkpoint. Every field has a default.
#pragma once

#include <string>

namespace glmimage {

struct LoadOptions {
    std::string device = "cpu";  // "cpu", "cuda", "cuda:N"
    std::string dtype = "auto";  // "auto" (the checkpoint's), "float32", "bfloat16", "float16"
    int threads = 0;             // intra-op CPU threads; 0 keeps LibTorch's default

    // Throws InputError / UnsupportedError for values outside the lists above.
    void validate() const;
    std::string to_string() const;
};

}  // namespace glmimage
