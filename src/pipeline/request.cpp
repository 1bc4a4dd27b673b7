// Validation and description of the public request types: every rule a request must meet,
// in one place (the CLI and the Python module call these rather than re-checking).
#include <cmath>
#include <limits>
#include <sstream>
#include <tuple>

#include "core/check.h"
#include "glmimage/glmimage.h"
#include "core/system_memory.h"
#include "pipeline/model_impl.h"
#include "tokenizers/glyph_text.h"

namespace glmimage {

std::vector<std::string> glyph_texts(const std::string& prompt) { return extract_glyph_texts(prompt); }

using detail::str_cat;

void Image::validate(const std::string& what) const {
    if (height <= 0 || width <= 0) throw InputError(str_cat(what, ": empty image (", height, "x", width, ")"));
    if (rgb.size() != static_cast<size_t>(height * width * 3))
        throw InputError(str_cat(what, ": ", height, "x", width, " RGB needs ", height * width * 3, " bytes, got ",
                                 rgb.size()));
}

void check_finite_values(const std::vector<float>& values, const char* what) {
    for (float v : values)
        if (!std::isfinite(v)) throw InputError(str_cat(what, " must be finite, got ", v));
}

void ArSettings::validate() const {
    if (!do_sample) return;  // greedy reads none of them
    if (temperature && !(*temperature > 0)) throw InputError(str_cat("temperature must be > 0, got ", *temperature));
    if (top_p && !(*top_p > 0 && *top_p <= 1)) throw InputError(str_cat("top_p must be in (0, 1], got ", *top_p));
    if (top_k && *top_k < 0) throw InputError(str_cat("top_k must be >= 0, got ", *top_k));
}

ArSettings ArSettings::with_defaults(const ArSettings& d) const {
    ArSettings s = *this;
    if (!s.temperature) s.temperature = d.temperature;
    if (!s.top_p) s.top_p = d.top_p;
    if (!s.top_k) s.top_k = d.top_k;
    return s;
}

int64_t GenerateRequest::num_prompts() const {
    if (!prompts.empty() || prompt_embeds_shape.empty()) return static_cast<int64_t>(prompts.size());
    return prompt_embeds_shape[0];
}

namespace {

// A caller's values of a 4-D (latents) or 3-D (embeddings) shape: every dimension positive, the
// count the shape's, finite.
void check_given_values(const std::vector<float>& values, const std::vector<int64_t>& shape, size_t dims,
                        const char* name, const char* layout) {
    int64_t count = 1;
    for (int64_t d : shape) count = d > 0 && count <= INT64_MAX / d ? count * d : -1;
    if (shape.size() != dims || count != static_cast<int64_t>(values.size()))
        throw InputError(str_cat(name, ": ", values.size(), " values in shape ", c10::IntArrayRef(shape),
                                 ": expected a ", dims, "-D shape ", layout, " holding them all"));
    check_finite_values(values, name);
}

}  // namespace

void GenerateRequest::validate() const {
    if (prompts.empty() && prompt_embeds_shape.empty()) throw InputError("no prompt given");
    for (size_t i = 0; i < prompts.size(); ++i)
        if (prompts[i].find_first_not_of(" \t\r\n") == std::string::npos)
            throw InputError(str_cat("prompt ", i, " is empty"));
    if (height <= 0 || width <= 0 || height % 32 != 0 || width % 32 != 0)
        throw InputError(str_cat("height and width must be positive multiples of 32, got ", height, "x", width));
    if (steps < 1) throw InputError(str_cat("steps must be >= 1, got ", steps));
    if (!(guidance >= 0)) throw InputError(str_cat("guidance must be >= 0, got ", guidance));
    if (images_per_prompt < 1) throw InputError(str_cat("images_per_prompt must be >= 1, got ", images_per_prompt));
    if (max_sequence_length < 1) throw InputError("max_sequence_length must be >= 1");
    if (output != Output::kImages && output != Output::kFloatImages && output != Output::kLatents)
        throw InputError(str_cat("output must be kImages, kFloatImages or kLatents, got ", static_cast<int>(output)));
    // Custom schedules: one value per step; timesteps within int64 truncation's reach.
    auto check_schedule = [&](const std::vector<double>& values, const char* name, double max, const char* range) {
        if (values.empty()) return;
        if (static_cast<int64_t>(values.size()) != steps)
            throw InputError(str_cat("custom ", name, ": one per step, so steps must be ", values.size(), ", got ", steps));
        for (double v : values)
            if (!(std::isfinite(v) && v >= 0 && v <= max))
                throw InputError(str_cat("custom ", name, " must be finite numbers ", range, ", got ", v));
    };
    check_schedule(timesteps, "timesteps", 1e9, "in [0, 1e9]");
    check_schedule(sigmas, "sigmas", std::numeric_limits<double>::max(), ">= 0");
    if (!latents.empty() || !latents_shape.empty())
        check_given_values(latents, latents_shape, 4, "latents", "[images, channels, height, width]");
    for (auto [values, shape, name] : {std::tuple(&prompt_embeds, &prompt_embeds_shape, "prompt_embeds"),
                                       std::tuple(&negative_prompt_embeds, &negative_prompt_embeds_shape,
                                                  "negative_prompt_embeds")}) {
        if (values->empty() && shape->empty()) continue;
        check_given_values(*values, *shape, 3, name, "[prompts, rows, channels]");
        if ((*shape)[0] != num_prompts())
            throw InputError(
                str_cat(name, ": ", (*shape)[0], " prompts' embeddings for ", num_prompts(), " prompt(s)"));
    }
    if (crop_top < 0 || crop_left < 0 || crop_top > 1000000 || crop_left > 1000000)
        throw InputError(str_cat("crops_coords_top_left must be in [0, 1e6], got (", crop_top, ", ", crop_left, ")"));
    if (!(first_block_cache >= 0 && std::isfinite(first_block_cache)))
        throw InputError(str_cat("first_block_cache must be a finite threshold >= 0 (0: off), got ", first_block_cache));
    ar.validate();
    if (timestep_label != "0.39" && timestep_label != "0.40")
        throw InputError(str_cat("timestep_label must be '0.39' or '0.40', got '", timestep_label, "'"));
    if (!images.empty()) {
        if (static_cast<int64_t>(images.size()) != num_prompts())
            throw InputError(str_cat("image-to-image needs one list of condition images per prompt: ", num_prompts(),
                                     " prompt(s), ", images.size(), " list(s)"));
        for (size_t i = 0; i < images.size(); ++i) {
            if (images[i].empty()) throw InputError(str_cat("prompt ", i, " has no condition image"));
            if (images[i].size() != images[0].size())
                throw InputError("every prompt needs the same number of condition images");
            for (size_t j = 0; j < images[i].size(); ++j) images[i][j].validate(str_cat("condition image ", j, " of prompt ", i));
        }
    }
}

std::string GenerateRequest::to_string() const {
    std::ostringstream os;
    os << "size=" << width << "x" << height << " steps=" << steps << " guidance=" << guidance << " seed=" << seed
       << " images_per_prompt=" << images_per_prompt << " ar=" << (ar.do_sample ? "sample" : "greedy");
    auto opt = [](const auto& v) { return v ? str_cat(*v) : std::string("checkpoint"); };
    if (ar.do_sample)
        os << "(temperature=" << opt(ar.temperature) << " top_p=" << opt(ar.top_p) << " top_k=" << opt(ar.top_k) << ")";
    os << " timestep_label=" << timestep_label;
    if (first_block_cache > 0) os << " first_block_cache=" << first_block_cache;
    if (output == Output::kFloatImages) os << " output=float_images";
    if (output == Output::kLatents) os << " output=latents";
    if (!timesteps.empty()) os << " timesteps=custom";
    if (!sigmas.empty()) os << " sigmas=custom";
    if (!latents.empty()) os << " latents=given";
    if (!prompt_embeds.empty()) os << " prompt_embeds=" << c10::IntArrayRef(prompt_embeds_shape);
    if (!negative_prompt_embeds.empty())
        os << " negative_prompt_embeds=" << c10::IntArrayRef(negative_prompt_embeds_shape);
    if (crop_top || crop_left) os << " crop=(" << crop_top << ", " << crop_left << ")";
    if (!images.empty()) os << " condition_images=" << images[0].size();
    return os.str();
}

namespace {

std::string gib(double bytes) { return str_cat(static_cast<int64_t>(bytes / (1 << 30) * 10 + 0.5) / 10.0, " GiB"); }

// The largest activations a request makes, in bytes, as a floor (weights excluded): the VAE
// decode at full resolution (a conv's input and output plus a group-norm temporary, in the
// widest full-resolution channel count) and one DiT block over the whole sequence (q, k, v,
// attention output and the 4x MLP hidden, for both CFG branches).
double activation_estimate(const Model::Impl& m, const GenerateRequest& r) {
    const double images = static_cast<double>(r.num_prompts() * r.images_per_prompt);
    const double pixels = static_cast<double>(r.height) * static_cast<double>(r.width);
    const auto& vc = m.vae->config;
    const double vae_bytes = static_cast<double>(at::elementSize(m.home("vae")->dtype()));
    const double vae = images * static_cast<double>(vc.block_out_channels.front()) * pixels * vae_bytes * 3;
    const auto& dc = m.transformer->config;
    const double cell = static_cast<double>(m.patch_cell());
    const double seq = pixels / (cell * cell) + static_cast<double>(r.max_sequence_length);
    const double dit_bytes = static_cast<double>(at::elementSize(m.home("transformer")->dtype()));
    const double dit = 2 * images * seq * static_cast<double>(dc.inner_dim()) * dit_bytes * 8;
    return std::max(vae, dit);
}

}  // namespace

void Model::validate(const GenerateRequest& r) const {
    r.validate();
    const Impl& m = *impl_;
    const int64_t cell = m.patch_cell();
    // Sizes the model can take, before anything large is allocated. The AR model writes one
    // token per 32x32 pixels (plus a preview grid) inside its trained context.
    const auto grid = PromptProcessor::target_grid(r.height, r.width);
    const int64_t grid_tokens = grid[0] * grid[1] + (r.images.empty() ? grid[2] * grid[3] : 0);
    const int64_t context = m.ar->config.text.max_position_embeddings;
    if (grid_tokens >= context)
        throw InputError(str_cat(r.width, "x", r.height, " needs ", grid_tokens, " image tokens, more than the AR model's ",
                                 context, "-token context (max_position_embeddings)"));
    // On the host, the activations must fit the memory there is: a clear error within
    // milliseconds instead of an out-of-memory kill minutes later.
    bool on_host = false;
    for (const auto& [folder, home] : m.residency) on_host = on_host || home->device().is_cpu();
    const double need = activation_estimate(m, r);
    if (const auto avail = detail::available_host_bytes(); on_host && avail && need > static_cast<double>(*avail))
        throw InputError(str_cat(r.num_prompts() * r.images_per_prompt, " image(s) of ", r.width,
                                 "x", r.height, " need at least ", gib(need), " of working memory; ", gib(*avail),
                                 " is available on this machine"));
    if (!r.latents.empty()) {
        const int64_t s = m.vae->config.scale_factor();
        const std::vector<int64_t> want = {r.num_prompts() * r.images_per_prompt,
                                           m.transformer->config.in_channels, r.height / s, r.width / s};
        if (r.latents_shape != want)
            throw InputError(str_cat("latents: this request needs shape ", c10::IntArrayRef(want),
                                     " (images, channels, height / ", s, ", width / ", s, "), got ",
                                     c10::IntArrayRef(r.latents_shape)));
    }
    for (const auto* shape : {&r.prompt_embeds_shape, &r.negative_prompt_embeds_shape})
        if (!shape->empty() && (*shape)[2] != m.transformer->config.text_embed_dim)
            throw InputError(str_cat(shape == &r.prompt_embeds_shape ? "prompt_embeds" : "negative_prompt_embeds",
                                     ": this checkpoint's glyph embeddings have ", m.transformer->config.text_embed_dim,
                                     " channels (the DiT's text_embed_dim), got ", (*shape)[2]));
    // Condition images, before the vision encoder sees them: the decoder encodes each at its
    // size floored to the patch cell, and that patch grid must be the AR token grid (the
    // smart_resize size / patch) doubled; it is from a short side of 512 up to a long side of
    // 2048. The reference fails on the other sizes too.
    for (size_t b = 0; b < r.images.size(); ++b) {
        for (size_t k = 0; k < r.images[b].size(); ++k) {
            const Image& img = r.images[b][k];
            const std::string what = str_cat("condition image ", k, " of prompt ", b, " (", img.height, "x", img.width, ")");
            ImageSize resized;
            try {
                resized = m.preprocessor.resized({img.height, img.width});
            } catch (const InputError& e) {
                throw InputError(str_cat(what, ": ", e.what()));
            }
            const int64_t gh = resized.height / m.preprocessor.patch_size, gw = resized.width / m.preprocessor.patch_size;
            if (2 * gh != img.height / cell || 2 * gw != img.width / cell)
                throw InputError(str_cat(what, " does not fit: its ", gh, "x", gw, " token grid, doubled, must equal its ",
                                         img.height / cell, "x", img.width / cell, " latent patch grid; GLM-Image "
                                         "needs condition images with the short side >= 512 and the long side <= 2048"));
        }
    }
}

}  // namespace glmimage
