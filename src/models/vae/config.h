// AutoencoderKL configuration (vae/config.json), as GLM-Image uses it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glmimage {

struct VAEConfig {
    int64_t in_channels = 3;
    int64_t out_channels = 3;
    int64_t latent_channels = 16;
    std::vector<int64_t> block_out_channels;
    int64_t layers_per_block = 1;  // diffusers' default is 1; CogView4-like checkpoints use 3
    int64_t norm_num_groups = 32;
    bool use_quant_conv = true;
    bool use_post_quant_conv = true;
    bool mid_block_add_attention = true;
    std::vector<double> latents_mean;  // per latent channel; GLM-Image un-normalizes with these
    std::vector<double> latents_std;

    // 2^(number of blocks - 1): pixels per latent cell.
    int64_t scale_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }

    static VAEConfig from_file(const std::string& path);
    std::string to_string() const;
};

}  // namespace glmimage
