#include "tokenizers/prompt_processor.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/check.h"
#include "glmimage/errors.h"
#include "io/json_config.h"

// Reference: transformers 5.24 models/glm_image/processing_glm_image.py (target shape, grid
// suffix, image_grid_thw layout), image_processing_glm_image.py (smart_resize, grid [1, h/p, w/p]),
// processing_utils.ProcessorMixin (each image token replaced by grid/merge^2 copies), and
// diffusers pipeline_glm_image.py generate_prior_tokens (how the processor is called).

namespace glmimage {

using detail::str_cat;

namespace {

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw FormatError("cannot read '" + path + "'");
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A token entry of tokenizer_config.json: a string or a serialized AddedToken {"content": ...}.
std::string token_string(const io::JsonConfig& cfg, const std::string& key) {
    const auto& j = cfg.raw();
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) throw ConfigError(str_cat(cfg.where(), ": missing key '", key, "'"));
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
    throw ConfigError(str_cat(cfg.where(), ": key '", key, "': expected a token string, got ", it->type_name()));
}

int64_t count_of(const std::string& s, const std::string& needle) {
    int64_t n = 0;
    for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size())) ++n;
    return n;
}

}  // namespace

PromptProcessor PromptProcessor::from_dir(const std::string& dir, const PreprocessorConfig& preprocessor) {
    PromptProcessor p(BpeTokenizer::from_file(dir + "/tokenizer.json"));
    const auto tc = io::JsonConfig::load(dir + "/tokenizer_config.json");
    p.bos_token_ = token_string(tc, "bos_token");
    p.pad_token_ = token_string(tc, "pad_token");
    p.image_token_ = token_string(tc, "image_token");
    p.grid_bos_token_ = token_string(tc, "grid_bos_token");
    p.grid_eos_token_ = token_string(tc, "grid_eos_token");
    const std::string side = tc.get_string("padding_side", "right");
    if (side != "left" && side != "right") throw ConfigError(str_cat(tc.where(), ": padding_side '", side, "'"));
    p.pad_left_ = side == "left";
    auto id_of = [&](const std::string& tok, const char* what) {
        auto id = p.tokenizer_.token_to_id(tok);
        if (!id) throw ConfigError(str_cat(tc.where(), ": ", what, " '", tok, "' is not in the tokenizer"));
        return *id;
    };
    p.pad_id_ = id_of(p.pad_token_, "pad_token");
    p.bos_id_ = id_of(p.bos_token_, "bos_token");
    p.image_token_id_ = id_of(p.image_token_, "image_token");

    p.preprocessor_ = preprocessor;

    // The template emits a fixed literal per image item (the real one:
    // '<|dit_token_16384|><|image|><|dit_token_16385|>') and the text items verbatim; we take
    // that literal from the file rather than assume the start / end token names.
    const std::string tpl_path = dir + "/chat_template.jinja";
    const std::string tpl = read_text(tpl_path);
    const size_t at = tpl.find(p.image_token_);
    if (at == std::string::npos || count_of(tpl, p.image_token_) != 1)
        throw ConfigError(str_cat(tpl_path, ": expected exactly one literal containing '", p.image_token_, "'"));
    const size_t open = tpl.find_last_of("'\"", at);
    if (open == std::string::npos) throw ConfigError(tpl_path + ": the image placeholder is not a quoted literal");
    const size_t close = tpl.find(tpl[open], at);
    if (close == std::string::npos || tpl.substr(open + 1, close - open - 1).find('\\') != std::string::npos)
        throw ConfigError(tpl_path + ": the image placeholder is not a plain quoted literal");
    p.image_placeholder_ = tpl.substr(open + 1, close - open - 1);
    if (tpl.find("['text']") == std::string::npos && tpl.find(".text") == std::string::npos)
        throw ConfigError(tpl_path + ": no text item in the chat template");
    return p;
}

std::string PromptProcessor::render(const std::string& prompt, int64_t num_images) const {
    if (num_images < 0) throw InputError("processor: negative image count");
    std::string out;
    for (int64_t i = 0; i < num_images; ++i) out += image_placeholder_;
    return out + prompt;
}

std::array<int64_t, 3> PromptProcessor::source_grid(ImageSize image) const {
    const ImageSize r = preprocessor_.resized(image);
    return {1, r.height / preprocessor_.patch_size, r.width / preprocessor_.patch_size};
}

