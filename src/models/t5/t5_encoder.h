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
    std::shared_ptr<RMSNorm> attn_norm;  // layer.0.layer_norm
    std::shared_ptr<Linear> q, k, v, o;  // layer.0.SelfAttention.*
    std::shared_ptr<Embedding> relative_attention_bias;  // block 0 only; shared by all blocks
    std::shared_ptr<RMSNorm> ff_norm;    // layer.1.layer_norm
    std::shared_ptr<Linear> wi_0, wi_1, wi, wo;  // layer.1.DenseReluDense.* (wi_0/wi_1 gated, wi plain)
};

class T5Encoder : public ParamModule {
  public:
    T5Encoder(const T5Config& config, at::TensorOptions options);

    T5Config config;
    std::shared_ptr<Embedding> shared;
    std::vector<std::shared_ptr<T5Block>> blocks;  // encoder.block.N
    std::shared_ptr<RMSNorm> final_layer_norm;     // encoder.final_layer_norm
};

}  // namespace glmimage
