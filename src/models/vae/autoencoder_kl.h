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
    // (shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))))))) / 1. This and the other stages of
    // the VAE take their input by value and let go of it once read: an input handed over with
    // std::move is freed then, so that the widest activations are not held two or three at once.
    at::Tensor forward(at::Tensor x) const;
    std::shared_ptr<GroupNorm> norm1, norm2;
    std::shared_ptr<Conv2d> conv1, conv2;
    std::shared_ptr<Conv2d> conv_shortcut;  // only when in != out
};

// Single-head spatial self-attention of the mid block.
class VAEAttention : public ParamModule {
  public:
    VAEAttention(int64_t channels, int64_t groups, at::TensorOptions options);
    // x + to_out(softmax(q k^T / sqrt(C)) v) over the H*W positions of GN(x).
    at::Tensor forward(const at::Tensor& x) const;
    std::shared_ptr<GroupNorm> group_norm;
    std::shared_ptr<Linear> to_q, to_k, to_v, to_out;
};

class VAEMidBlock : public ParamModule {
  public:
    VAEMidBlock(int64_t channels, int64_t groups, bool attention, at::TensorOptions options);
    at::Tensor forward(at::Tensor x) const;
    std::shared_ptr<VAEResnetBlock> resnet0, resnet1;
    std::shared_ptr<VAEAttention> attention;  // null unless mid_block_add_attention
};

// One DownEncoderBlock2D (resnets + optional downsampler) or UpDecoderBlock2D (resnets +
// optional upsampler).
class VAEBlock : public ParamModule {
  public:
    VAEBlock(int64_t in, int64_t out, int64_t n_resnets, int64_t groups, bool resample, bool up,
             at::TensorOptions options);
    // Resnets, then (down) zero-pad right/bottom by one + stride-2 conv, or (up) nearest x2 +
    // conv, when the block resamples.
    at::Tensor forward(at::Tensor x) const;
    std::vector<std::shared_ptr<VAEResnetBlock>> resnets;
    std::shared_ptr<Conv2d> resample_conv;  // downsamplers.0.conv or upsamplers.0.conv
    bool up;
};

class VAEEncoder : public ParamModule {
  public:
    VAEEncoder(const VAEConfig& c, at::TensorOptions options);
    // (B, in_channels, H, W) -> (B, 2 * latent_channels, H / f, W / f): mean and log-variance.
    at::Tensor forward(at::Tensor x) const;
    std::shared_ptr<Conv2d> conv_in, conv_out;
    std::vector<std::shared_ptr<VAEBlock>> down_blocks;
    std::shared_ptr<VAEMidBlock> mid_block;
    std::shared_ptr<GroupNorm> conv_norm_out;
};

class VAEDecoder : public ParamModule {
  public:
    VAEDecoder(const VAEConfig& c, at::TensorOptions options);
    // (B, latent_channels, h, w) -> (B, out_channels, h * f, w * f).
    at::Tensor forward(at::Tensor z) const;
    std::shared_ptr<Conv2d> conv_in, conv_out;
    std::shared_ptr<VAEMidBlock> mid_block;
    std::vector<std::shared_ptr<VAEBlock>> up_blocks;
    std::shared_ptr<GroupNorm> conv_norm_out;
};

class AutoencoderKL : public ParamModule {
  public:
    AutoencoderKL(const VAEConfig& config, at::TensorOptions options);

    // diffusers' AutoencoderKL.decode(z).sample: post_quant_conv (if any) then the decoder.
    // z: (B, latent_channels, h, w), cast to the VAE dtype and device. InputError on bad shapes.
    at::Tensor decode(const at::Tensor& z) const;
    // diffusers' AutoencoderKL.encode(x).latent_dist.mean: encoder, quant_conv (if any), the first
    // latent_channels channels. x: (B, in_channels, H, W) in [-1, 1].
    at::Tensor encode(const at::Tensor& x) const;

    // GLM-Image's latent (un)normalization with the config's per-channel latents_mean/std, in
    // the dtype of z: denormalize = z * std + mean (before decode), normalize = (z - mean) / std
    // (after encode).
    at::Tensor denormalize_latents(const at::Tensor& z) const;
    at::Tensor normalize_latents(const at::Tensor& z) const;
    // The pipeline's two uses: decode(denormalize(latents)) and normalize(encode(images)).
    // decode_latents casts the latents to the VAE dtype before denormalizing, as the pipeline does.
    at::Tensor decode_latents(const at::Tensor& latents) const;
    at::Tensor encode_latents(const at::Tensor& images) const { return normalize_latents(encode(images)); }

    // The tensor on the VAE's device in its dtype.
    at::Tensor to_vae(const at::Tensor& x) const;
    at::ScalarType dtype() const;

    VAEConfig config;
    std::shared_ptr<VAEEncoder> encoder;
    std::shared_ptr<VAEDecoder> decoder;
    std::shared_ptr<Conv2d> quant_conv, post_quant_conv;  // null when disabled in the config
};

}  // namespace glmimage