std::array<int64_t, 4> PromptProcessor::target_grid(int64_t target_h, int64_t target_w) {
    constexpr int64_t factor = 32;
    const int64_t th = target_h / factor, tw = target_w / factor;
    if (th <= 0 || tw <= 0) throw InputError(str_cat("processor: target size ", target_h, "x", target_w, " is too small"));
    const double ratio = static_cast<double>(th) / static_cast<double>(tw);
    // int() truncation of the float products, as the reference.
    const auto ph = static_cast<int64_t>(std::sqrt(ratio) * (factor / 2));
    const auto pw = static_cast<int64_t>(std::sqrt(1.0 / ratio) * (factor / 2));
    return {th, tw, ph, pw};
}

PromptProcessorOutput PromptProcessor::process(const std::vector<std::string>& prompts,
                                         const std::vector<std::vector<ImageSize>>& images, int64_t target_h,
                                         int64_t target_w) const {
    if (prompts.empty()) throw InputError("processor: no prompt");
    if (target_h <= 0 || target_w <= 0 || target_h % 32 != 0 || target_w % 32 != 0)
        throw InputError(str_cat("processor: height and width must be positive multiples of 32, got ", target_h, "x", target_w));
    const size_t batch = prompts.size();
    if (!images.empty() && images.size() != batch)
        throw InputError(str_cat("processor: ", images.size(), " image lists for ", batch, " prompts"));
    const size_t n_src = images.empty() ? 0 : images[0].size();
    for (const auto& row : images)
        if (row.size() != n_src)
            throw InputError("processor: every prompt must have the same number of condition images");
    const bool t2i = n_src == 0;
    const auto [th, tw, ph, pw] = target_grid(target_h, target_w);

    PromptProcessorOutput out;
    std::vector<std::vector<int64_t>> ids(batch);
    for (size_t b = 0; b < batch; ++b) {
        const std::string& prompt = prompts[b];
        if (prompt.empty()) throw InputError(str_cat("processor: prompt ", b, " is empty"));
        if (prompt.find(image_token_) != std::string::npos)
            throw InputError(str_cat("processor: prompt ", b, " contains the image token '", image_token_, "'"));
        const std::string rendered = render(prompt, static_cast<int64_t>(n_src));
        // Each image token, in order, becomes one copy per visual token of its image.
        std::string text;
        size_t pos = 0, img = 0;
        for (size_t at = rendered.find(image_token_); at != std::string::npos;
             at = rendered.find(image_token_, pos)) {
            text.append(rendered, pos, at - pos);
            if (img >= n_src) throw InputError("processor: more image tokens than images");
            const auto g = source_grid(images[b][img++]);
            out.image_grid_thw.push_back(g);
            const int64_t copies = g[0] * g[1] * g[2] / (preprocessor_.merge_size * preprocessor_.merge_size);
            text.reserve(text.size() + static_cast<size_t>(copies) * image_token_.size());
            for (int64_t k = 0; k < copies; ++k) text += image_token_;
            pos = at + image_token_.size();
        }
        text.append(rendered, pos, std::string::npos);
        text += str_cat(grid_bos_token_, th, " ", tw, grid_eos_token_);
        out.image_grid_thw.push_back({1, th, tw});
        if (t2i) {
            text += str_cat(grid_bos_token_, ph, " ", pw, grid_eos_token_);
            out.image_grid_thw.push_back({1, ph, pw});
        }
        text += bos_token_;
        ids[b] = tokenizer_.encode(text);
        out.texts.push_back(std::move(text));
    }
    out.images_per_sample.assign(batch, static_cast<int64_t>(n_src) + (t2i ? 2 : 1));

    size_t len = 0;
    for (const auto& x : ids) len = std::max(len, x.size());
    for (auto& x : ids) {
        const size_t pad = len - x.size();
        std::vector<int64_t> row, mask;
        row.reserve(len), mask.reserve(len);
        if (pad_left_) row.assign(pad, pad_id_), mask.assign(pad, 0);
        row.insert(row.end(), x.begin(), x.end());
        mask.insert(mask.end(), x.size(), 1);
        if (!pad_left_) row.insert(row.end(), pad, pad_id_), mask.insert(mask.end(), pad, 0);
        out.input_ids.push_back(std::move(row));
        out.attention_mask.push_back(std::move(mask));
    }
    return out;
}

}  // namespace glmimage
