#include "models/vae/config.h"

#include "core/check.h"
#include "io/json_config.h"

namespace glmimage {

using detail::str_cat;

VAEConfig VAEConfig::from_file(const std::string& path) {
    auto j = io::JsonConfig::load(path);
    VAEConfig c;
    c.in_channels = j.get_int("in_channels");
    c.out_channels = j.get_int("out_channels");
    c.latent_channels = j.get_int("latent_channels");
    c.block_out_channels = j.get_int_list("block_out_channels");
    c.layers_per_block = j.get_int("layers_per_block", 1);
    c.norm_num_groups = j.get_int("norm_num_groups", 32);
    c.use_quant_conv = j.get_bool("use_quant_conv", true);
    c.use_post_quant_conv = j.get_bool("use_post_quant_conv", true);
    c.mid_block_add_attention = j.get_bool("mid_block_add_attention", true);
    // GLM-Image's pipeline indexes latents_mean/latents_std unconditionally.
    c.latents_mean = j.get_double_list("latents_mean");
    c.latents_std = j.get_double_list("latents_std");

    const std::string act = j.get_string("act_fn", "silu");
    if (act != "silu") throw UnsupportedError(str_cat(path, ": act_fn '", act, "' (only silu is implemented)"));
    auto down = j.get_string_list("down_block_types");
    auto up = j.get_string_list("up_block_types");
    for (const auto& t : down)
        if (t != "DownEncoderBlock2D") throw UnsupportedError(str_cat(path, ": down block type '", t, "'"));
    for (const auto& t : up)
        if (t != "UpDecoderBlock2D") throw UnsupportedError(str_cat(path, ": up block type '", t, "'"));
    if (c.block_out_channels.empty() || down.size() != c.block_out_channels.size() ||
        up.size() != c.block_out_channels.size())
        throw ConfigError(str_cat(path, ": down_block_types, up_block_types and block_out_channels must have the ",
                                  "same non-zero length, got ", down.size(), ", ", up.size(), ", ",
                                  c.block_out_channels.size()));
    for (auto ch : c.block_out_channels)
        if (ch <= 0 || ch % c.norm_num_groups != 0)
            throw ConfigError(str_cat(path, ": block_out_channels entry ", ch,
                                      " is not a positive multiple of norm_num_groups ", c.norm_num_groups));
    if (c.layers_per_block <= 0 || c.latent_channels <= 0 || c.in_channels <= 0 || c.out_channels <= 0)
        throw ConfigError(str_cat(path, ": channel counts and layers_per_block must be positive"));
    if (static_cast<int64_t>(c.latents_mean.size()) != c.latent_channels ||
        static_cast<int64_t>(c.latents_std.size()) != c.latent_channels)
        throw ConfigError(str_cat(path, ": latents_mean and latents_std need ", c.latent_channels,
                                  " values, got ", c.latents_mean.size(), " and ", c.latents_std.size()));
    return c;
}

std::string VAEConfig::to_string() const {
    std::string ch;
    for (size_t i = 0; i < block_out_channels.size(); ++i) {
        if (i) ch += ',';
        ch += std::to_string(block_out_channels[i]);
    }
    return str_cat("VAE: channels (", ch, "), ", layers_per_block, " layers per block, latent ", latent_channels,
                   ", groups ", norm_num_groups, ", quant_conv ", use_quant_conv, ", post_quant_conv ",
                   use_post_quant_conv, ", mid attention ", mid_block_add_attention, ", scale factor ",
                   scale_factor());
}

}  // namespace glmimage
