#include "pipeline/model_index.h"

#include "core/check.h"
#include "core/paths.h"
#include "io/json_config.h"

namespace glmimage {

using detail::str_cat;

namespace {

struct Expected {
    const char* folder;
    const char* library;
    const char* cls;
};

constexpr Expected kComponents[] = {
    {"vision_language_encoder", "transformers", "GlmImageForConditionalGeneration"},
    {"processor", "transformers", "GlmImageProcessor"},
    {"text_encoder", "transformers", "T5EncoderModel"},
    {"tokenizer", "transformers", "ByT5Tokenizer"},
    {"transformer", "diffusers", "GlmImageTransformer2DModel"},
    {"vae", "diffusers", "AutoencoderKL"},
    {"scheduler", "diffusers", "FlowMatchEulerDiscreteScheduler"},
};

}  // namespace

ModelIndex ModelIndex::load(const std::string& model_dir) {
    std::string why;
    const auto kind = detail::path_kind(model_dir, &why);
    if (kind == detail::PathKind::kAbsent)
        throw InputError(str_cat("model directory '", model_dir, "' does not exist", detail::reason_suffix(why)));
    if (kind != detail::PathKind::kDirectory) throw InputError(str_cat("model '", model_dir, "' is not a directory"));
    const std::string path = detail::join_path(model_dir, "model_index.json");
    if (!detail::path_exists(path, &why))
        throw InputError(str_cat("'", model_dir, "' is not a GLM-Image checkpoint: model_index.json is missing",
                                 detail::reason_suffix(why)));
    auto j = io::JsonConfig::load(path);
    ModelIndex idx;
    std::string missing;
    idx.class_name = j.get_string("_class_name");
    if (idx.class_name != "GlmImagePipeline")
        throw ConfigError(str_cat(path, ": key '_class_name': expected 'GlmImagePipeline', got '", idx.class_name, "'"));
    for (const auto& e : kComponents) {
        auto entry = j.get_string_list(e.folder);
        if (entry.size() != 2)
            throw ConfigError(str_cat(path, ": key '", e.folder, "': expected [library, class], got ",
                                      entry.size(), " strings"));
        if (entry[1] != e.cls)
            throw UnsupportedError(str_cat(path, ": component '", e.folder, "': expected class '", e.cls,
                                           "', got '", entry[1], "'"));
        if (!detail::is_directory(detail::join_path(model_dir, e.folder))) missing += str_cat(missing.empty() ? "" : ", ", e.folder, "/");
        idx.components[e.folder] = {entry[0], entry[1]};
    }
    // Every missing folder at once: a partial download is the common case, and the message
    // should say what to fetch.
    if (!missing.empty())
        throw InputError(str_cat("incomplete model directory '", model_dir, "': missing component folder(s) ", missing,
                                 " named in model_index.json"));
    return idx;
}

}  // namespace glmimage
