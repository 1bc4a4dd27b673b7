// AutoencoderKL (vae/): encoder for condition images, decoder for the output image.
// Module tree named exactly like vae/diffusion_pytorch_model.safetensors.
#pragma once

#include <memory>
#include <vector>

#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/norms.h"
#include "models/vae/config.h"

namespace glmimage {

class VAEResnetBlock : public ParamModule {
  public:
    VAEResnetBlock(int64_t in, int64_t out, int64_t groups, at::TensorOptions options);
    std::shared_ptr<GroupNorm> norm1, norm2;
    std::shared_ptr<Conv2d> conv1, conv2;
    std::shared_ptr<Conv2d> conv_shortcut;  // only when in != out
};

// Single-head spatial self-attention of the mid block.
class VAEAttention : public ParamModule {
  public:
    VAEAttention(int64_t channels, int64_t groups, at::TensorOptions options);
    std::shared_ptr<GroupNorm> group_norm;
    std::shared_ptr<Linear> to_q, to_k, to_v, to_out;
};

class VAEMidBlock : public ParamModule {
  public:
    VAEMidBlock(int64_t channels, int64_t groups, bool attention, at::TensorOptions options);
    std::shared_ptr<VAEResnetBlock> resnet0, resnet1;
    std::shared_ptr<VAEAttention> attention;  // null unless mid_block_add_attention
};

// One DownEncoderBlock2D (resnets + optional downsampler) or UpDecoderBlock2D (resnets +
// optional upsampler).
class VAEBlock : public ParamModule {
  public:
    VAEBlock(int64_t in, int64_t out, int64_t n_resnets, int64_t groups, bool resample, bool up,
             at::TensorOptions options);
    std::vector<std::shared_ptr<VAEResnetBlock>> resnets;
    std::shared_ptr<Conv2d> resample_conv;  // downsamplers.0.conv or upsamplers.0.conv
};

class VAEEncoder : public ParamModule {
  public:
    VAEEncoder(const VAEConfig& c, at::TensorOptions options);
    std::shared_ptr<Conv2d> conv_in, conv_out;
    std::vector<std::shared_ptr<VAEBlock>> down_blocks;
    std::shared_ptr<VAEMidBlock> mid_block;
    std::shared_ptr<GroupNorm> conv_norm_out;
};

class VAEDecoder : public ParamModule {
  public:
    VAEDecoder(const VAEConfig& c, at::TensorOptions options);
    std::shared_ptr<Conv2d> conv_in, conv_out;
    std::shared_ptr<VAEMidBlock> mid_block;
    std::vector<std::shared_ptr<VAEBlock>> up_blocks;
    std::shared_ptr<GroupNorm> conv_norm_out;
};

class AutoencoderKL : public ParamModule {
  public:
    AutoencoderKL(const VAEConfig& config, at::TensorOptions options);

    VAEConfig config;
    std::shared_ptr<VAEEncoder> encoder;
    std::shared_ptr<VAEDecoder> decoder;
    std::shared_ptr<Conv2d> quant_conv, post_quant_conv;  // null when disabled in the config
};

}  // namespace glmimage
