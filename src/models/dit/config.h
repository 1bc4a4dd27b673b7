// GlmImageTransformer2DModel configuration (transformer/config.json).
#pragma once

#include <cstdint>
#include <string>

namespace glmimage {

struct DiTConfig {
    int64_t patch_size = 2;
    int64_t in_channels = 16;
    int64_t out_channels = 16;
    int64_t num_layers = 30;
    int64_t attention_head_dim = 128;
    int64_t num_attention_heads = 32;
    int64_t text_embed_dim = 1472;  // width of the glyph (T5) encoder output
    int64_t time_embed_dim = 512;
    int64_t condition_dim = 256;     // sinusoid width per size/crop scalar
    int64_t prior_vq_quantizer_codebook_size = 16384;

    int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }

    // Every key is required: diffusers' save_pretrained writes them all, and their
    // class defaults are stale (64 x 40 heads), so a missing key means a broken file.
    static DiTConfig from_file(const std::string& path);
    std::string to_string() const;
};

}  // namespace glmimage
