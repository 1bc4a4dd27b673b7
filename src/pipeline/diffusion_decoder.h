// The diffusion decoder loop (GlmImagePipeline.__call__ after the AR stage): glyph embeddings,
// seeded latents, the condition-image KV cache, the flow-matching Euler loop with classifier-free
// guidance, VAE decode and postprocessing. Usable on its own with prior tokens from anywhere,
// as diffusers allows with `prior_token_ids=`. Each weighted component is in use (and, when
// staged, on its device) only during its part of the loop.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "glmimage/glmimage.h"
#include "schedulers/flow_match_euler.h"

namespace glmimage {

class GlmImageTransformer;
class T5Encoder;
class AutoencoderKL;
class ByT5Tokenizer;
class ComponentResidency;

// One condition image for image-to-image.
struct ConditionImage {
    at::Tensor pixels;     // [H, W, 3] uint8 RGB; H and W multiples of vae_scale_factor * patch_size (16)
    at::Tensor prior_ids;  // [(H/16) * (W/16)] int64: the image's AR tokens, upsampled 2x (diffusers'
                           // prior_token_image_ids for this image)
};

// InputError naming `what` unless every value is finite: values from the caller (the request's
// latents and glyph embeddings, a step callback's latents). Defined with the request's rules
// (request.cpp).
void check_finite_values(const std::vector<float>& values, const char* what);

// What one call needs besides the request's settings.
struct DecoderRuntime {
    // Run the conditional and unconditional passes as one forward (LoadOptions::cfg_passes
    // "joint"; the DiT's text groups). Unset ("auto"): joint where the DiT's products are float32
    // GEMMs (cfg_passes_joint_by_default), apart elsewhere.
    std::optional<bool> batch_cfg;
    std::function<void(int64_t step, int64_t total)> on_step;  // after each denoising step
    const std::atomic<bool>* cancel = nullptr;                 // checked before each step
    // After each denoising step (before on_step): the latents, which it may change or stop at
    // (Session::generate's on_step_end).
    DenoiseStepCallback on_step_end;
    // Out, where set: the DiT passes run (2 a step with guidance, 1 without; on_step_end may turn
    // it off and on again: DenoiseStep::guidance).
    int64_t* dit_passes = nullptr;
    // Out, where set: per CFG pass (the conditional first), per step, whether the first-block
    // cache (GenerateRequest::first_block_cache) ran the DiT's first block alone; empty when it
    // is off, and each pass's list empty for a DiT of one block (nothing after it to skip).
    std::vector<std::vector<bool>>* first_block_cache_skips = nullptr;
};

// Whether "auto" runs the CFG passes as one forward for a DiT computing in `dtype` on `device`:
// - a CUDA device: yes; it halves the weight reads and kernel launches of a step;
// - the CPU, where the products are float32 GEMMs (float32; bf16 on a CPU that computes bf16
//   products in float32) that give a row the same bits whatever the call's other rows
//   (kernels::products_keep_row_bits, probed: MKL's sgemm on an AVX2 EPYC): yes. Every product of
//   the joint forward then has at least the image tokens' rows (256 at 256x256; from
//   kernels::kRowBitsMinRows up the bits are the separate passes'), and the text's feed-forward
//   takes the rules of DiTBlock::feed_forward: the same images as apart. It saves a step's second
//   reading (and, in bf16, widening) of every block weight: small preset, 256x256, 2 threads,
//   AVX2 EPYC, this change alone: fp32 130 -> 128 ms a step, bf16 165 -> 140;
// - the CPU with oneDNN's bf16 kernels (and float16): no. Where they keep a row's bits too (an
//   AVX-512 EPYC without AMX) the images would be the same, but with nothing to widen the joint
//   forward gains little and loses at the real widths: one real-width block, 2 threads, a step
//   2.38-2.53 s joint against 2.27-2.29 s apart at 512x512 (its doubled activations outgrow the
//   cache), the same at 256x256, 2-4 % faster on the small preset at 256x256. Where they do not
//   (an AVX-512 Xeon with AMX), the doubled rows moved bf16 images 8-9 levels from diffusers' at
//   256x256 (small preset). The text rows' feed-forward joins the image rows' call wherever the
//   probe holds (DiTBlock::feed_forward), in either way of running the passes.
bool cfg_passes_joint_by_default(const at::Device& device, at::ScalarType dtype);

// How a call's CFG passes run, by the rule of DecoderRuntime::batch_cfg: "joint" (one forward),
// "apart" (two, as the reference) or "none" (guidance <= 1: one conditional pass); `device` and
// `dtype` are the DiT's.
const char* cfg_passes(const DecoderRuntime& runtime, const at::Device& device, at::ScalarType dtype, double guidance);

// The components the decoder runs on (owned elsewhere, e.g. by Model::Impl).
struct DiffusionDecoderModels {
    const GlmImageTransformer* transformer = nullptr;
    const T5Encoder* text_encoder = nullptr;
    const AutoencoderKL* vae = nullptr;
    const ByT5Tokenizer* glyph_tokenizer = nullptr;
    const FlowMatchEulerScheduler* scheduler = nullptr;
    // Where each weighted component lives; null: always in place (a module tree built by a test).
    const ComponentResidency* transformer_home = nullptr;
    const ComponentResidency* text_encoder_home = nullptr;
    const ComponentResidency* vae_home = nullptr;

    // The DiT's compute device and dtype (the pipeline dtype of latents and embeddings).
    at::Device device() const;
    at::ScalarType dtype() const;
};

// Glyph embeddings of a batch of prompts, as encode_prompt builds them: per prompt the T5 rows of
// its quoted texts (mask-selected, concatenated), left-padded with zero rows to the longest
// prompt. Returns [B, Lmax, text_embed_dim] in the transformer's dtype, on its device.
at::Tensor glyph_embeddings(const DiffusionDecoderModels& m, const std::vector<std::string>& prompts,
                            int64_t max_sequence_length);
// The unconditional pass's glyph embeddings, as encode_prompt builds them from the empty negative
// prompt: the glyph encoder's row for no text, [batch, 1, text_embed_dim] in the transformer's
// dtype, on its device.
at::Tensor negative_glyph_embeddings(const DiffusionDecoderModels& m, int64_t batch);

// prior_token_ids: [B, (H/16) * (W/16)] int64 (the AR main grid upsampled 2x, row-major), one row
// per prompt of settings.prompts. conditions: empty (text-to-image) or one list per prompt (the
// decoder's copies of the condition images; settings.images is not read). settings must have
// passed GenerateRequest::validate. Returns, on the CPU, as settings.output asks: [B * n, H, W, 3]
// uint8 RGB (kImages), the same float32 in [0, 1] (kFloatImages), or the denoised float32 latents
// [B * n, C, H / s, W / s] (kLatents: the VAE does not run). InputError for tensors that do not
// fit, CancelledError when cancelled.
at::Tensor run_diffusion_decoder(const DiffusionDecoderModels& m, const at::Tensor& prior_token_ids,
                                 const std::vector<std::vector<ConditionImage>>& conditions,
                                 const GenerateRequest& settings, const DecoderRuntime& runtime = {});

}  // namespace glmimage
