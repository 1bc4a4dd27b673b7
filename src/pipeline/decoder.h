// The diffusion decoder loop (GlmImagePipeline.__call__ after the AR stage): glyph embeddings,
// seeded latents, the condition-image KV cache, the flow-matching Euler loop with classifier-free
// guidance, VAE decode and postprocessing. Usable on its own with prior tokens from anywhere,
// as diffusers allows with `prior_token_ids=`.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "schedulers/flow_match_euler.h"

namespace glmimage {

class GlmImageTransformer;
class T5Encoder;
class AutoencoderKL;
class ByT5Tokenizer;

// One condition image for image-to-image.
struct ConditionImage {
    at::Tensor pixels;     // [H, W, 3] uint8 RGB; H and W multiples of vae_scale_factor * patch_size (16)
    at::Tensor prior_ids;  // [(H/16) * (W/16)] int64: the image's AR tokens, upsampled 2x (diffusers'
                           // prior_token_image_ids for this image)
};

struct DecodeOptions {
    int64_t height = 1024;             // pixels, a multiple of 32
    int64_t width = 1024;              // pixels, a multiple of 32
    int64_t steps = 50;                // denoising steps, >= 1
    double guidance = 1.5;             // classifier-free guidance scale; <= 1 disables the uncond pass
    uint64_t seed = 0;                 // seeds torch's CPU generator for the initial latents, as diffusers
    int64_t images_per_prompt = 1;     // latents per prompt (prompts are repeat-interleaved)
    int64_t max_sequence_length = 2048;  // glyph ByT5 ids per quoted string, eos included
    TimestepLabel label = TimestepLabel::kUnshifted;  // kUnshifted = diffusers <= 0.39 (the checkpoint's)
    // Run the conditional and unconditional passes as one batched forward when their text
    // lengths agree and no condition-image cache is involved (same result, fewer kernel calls).
    bool batch_cfg = true;
    std::function<void(int64_t step, int64_t total)> on_step;  // after each denoising step
    const std::atomic<bool>* cancel = nullptr;                 // checked before each step
};

// The components the decoder runs on (owned elsewhere, e.g. by Pipeline::Impl).
struct DecoderModels {
    const GlmImageTransformer* transformer = nullptr;
    const T5Encoder* text_encoder = nullptr;
    const AutoencoderKL* vae = nullptr;
    const ByT5Tokenizer* glyph_tokenizer = nullptr;
    const FlowMatchEulerScheduler* scheduler = nullptr;
};

// Glyph embeddings of a batch of prompts, as encode_prompt builds them: per prompt the T5 rows of
// its quoted texts (mask-selected, concatenated), left-padded with zero rows to the longest
// prompt. Returns [B, Lmax, text_embed_dim] in the transformer dtype.
at::Tensor glyph_embeddings(const DecoderModels& m, const std::vector<std::string>& prompts,
                            int64_t max_sequence_length);

// prior_token_ids: [B, (H/16) * (W/16)] int64 (the AR main grid upsampled 2x, row-major), one row
// per prompt. conditions: empty (text-to-image) or one list per prompt. Returns [B * n, H, W, 3]
// uint8 RGB on the CPU. InputError for inconsistent inputs, CancelledError when cancelled.
at::Tensor decode(const DecoderModels& m, const at::Tensor& prior_token_ids, const std::vector<std::string>& prompts,
                  const std::vector<std::vector<ConditionImage>>& conditions, const DecodeOptions& options);

}  // namespace glmimage
