#include "tokenizers/glm_processor.h"

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

ImageSize glm_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels, int64_t max_pixels) {
    if (factor <= 0 || min_pixels <= 0 || max_pixels < min_pixels)
        throw InputError(str_cat("smart_resize: bad parameters factor ", factor, ", min_pixels ", min_pixels,
                                 ", max_pixels ", max_pixels));
    if (height < factor || width < factor)
        throw InputError(str_cat("smart_resize: image ", height, "x", width, " is smaller than the factor ", factor));
    const int64_t min_side = std::min(height, width), max_side = std::max(height, width);
    if (static_cast<double>(max_side) / static_cast<double>(min_side) > 4.0)
        throw InputError(str_cat("smart_resize: image ", height, "x", width, ": aspect ratio must be at most 4"));
    // Python's round() is half to even, as nearbyint in the default rounding mode.
    const auto shortest = static_cast<int64_t>(std::nearbyint(std::sqrt(static_cast<double>(min_pixels))));
    const auto longest = static_cast<int64_t>(std::nearbyint(std::sqrt(static_cast<double>(max_pixels))));
    double scale = 1.0;
    if (min_side < shortest) scale = static_cast<double>(shortest) / static_cast<double>(min_side);
    if (static_cast<double>(max_side) * scale > static_cast<double>(longest))
        scale = static_cast<double>(longest) / static_cast<double>(max_side);
    // The reference halves the input before rounding (so a 1024 image maps to 512 at scale 1).
    const int64_t h2 = height / 2, w2 = width / 2;
    const auto f = static_cast<double>(factor);
    int64_t hb = std::max(factor, static_cast<int64_t>(std::nearbyint(static_cast<double>(h2) * scale / f)) * factor);
    int64_t wb = std::max(factor, static_cast<int64_t>(std::nearbyint(static_cast<double>(w2) * scale / f)) * factor);
    if (std::max(hb, wb) > longest) {
        const double beta = static_cast<double>(std::max(hb, wb)) / static_cast<double>(longest);
        hb = std::max(factor, static_cast<int64_t>(std::floor(static_cast<double>(hb) / beta / f)) * factor);
        wb = std::max(factor, static_cast<int64_t>(std::floor(static_cast<double>(wb) / beta / f)) * factor);
    }
    return {hb, wb};
}

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

GlmProcessor GlmProcessor::from_dir(const std::string& dir) {
    GlmProcessor p(BpeTokenizer::from_file(dir + "/tokenizer.json"));
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

    const auto pc = io::JsonConfig::load(dir + "/preprocessor_config.json");
    p.patch_size_ = pc.get_int("patch_size");
    p.merge_size_ = pc.get_int("merge_size");
    // min_pixels / max_pixels win over size.shortest_edge / longest_edge, as in the reference.
    if (pc.has("min_pixels")) p.min_pixels_ = pc.get_int("min_pixels");
    else p.min_pixels_ = pc.get_object("size").get_int("shortest_edge");
    if (pc.has("max_pixels")) p.max_pixels_ = pc.get_int("max_pixels");
    else p.max_pixels_ = pc.get_object("size").get_int("longest_edge");
    if (p.patch_size_ <= 0 || p.merge_size_ <= 0 || p.min_pixels_ <= 0 || p.max_pixels_ < p.min_pixels_)
        throw ConfigError(str_cat(pc.where(), ": bad patch_size / merge_size / min_pixels / max_pixels"));

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

std::string GlmProcessor::render(const std::string& prompt, int64_t num_images) const {
    if (num_images < 0) throw InputError("processor: negative image count");
    std::string out;
    for (int64_t i = 0; i < num_images; ++i) out += image_placeholder_;
    return out + prompt;
}

std::array<int64_t, 3> GlmProcessor::source_grid(ImageSize image) const {
    const ImageSize r = glm_smart_resize(image.height, image.width, patch_size_ * merge_size_, min_pixels_, max_pixels_);
    return {1, r.height / patch_size_, r.width / patch_size_};
}

std::array<int64_t, 4> GlmProcessor::target_grid(int64_t target_h, int64_t target_w) {
    constexpr int64_t factor = 32;
    const int64_t th = target_h / factor, tw = target_w / factor;
    if (th <= 0 || tw <= 0) throw InputError(str_cat("processor: target size ", target_h, "x", target_w, " is too small"));
    const double ratio = static_cast<double>(th) / static_cast<double>(tw);
    // int() truncation of the float products, as the reference.
    const auto ph = static_cast<int64_t>(std::sqrt(ratio) * (factor / 2));
    const auto pw = static_cast<int64_t>(std::sqrt(1.0 / ratio) * (factor / 2));
    return {th, tw, ph, pw};
}

GlmProcessorOutput GlmProcessor::process(const std::vector<std::string>& prompts,
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

    GlmProcessorOutput out;
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
            const int64_t copies = g[0] * g[1] * g[2] / (merge_size_ * merge_size_);
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
