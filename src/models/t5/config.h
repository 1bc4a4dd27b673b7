// T5EncoderModel configuration (text_encoder/config.json): the Glyph-ByT5 encoder.
#pragma once

#include <cstdint>
#include <string>

namespace glmimage {

struct T5Config {
    int64_t vocab_size = 384;
    int64_t d_model = 1472;
    int64_t d_kv = 64;
    int64_t d_ff = 3584;
    int64_t num_heads = 6;
    int64_t num_layers = 12;
    int64_t relative_attention_num_buckets = 32;
    int64_t relative_attention_max_distance = 128;
    double layer_norm_epsilon = 1e-6;
    bool gated = true;                // "gated-gelu": wi_0 / wi_1; "relu": wi
    std::string feed_forward_proj = "gated-gelu";

    int64_t inner_dim() const { return num_heads * d_kv; }

    static T5Config from_file(const std::string& path);
    std::string to_string() const;
};

}  // namespace glmimage
