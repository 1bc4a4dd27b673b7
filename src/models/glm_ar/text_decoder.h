// Forward of the GLM-4 text decoder of GLM-Image (GlmImageTextModel + lm_head) over a
// preallocated KV cache. The weights live in GlmArModel (shared module tree); this file
// only holds the computation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "models/glm_ar/ar_model.h"

namespace glmimage {

// Per layer K and V after rotary, [B, kv_heads, capacity, head_dim], allocated once for the
// whole generation so a decode step writes in place instead of growing by concatenation.
struct KVCache {
    std::vector<at::Tensor> k, v;
    at::Tensor key_valid;  // [B, capacity] bool: false on left-padding slots
    bool has_padding = false;
    int64_t length = 0;    // tokens written so far
    int64_t capacity = 0;

    void allocate(int64_t layers, int64_t batch, int64_t kv_heads, int64_t capacity, int64_t head_dim,
                  at::TensorOptions options);
    // Marks the padding slots of the prompt (attention_mask [B, L], 0 = padding).
    void set_prompt_mask(const at::Tensor& attention_mask);
};

class GlmTextDecoder {
  public:
    explicit GlmTextDecoder(const GlmArModel& model);

    KVCache make_cache(int64_t batch, int64_t capacity) const;

    // Runs S new tokens (ids [B, S]) at cache positions [cache.length, cache.length + S),
    // with rotary tables cos/sin [B, S, rotary_dim] in the model dtype. Appends to the cache and
    // returns the final-normed hidden states [B, S, hidden]. With `layer_outputs`, each
    // decoder layer's output is appended to it (before the final norm).
    at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& cos, const at::Tensor& sin, KVCache& cache,
                       std::vector<at::Tensor>* layer_outputs = nullptr) const;

    // One decode token with every shape fixed and every position read from the device, so a
    // CUDA graph can capture it once and replay it at each step: x [B, 1, hidden] is the
    // embedded token, slot [1] (long, on the device) the cache slot it is written to, key_mask
    // [B, 1, 1, capacity] (bool) the keys it may see, cos/sin [B, 1, rotary_dim]. Attends over
    // the whole capacity under the mask; cache.length is left as it is (the host no longer
    // knows it). Returns the final-normed hidden state [B, 1, hidden].
    at::Tensor forward_at_slot(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                               const at::Tensor& slot, const at::Tensor& key_mask, KVCache& cache) const;

    at::Tensor embed(const at::Tensor& input_ids) const {
        return model_.language_model->embed_tokens->forward(input_ids);
    }

    at::Tensor logits(const at::Tensor& hidden) const { return model_.lm_head->forward(hidden); }
    // From the final norm, which is never quantized (the Linear weights may be int8).
    at::ScalarType dtype() const { return model_.language_model->norm->weight.scalar_type(); }
    at::Device device() const { return model_.language_model->norm->weight.device(); }
    const GlmTextConfig& config() const { return model_.config.text; }

  private:
    // A layer's input or output: the hidden states, whether the fused kernels run for them
    // (kernels/decoder_fused.h), and then, where their norms need them stored
    // (kernels::norm_needs_squares), their float32 squares for the next RMSNorm (else undefined).
    struct Hidden {
        at::Tensor x, squares;
        bool fused = false;
    };
    Hidden start(const at::Tensor& x) const;
    at::Tensor final_norm(const Hidden& h) const;

    // slot undefined: the S tokens go to cache slots [cache.length, +S) and attend to the
    // written prefix; slot defined (S = 1): see forward_at_slot. cos/sin [B, S, rotary_dim].
    // A bool mask is replaced by the additive one SDPA makes of it (kernels::sdpa_additive_mask),
    // so that the layers after the first do not convert it again.
    Hidden layer_forward(const GlmDecoderLayer& layer, size_t index, const Hidden& in, const at::Tensor& cos,
                         const at::Tensor& sin, at::Tensor& mask, const at::Tensor& slot, KVCache& cache) const;

    const GlmArModel& model_;
    int64_t heads_, kv_heads_, head_dim_, rotary_dim_;
};

}  // namespace glmimage
