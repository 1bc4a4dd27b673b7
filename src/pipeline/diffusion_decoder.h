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

// What one call needs besides the request's settings.
struct DecoderRuntime {
    // Run the conditional and unconditional passes as one forward (LoadOptions::cfg_passes
    // "joint"; the DiT's text groups). Unset ("auto"): yes on a CUDA device, where it halves the
    // weight reads and kernel launches of a step; no on the CPU, which keeps the reference's two
    // passes: there oneDNN may compute the doubled row count with other kernels (bf16 images 8-9
    // levels from diffusers' at 256x256, small preset), and the joint forward gained little (one
    // real-width DiT block, bf16, 2 threads: 0.209 against 0.230 s at 256x256, the same time at
    // 512x512 and 1024x1024).
    std::optional<bool> batch_cfg;
    std::function<void(int64_t step, int64_t total)> on_step;  // after each denoising step
    const std::atomic<bool>* cancel = nullptr;                 // checked before each step
};

// How a call's CFG passes run, by the rule of DecoderRuntime::batch_cfg: "joint" (one forward),
// "apart" (two, as the reference) or "none" (guidance <= 1: one conditional pass).
const char* cfg_passes(const DecoderRuntime& runtime, const at::Device& device, double guidance);

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

// prior_token_ids: [B, (H/16) * (W/16)] int64 (the AR main grid upsampled 2x, row-major), one row
// per prompt of settings.prompts. conditions: empty (text-to-image) or one list per prompt (the
// decoder's copies of the condition images; settings.images is not read). settings must have
// passed GenerateRequest::validate. Returns [B * n, H, W, 3] uint8 RGB on the CPU. InputError for
// tensors that do not fit, CancelledError when cancelled.
at::Tensor run_diffusion_decoder(const DiffusionDecoderModels& m, const at::Tensor& prior_token_ids,
                                 const std::vector<std::vector<ConditionImage>>& conditions,
                                 const GenerateRequest& settings, const DecoderRuntime& runtime = {});

}  // namespace glmimage
