// GlmImageForConditionalGeneration configuration (vision_language_encoder/config.json):
// the GLM-4 text decoder, the ViT vision encoder and the VQ quantizer.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace glmimage {

struct GlmTextConfig {
    int64_t vocab_size = 168064;
    int64_t vision_vocab_size = 16512;  // lm_head rows: codebook + image markers
    int64_t hidden_size = 4096;
    int64_t intermediate_size = 13696;
    int64_t num_hidden_layers = 40;
    int64_t num_attention_heads = 32;
    int64_t num_key_value_heads = 2;
    int64_t head_dim = 128;
    int64_t max_position_embeddings = 131072;
    double rms_norm_eps = 1e-5;
    bool attention_bias = true;  // q, k, v only
    int64_t pad_token_id = 167841;
    int64_t eos_token_id = 16385;
    double rope_theta = 10000.0;
    double partial_rotary_factor = 1.0;  // transformers' default; the real config says 0.5
    std::array<int64_t, 3> mrope_section = {8, 12, 12};

    int64_t rotary_dim() const { return static_cast<int64_t>(head_dim * partial_rotary_factor); }
};

struct GlmVisionConfig {
    int64_t depth = 40;
    int64_t hidden_size = 1536;
    int64_t num_heads = 16;
    int64_t intermediate_size = 6144;
    int64_t in_channels = 3;
    int64_t image_size = 2048;
    int64_t patch_size = 16;
    double layer_norm_eps = 1e-6;
    bool attention_bias = true;
    int64_t spatial_merge_size = 1;

    int64_t head_dim() const { return hidden_size / num_heads; }
    int64_t num_positions() const { return (image_size / patch_size) * (image_size / patch_size); }
};

struct GlmVQConfig {
    int64_t embed_dim = 2048;
    int64_t num_embeddings = 16384;
    int64_t latent_channels = 1536;
};

struct GlmArConfig {
    GlmTextConfig text;
    GlmVisionConfig vision;
    GlmVQConfig vq;
    int64_t image_token_id = 167855;
    int64_t image_start_token_id = 16384;
    int64_t image_end_token_id = 16385;
    std::string dtype;  // "bfloat16" etc. as written by transformers; empty if absent

    static GlmArConfig from_file(const std::string& path);
    std::string to_string() const;
};

}  // namespace glmimage
