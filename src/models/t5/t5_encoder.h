// T5EncoderModel (text_encoder/): the Glyph-ByT5 encoder. Module tree named exactly like
// text_encoder/model.safetensors.
#pragma once

#include <memory>
#include <vector>

#include "layers/linear.h"
#include "layers/norms.h"
#include "models/t5/config.h"

namespace glmimage {

class T5Block : public ParamModule {
  public:
    T5Block(const T5Config& c, bool has_relative_bias, at::TensorOptions options);
    // One encoder layer: h + SelfAttention(RMSNorm(h)), then h + FF(RMSNorm(h)).
    // `bias` is the additive attention bias (position bias + padding mask), (B|1, H, L, L).
    at::Tensor forward(const at::Tensor& h, const at::Tensor& bias) const;

    std::shared_ptr<RMSNorm> attn_norm;  // layer.0.layer_norm
    std::shared_ptr<Linear> q, k, v, o;  // layer.0.SelfAttention.*
    std::shared_ptr<Embedding> relative_attention_bias;  // block 0 only; shared by all blocks
    std::shared_ptr<RMSNorm> ff_norm;    // layer.1.layer_norm
    std::shared_ptr<Linear> wi_0, wi_1, wi, wo;  // layer.1.DenseReluDense.* (wi_0/wi_1 gated, wi plain)
    int64_t num_heads, d_kv;
    bool gated;
};

class T5Encoder : public ParamModule {
  public:
    T5Encoder(const T5Config& config, at::TensorOptions options);

    // last_hidden_state (B, L, d_model) in the encoder dtype. input_ids: (B, L) integer ids in
    // [0, vocab_size); attention_mask: (B, L), nonzero = attend (undefined = all ones).
    // Throws InputError for bad shapes or ids.
    at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) const;

    // Bidirectional T5 relative-position bucket of rel = key_pos - query_pos (int64 tensor in,
    // int64 out), with the log branch evaluated in float32 as transformers does.
    static at::Tensor relative_position_bucket(const at::Tensor& rel, int64_t num_buckets, int64_t max_distance);
    // Block 0's position bias for a length-L sequence: (1, num_heads, L, L), encoder dtype.
    at::Tensor position_bias(int64_t length) const;

    T5Config config;
    std::shared_ptr<Embedding> shared;
    std::vector<std::shared_ptr<T5Block>> blocks;  // encoder.block.N
    std::shared_ptr<RMSNorm> final_layer_norm;     // encoder.final_layer_norm
};

}  // namespace glmimage
