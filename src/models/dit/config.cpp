#include "models/dit/config.h"

#include "core/check.h"
#include "io/json_config.h"

namespace glmimage {

DiTConfig DiTConfig::from_file(const std::string& path) {
    auto j = io::JsonConfig::load(path);
    DiTConfig c;
    c.patch_size = j.get_int("patch_size");
    c.in_channels = j.get_int("in_channels");
    c.out_channels = j.get_int("out_channels");
    c.num_layers = j.get_int("num_layers");
    c.attention_head_dim = j.get_int("attention_head_dim");
    c.num_attention_heads = j.get_int("num_attention_heads");
    c.text_embed_dim = j.get_int("text_embed_dim");
    c.time_embed_dim = j.get_int("time_embed_dim");
    c.condition_dim = j.get_int("condition_dim");
    c.prior_vq_quantizer_codebook_size = j.get_int("prior_vq_quantizer_codebook_size");
    for (int64_t v : {c.patch_size, c.in_channels, c.out_channels, c.num_layers, c.attention_head_dim,
                      c.num_attention_heads, c.text_embed_dim, c.time_embed_dim, c.condition_dim,
                      c.prior_vq_quantizer_codebook_size}) {
        if (v <= 0) throw ConfigError(detail::str_cat(path, ": sizes must be positive, got ", v));
    }
    // RoPE splits each head into row and column halves, each rotated as pairs.
    if (c.attention_head_dim % 4 != 0)
        throw ConfigError(detail::str_cat(path, ": key 'attention_head_dim': expected a multiple of 4, got ",
                                          c.attention_head_dim));
    if (c.time_embed_dim % 2 != 0 || c.condition_dim % 2 != 0)
        throw ConfigError(detail::str_cat(path, ": time_embed_dim and condition_dim must be even"));
    return c;
}

std::string DiTConfig::to_string() const {
    return detail::str_cat("DiT: ", num_layers, " layers, ", num_attention_heads, "x", attention_head_dim,
                           " heads (inner ", inner_dim(), "), patch ", patch_size, ", channels ", in_channels,
                           "->", out_channels, ", text ", text_embed_dim, ", time ", time_embed_dim,
                           ", condition ", condition_dim, ", codebook ", prior_vq_quantizer_codebook_size);
}

}  // namespace glmimage
