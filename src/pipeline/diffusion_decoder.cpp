#include "pipeline/diffusion_decoder.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cmath>

#include "core/check.h"
#include "core/cpu_block_cache.h"
#include "kernels/cpu_products.h"
#include "models/dit/kv_cache.h"
#include "models/dit/transformer.h"
#include "models/t5/t5_encoder.h"
#include "models/vae/autoencoder_kl.h"
#include "models/vae/postprocess.h"
#include "pipeline/residency.h"
#include "schedulers/flow_match_euler_step.h"
#include "tokenizers/glyph_text.h"

namespace glmimage {

using detail::str_cat;

at::Device DiffusionDecoderModels::device() const {
    return transformer_home ? transformer_home->device() : transformer->device();
}

at::ScalarType DiffusionDecoderModels::dtype() const {
    return transformer_home ? transformer_home->dtype() : transformer->dtype();
}

namespace {

at::Tensor long_tensor(const std::vector<int64_t>& v, int64_t rows, int64_t cols) {
    return at::tensor(v, at::kLong).view({rows, cols});
}

// T5 rows of one prompt's glyph texts: [Ltot, E] (mask-selected, string after string), on the
// text encoder's device. The encoder is in use.
at::Tensor prompt_glyph_rows(const DiffusionDecoderModels& m, const std::string& prompt, int64_t max_len) {
    GlyphTokens g = glyph_tokens(prompt, *m.glyph_tokenizer, max_len);
    auto ids = long_tensor(g.input_ids, g.n_texts, g.length);
    auto mask = long_tensor(g.attention_mask, g.n_texts, g.length);
    auto hidden = m.text_encoder->forward(ids, mask);                  // [N, L, E]
    return hidden.index({mask.to(hidden.device(), at::kBool)});  // row-major == diffusers' hidden[mask.bool()]
}

// The unconditional glyph input: the empty text, i.e. a lone eos id. The encoder is in use.
at::Tensor empty_glyph_rows(const DiffusionDecoderModels& m) {
    auto ids = at::full({1, 1}, m.glyph_tokenizer->eos_id(), at::kLong);
    return m.text_encoder->forward(ids, at::ones_like(ids))[0];  // [1, E]
}

// The tensor contract of run_diffusion_decoder (the request's own rules are GenerateRequest::validate's).
void check_inputs(const DiffusionDecoderModels& m, const at::Tensor& prior,
                  const std::vector<std::vector<ConditionImage>>& conditions, const GenerateRequest& r) {
    const int64_t cell = m.vae->config.scale_factor() * m.transformer->config.patch_size;
    const int64_t n_tokens = (r.height / cell) * (r.width / cell);
    const int64_t b = r.num_prompts();
    if (!prior.defined() || prior.dim() != 2 || prior.size(0) != b || prior.size(1) != n_tokens)
        throw InputError(str_cat("prior_token_ids must have shape [", b, ", ", n_tokens, "] for ", b, " prompt(s) at ",
                                 r.height, "x", r.width, " (the AR grid upsampled 2x), got ",
                                 prior.defined() ? str_cat(prior.sizes()) : std::string("nothing")));
    if (prior.scalar_type() != at::kLong) throw InputError("prior_token_ids must be int64");
    const int64_t codebook = m.transformer->config.prior_vq_quantizer_codebook_size;
    if (prior.numel() && (prior.min().item<int64_t>() < 0 || prior.max().item<int64_t>() >= codebook))
        throw InputError(str_cat("prior_token_ids must lie in [0, ", codebook, ")"));
    if (!conditions.empty() && static_cast<int64_t>(conditions.size()) != b)
        throw InputError(str_cat("condition images: expected one list per prompt (", b, "), got ", conditions.size()));
    for (const auto& list : conditions) {
        if (list.empty()) throw InputError("condition images: every prompt needs at least one image in image-to-image");
        for (const auto& c : list) {
            const auto& px = c.pixels;
            if (!px.defined() || px.dim() != 3 || px.size(2) != 3 || px.scalar_type() != at::kByte)
                throw InputError("condition image: expected [H, W, 3] uint8 RGB pixels");
            if (px.size(0) == 0 || px.size(1) == 0 || px.size(0) % cell != 0 || px.size(1) % cell != 0)
                throw InputError(str_cat("condition image of ", px.size(0), "x", px.size(1), ": sides must be positive ",
                                         "multiples of ", cell));
            const int64_t want = (px.size(0) / cell) * (px.size(1) / cell);
            if (!c.prior_ids.defined() || c.prior_ids.numel() != want || c.prior_ids.scalar_type() != at::kLong)
                throw InputError(str_cat("condition image of ", px.size(0), "x", px.size(1), " needs ", want,
                                         " int64 prior ids (its AR grid upsampled 2x)"));
            if (c.prior_ids.min().item<int64_t>() < 0 || c.prior_ids.max().item<int64_t>() >= codebook)
                throw InputError(str_cat("condition prior ids must lie in [0, ", codebook, ")"));
        }
    }
}

// Normalized VAE latents of every condition image, prompt-major (GlmImagePipeline step 6, first
// half), on the DiT's device in its dtype. The VAE is in use.
std::vector<std::vector<at::Tensor>> encode_conditions(const DiffusionDecoderModels& m,
                                                       const std::vector<std::vector<ConditionImage>>& conditions) {
    const auto device = m.device();
    const auto dtype = m.dtype();
    std::vector<std::vector<at::Tensor>> out;
    for (const auto& list : conditions) {
        out.emplace_back();
        for (const auto& c : list) {
            // VaeImageProcessor.preprocess: /255 in float32, NCHW, x2-1; then the prompt dtype.
            auto x = c.pixels.to(at::kFloat).div(255.0).permute({2, 0, 1}).unsqueeze(0);
            x = (x * 2.0 - 1.0).to(dtype);
            auto z = m.vae->encode(m.vae->to_vae(x)).to(dtype);
            out.back().push_back(m.vae->normalize_latents(z).to(device));
        }
    }
    return out;
}

// Writes every condition image of every prompt into the cache (step 6, second half). The DiT is in use.
void write_condition_cache(const DiffusionDecoderModels& m, const std::vector<std::vector<ConditionImage>>& conditions,
                           const std::vector<std::vector<at::Tensor>>& latents, DiTKVCache& cache) {
    const auto& dit = *m.transformer;
    const auto device = m.device();
    const auto fopts = at::TensorOptions().dtype(m.dtype()).device(device);
    cache.set_mode(DiTKVCache::Mode::kWrite);
    auto no_text = at::zeros({1, 0, dit.config.text_embed_dim}, fopts);
    for (size_t b = 0; b < conditions.size(); ++b) {
        for (size_t k = 0; k < conditions[b].size(); ++k) {
            const auto& c = conditions[b][k];
            auto ids = c.prior_ids.reshape({1, -1}).to(device);
            auto drop = at::zeros_like(ids, at::kBool);
            auto size = at::tensor({c.pixels.size(0), c.pixels.size(1)}, at::kLong).view({1, 2}).to(device);
            dit.forward(latents[b][k], no_text, ids, drop, at::zeros({1}, at::TensorOptions().device(device)), size,
                        at::zeros({1, 2}, at::TensorOptions().device(device)), &cache);
        }
        cache.next_sample();
    }
}

// A step's conditioning for a batch and its copy in one forward (both CFG passes): every row
// twice, the conditional copy first. The rows are the batch's own: the adaLN products run at the
// row count the separate passes give them.
DiTStepConditioning for_both_passes(const DiTStepConditioning& step) {
    const int64_t batch = step.temb().size(0);
    return step.rows(at::arange(batch, step.temb().options().dtype(at::kLong)).repeat({2}));  // on its device
}

// A caller's float32 values (the request's latents and glyph embeddings, a step callback's
// latents) as a tensor of `shape` on `device` in `dtype`: one copy from the vector.
at::Tensor caller_tensor(const std::vector<float>& values, at::IntArrayRef shape, const at::Device& device,
                         at::ScalarType dtype) {
    return at::from_blob(const_cast<float*>(values.data()), shape, at::kFloat)
        .to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
}

// The float32 latents after step i to the caller's on_step_end, and what it hands back (the
// same number of finite values) as the next step's latents, where they were; `stop` and
// `guidance` (DenoiseStep::guidance; above 1 only where `has_uncond`) as it set them.
at::Tensor hand_to_caller(const DenoiseStepCallback& on_step_end, const at::Tensor& latents, int64_t i,
                          const FlowMatchSchedule& schedule, bool has_uncond, bool& stop, double& guidance) {
    const at::Tensor host = latents.to(at::kCPU, at::kFloat).contiguous();
    DenoiseStep s;
    s.step = i;
    s.total = schedule.n_steps();
    s.sigma = schedule.sigmas[static_cast<size_t>(i)];
    s.timestep = schedule.timesteps[static_cast<size_t>(i)];
    s.shape = host.sizes().vec();
    s.latents.assign(host.data_ptr<float>(), host.data_ptr<float>() + host.numel());
    s.guidance = guidance;
    on_step_end(s);
    if (s.latents.size() != static_cast<size_t>(host.numel()))
        throw InputError(str_cat("the step-end callback handed back ", s.latents.size(), " latent values; the step's ",
                                 host.sizes(), " latents hold ", host.numel()));
    check_finite_values(s.latents, "the latents the step-end callback handed back");
    if (!std::isfinite(s.guidance))
        throw InputError(str_cat("the step-end callback set the guidance to ", s.guidance, ": it must be finite"));
    if (s.guidance > 1.0 && !has_uncond)
        throw InputError(str_cat("the step-end callback set the guidance to ", s.guidance,
                                 " in a call that started without guidance (at most 1): there are no unconditional "
                                 "embeddings to guide with; start the call with guidance above 1 and lower it"));
    stop = s.stop;
    guidance = s.guidance;
    return caller_tensor(s.latents, host.sizes(), latents.device(), latents.scalar_type());
}

}  // namespace

bool cfg_passes_joint_by_default(const at::Device& device, at::ScalarType dtype) {
    if (device.is_cuda()) return true;
    return kernels::product_compute_dtype(device, dtype) == at::kFloat &&
           kernels::products_keep_row_bits(device, dtype);
}

const char* cfg_passes(const DecoderRuntime& rt, const at::Device& device, at::ScalarType dtype, double guidance) {
    if (guidance <= 1.0) return "none";
    return rt.batch_cfg.value_or(cfg_passes_joint_by_default(device, dtype)) ? "joint" : "apart";
}

at::Tensor glyph_embeddings(const DiffusionDecoderModels& m, const std::vector<std::string>& prompts,
                            int64_t max_sequence_length) {
    auto in_use = use_component(m.text_encoder_home);
    std::vector<at::Tensor> rows;
    int64_t longest = 0;
    for (const auto& p : prompts) {
        rows.push_back(prompt_glyph_rows(m, p, max_sequence_length));
        longest = std::max(longest, rows.back().size(0));
    }
    // Left padding with zero rows; the DiT gets no mask, so these rows are real tokens, as in diffusers.
    for (auto& r : rows) r = at::constant_pad_nd(r, {0, 0, longest - r.size(0), 0}).unsqueeze(0);
    return at::cat(rows, 0).to(m.device(), m.dtype());
}

at::Tensor negative_glyph_embeddings(const DiffusionDecoderModels& m, int64_t batch) {
    auto in_use = use_component(m.text_encoder_home);
    return empty_glyph_rows(m).to(m.device(), m.dtype()).unsqueeze(0).expand({batch, 1, -1}).contiguous();
}

at::Tensor run_diffusion_decoder(const DiffusionDecoderModels& m, const at::Tensor& prior_token_ids,
                                 const std::vector<std::vector<ConditionImage>>& conditions,
                                 const GenerateRequest& o, const DecoderRuntime& rt) {
    GLMI_CHECK(m.transformer && m.text_encoder && m.vae && m.glyph_tokenizer && m.scheduler, "decoder models missing");
    GLMI_CHECK(o.num_prompts() > 0 && o.height % 32 == 0 && o.width % 32 == 0 && o.steps >= 1 &&
                   o.images_per_prompt >= 1,
               "the request was not validated: ", o.to_string());
    check_inputs(m, prior_token_ids, conditions, o);
    c10::InferenceMode guard;
    // Each stage's activations have their own sizes: the CPU blocks an earlier stage freed (the AR
    // stage's, the condition images' encoding, the denoising loop's) are released where the next
    // begins rather than held, unused, to the call's end.
    release_cached_cpu_blocks();
    const auto& dit = *m.transformer;
    const auto device = m.device();
    const auto dtype = m.dtype();  // the pipeline dtype: prompt embeddings, latents, sizes
    const auto fopts = at::TensorOptions().dtype(dtype).device(device);
    const int64_t n = o.images_per_prompt;
    const int64_t batch = o.num_prompts() * n;
    // The guidance rule (cfg_passes) decides both whether there is an unconditional pass and how it runs.
    const std::string passes = cfg_passes(rt, device, m.dtype(), o.guidance);
    const bool cfg = passes != "none";

    // Conditioning that does not change between steps, computed once. The text encoder is in
    // use for the glyph embeddings only, the VAE for the condition images, then the DiT.
    // The caller's (GenerateRequest::prompt_embeds / negative_prompt_embeds) where given.
    auto given = [&](const std::vector<float>& values, const std::vector<int64_t>& shape) {
        return caller_tensor(values, shape, device, dtype).repeat_interleave(n, 0);
    };
    auto prompt_embeds = o.prompt_embeds.empty()
                             ? glyph_embeddings(m, o.prompts, o.max_sequence_length).repeat_interleave(n, 0)
                             : given(o.prompt_embeds, o.prompt_embeds_shape);
    at::Tensor neg_embeds;
    if (cfg && !o.negative_prompt_embeds.empty()) {
        neg_embeds = given(o.negative_prompt_embeds, o.negative_prompt_embeds_shape);
    } else if (cfg) {
        neg_embeds = negative_glyph_embeddings(m, batch);
    }
    const bool i2i = !conditions.empty();
    std::vector<std::vector<at::Tensor>> condition_latents;
    if (i2i) {
        auto in_use = use_component(m.vae_home);
        CpuBlockCachePeakBound vae_blocks;  // the VAE's activations change size level by level
        condition_latents = encode_conditions(m, conditions);
    }

    at::Tensor latents;
    {
        auto in_use = use_component(m.transformer_home);
        auto text_c = dit.project_text(prompt_embeds);
        at::Tensor text_u = cfg ? dit.project_text(neg_embeds) : at::Tensor();
        auto prior = prior_token_ids.to(device).repeat_interleave(n, 0);
        auto prior_c = dit.project_prior(prior, at::zeros_like(prior, at::kBool), batch, prior.size(1));
        at::Tensor prior_u = cfg ? dit.project_prior(prior, at::ones_like(prior, at::kBool), batch, prior.size(1))
                                 : at::Tensor();
        const int64_t vae_scale = m.vae->config.scale_factor();
        const int64_t lh = o.height / vae_scale, lw = o.width / vae_scale;
        auto rope = dit.make_rope(lh, lw);
        // at::tensor cannot build half-precision tensors from a list directly: go through double
        // (exact for these integers, so the one rounding is torch.tensor(..., dtype)'s).
        auto pair = [&](int64_t a, int64_t b) {
            return at::tensor({static_cast<double>(a), static_cast<double>(b)}, at::kDouble)
                .to(fopts)
                .view({1, 2})
                .repeat({batch, 1});
        };
        auto target_size = pair(o.height, o.width);
        auto crop = pair(o.crop_top, o.crop_left);

        if (o.latents.empty()) {
            // Initial noise exactly as randn_tensor draws it: CPU generator, the prompt dtype.
            auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
            latents = at::randn({batch, dit.config.in_channels, lh, lw}, gen, at::TensorOptions().dtype(dtype))
                          .to(device);
        } else {
            // The caller's, in float32: diffusers keeps them in their dtype, and its first Euler
            // step widens them to float32 (exactly, from any dtype) before anything rounds them.
            GLMI_CHECK(o.latents_shape == std::vector<int64_t>({batch, dit.config.in_channels, lh, lw}),
                       "the request's latents were not validated against the model");
            latents = caller_tensor(o.latents, o.latents_shape, device, at::kFloat);
        }

        DiTKVCache cache(dit.config.num_layers);
        if (i2i) write_condition_cache(m, conditions, condition_latents, cache);
        condition_latents.clear();
        release_cached_cpu_blocks();  // the condition images' encoding and cache pass, if any

        FlowMatchScheduleOptions so;
        so.patch_size = dit.config.patch_size;
        so.vae_scale_factor = vae_scale;
        so.label = parse_timestep_label(o.timestep_label);
        if (!o.timesteps.empty()) so.timesteps = o.timesteps;
        if (!o.sigmas.empty()) so.sigmas = o.sigmas;
        const FlowMatchSchedule schedule = m.scheduler->schedule(o.steps, o.height, o.width, so);

        // Both CFG passes as one forward (two text groups) where that is the runtime's choice.
        const bool batched = passes == "joint";
        const at::Tensor prior_cu = batched ? at::cat({prior_c, prior_u}) : at::Tensor();
        // The first-block cache's state per CFG pass (conditional first), when the request asks for it.
        std::vector<FirstBlockCachePass> fbc;
        if (o.first_block_cache > 0) fbc.assign(cfg ? 2 : 1, FirstBlockCachePass(o.first_block_cache));
        auto fbc_pass = [&](size_t i) { return fbc.empty() ? nullptr : &fbc[i]; };
        int64_t passes_run = 0;
        double guidance = o.guidance;  // a step-end callback may change it for the steps after its own
        for (int64_t i = 0; i < schedule.n_steps(); ++i) {
            const bool guided = cfg && guidance > 1.0;  // this step runs the unconditional pass too
            if (rt.cancel && rt.cancel->load()) throw CancelledError(str_cat("cancelled at denoising step ", i));
            auto x = latents.to(dtype);
            auto label = at::full({batch}, schedule.labels[static_cast<size_t>(i)],
                                  at::TensorOptions().dtype(at::kFloat).device(device));
            // The timestep's conditioning once for both passes.
            const auto step = dit.condition_step(dit.embed_time(label, target_size, crop, batch));
            if (i2i) cache.set_mode(DiTKVCache::Mode::kRead);
            at::Tensor v;
            if (batched && guided) {
                GlmImageTransformer::FirstBlockCachePasses both;
                if (!fbc.empty()) both = {&fbc[0], &fbc[1]};
                auto out = dit.forward_projected(at::cat({x, x}), {text_c, text_u}, prior_cu, for_both_passes(step),
                                                 rope, i2i ? &cache : nullptr, both)
                               .to(at::kFloat);
                auto vc = out.narrow(0, 0, batch), vu = out.narrow(0, batch, batch);
                v = vu + guidance * (vc - vu);
            } else {
                auto vc = dit.forward_projected(x, text_c, prior_c, step, rope, i2i ? &cache : nullptr, fbc_pass(0))
                              .to(at::kFloat);
                if (guided) {
                    if (i2i) cache.set_mode(DiTKVCache::Mode::kSkip);
                    auto vu = dit.forward_projected(x, text_u, prior_u, step, rope, i2i ? &cache : nullptr,
                                                    fbc_pass(1))
                                  .to(at::kFloat);
                    v = vu + guidance * (vc - vu);
                } else {
                    v = vc;
                }
            }
            latents = flow_match_euler_step(schedule, i, latents, v);
            passes_run += guided ? 2 : 1;
            bool stop = false;
            if (rt.on_step_end) latents = hand_to_caller(rt.on_step_end, latents, i, schedule, cfg, stop, guidance);
            if (rt.on_step) rt.on_step(i + 1, schedule.n_steps());
            if (stop) break;
        }
        if (rt.dit_passes) *rt.dit_passes = passes_run;
        if (rt.first_block_cache_skips) {
            rt.first_block_cache_skips->clear();
            for (const auto& p : fbc) rt.first_block_cache_skips->push_back(p.skipped());
        }
    }
    release_cached_cpu_blocks();
    if (o.output == GenerateRequest::Output::kLatents) return latents.to(at::kCPU, at::kFloat).contiguous();
    auto in_use = use_component(m.vae_home);
    CpuBlockCachePeakBound vae_blocks;
    auto images = m.vae->decode_latents(latents);
    if (o.output == GenerateRequest::Output::kFloatImages) return postprocess_to_float(images);
    return postprocess_to_uint8(images);
}

}  // namespace glmimage
