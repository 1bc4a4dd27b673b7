// Autoregressive generation of GLM-Image's visual tokens: prefill, then one token per step
// over a preallocated KV cache, with transformers' greedy / sampling rules and stop rules,
// and the diffusers pipeline's extraction of the main grid into the DiT prior ids.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "glmimage/glmimage.h"

#include "models/glm_ar/ar_model.h"
#include "models/glm_ar/mrope.h"
#include "models/glm_ar/text_decoder.h"

namespace glmimage {

// How decode steps run after the prefill.
enum class ArDecode {
    kAuto,    // kGraph where the device can capture CUDA graphs, else kEager
    kEager,   // each step over the cache written so far (shapes grow by one key per step)
    kStatic,  // the fixed-shape step (forward_at_slot: the whole cache under a mask, positions,
              // rotary rows and the codebook rule read from the device by step index, sampling
              // on the device), run eagerly: the same tokens as kEager
    kGraph,   // kStatic captured once per generation as a CUDA graph and replayed per token
};
// "auto", "eager", "static", "graph"; InputError otherwise.
ArDecode parse_ar_decode(const std::string& name);
const char* ar_decode_name(ArDecode mode);

struct ArGenerateOptions {
    // The request's settings (glmimage.h), every value set (ArSettings::with_defaults). Token
    // choice follows the reference's order: temperature -> top-k -> top-p -> softmax ->
    // multinomial; greedy is argmax.
    ArSettings sampling;
    uint64_t seed = 0;            // the reference seeds the global torch generator with this
    int64_t max_new_tokens = -1;  // -1: all target grids + 1 (the end marker), as diffusers computes
    bool record_logits = false;  // keep the fp32 logits of every step (parity tests)
    std::function<void(int64_t done, int64_t total)> on_token;  // after each generated token
    const std::atomic<bool>* cancel = nullptr;  // checked before each token; CancelledError
    ArDecode decode = ArDecode::kEager;  // kStatic / kGraph do not take forced_tokens
};

struct ArRequest {
    at::Tensor input_ids;       // [B, L]; i2i: image placeholders already replaced by VQ ids
    at::Tensor attention_mask;  // [B, L] with 0 on left padding, or undefined
    std::vector<GridThw> grids;              // per sample: source grids, then target grids
    std::vector<int64_t> images_per_sample;  // grids per sample; empty: all grids for every sample
    at::Tensor forced_tokens;   // optional [B, n]: feed these instead of the chosen tokens (parity)
};

struct ArResult {
    at::Tensor sequences;  // [B, L + n]: prompt then generated tokens (finished rows padded)
    at::Tensor generated;  // [B, n]
    at::Tensor prior_ids;  // [B, 4 * grid_h * grid_w]: main grid, nearest 2x upsampled
    int64_t grid_h = 0, grid_w = 0;  // main (large) grid in tokens
    int64_t grid_offset = 0;         // where the main grid starts among the generated tokens
    std::vector<at::Tensor> step_logits;  // fp32 [B, vision_vocab] per step, if recorded
    // The decode path that ran ("eager", "static", "graph"); with auto, a failed capture falls
    // back to "static" and says why here.
    std::string decode;
};

class ArGenerator {
  public:
    explicit ArGenerator(const GlmArModel& model);
    ArResult generate(const ArRequest& request, const ArGenerateOptions& options) const;

    const GlmTextDecoder& decoder() const { return decoder_; }
    const MropeRotary& rotary() const { return rotary_; }

  private:
    at::Tensor choose(at::Tensor scores, const ArSettings& s, at::Generator& gen) const;
    ArDecode resolve(ArDecode requested) const;

    const GlmArModel& model_;
    GlmTextDecoder decoder_;
    MropeRotary rotary_;
};

// Throws InputError unless every id is in [0, vocab_size) and no image placeholder is left.
void check_prompt_ids(const GlmArConfig& config, const at::Tensor& input_ids);

}  // namespace glmimage
