// model_index.json of a GLM-Image checkpoint directory: which class each folder holds.
#pragma once

#include <map>
#include <string>
#include <utility>

namespace glmimage {

struct ModelIndex {
    std::string class_name;  // GlmImagePipeline
    // folder -> (library, class), e.g. "transformer" -> ("diffusers", "GlmImageTransformer2DModel")
    std::map<std::string, std::pair<std::string, std::string>> components;

    // Reads <dir>/model_index.json and checks that every component GLM-Image needs is there,
    // with the expected class, and that its folder exists.
    static ModelIndex load(const std::string& model_dir);
};

}  // namespace glmimage
