#include "models/vae/autoencoder_kl.h"

namespace glmimage {

namespace {
constexpr double kGroupNormEps = 1e-6;  // diffusers' VAE blocks use 1e-6 everywhere
}

VAEResnetBlock::VAEResnetBlock(int64_t in, int64_t out, int64_t groups, at::TensorOptions o) : ParamModule(o) {
    norm1 = child("norm1", std::make_shared<GroupNorm>(groups, in, kGroupNormEps, o));
    conv1 = child("conv1", std::make_shared<Conv2d>(in, out, 3, 1, 1, o));
    norm2 = child("norm2", std::make_shared<GroupNorm>(groups, out, kGroupNormEps, o));
    conv2 = child("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1, o));
    if (in != out) conv_shortcut = child("conv_shortcut", std::make_shared<Conv2d>(in, out, 1, 1, 0, o));
}

VAEAttention::VAEAttention(int64_t ch, int64_t groups, at::TensorOptions o) : ParamModule(o) {
    group_norm = child("group_norm", std::make_shared<GroupNorm>(groups, ch, kGroupNormEps, o));
    to_q = child("to_q", std::make_shared<Linear>(ch, ch, true, o));
    to_k = child("to_k", std::make_shared<Linear>(ch, ch, true, o));
    to_v = child("to_v", std::make_shared<Linear>(ch, ch, true, o));
    auto out = child("to_out", std::make_shared<ModuleScope>(o));
    to_out = out->add("0", std::make_shared<Linear>(ch, ch, true, o));
}

VAEMidBlock::VAEMidBlock(int64_t ch, int64_t groups, bool attn, at::TensorOptions o) : ParamModule(o) {
    auto res = child("resnets", std::make_shared<ModuleScope>(o));
    resnet0 = res->add("0", std::make_shared<VAEResnetBlock>(ch, ch, groups, o));
    resnet1 = res->add("1", std::make_shared<VAEResnetBlock>(ch, ch, groups, o));
    if (attn) {
        auto a = child("attentions", std::make_shared<ModuleScope>(o));
        attention = a->add("0", std::make_shared<VAEAttention>(ch, groups, o));
    }
}

VAEBlock::VAEBlock(int64_t in, int64_t out, int64_t n, int64_t groups, bool resample, bool up, at::TensorOptions o)
    : ParamModule(o) {
    auto res = child("resnets", std::make_shared<ModuleScope>(o));
    for (int64_t j = 0; j < n; ++j)
        resnets.push_back(res->add(std::to_string(j), std::make_shared<VAEResnetBlock>(j == 0 ? in : out, out, groups, o)));
    if (resample) {
        auto s = child(up ? "upsamplers" : "downsamplers", std::make_shared<ModuleScope>(o));
        auto s0 = s->add("0", std::make_shared<ModuleScope>(o));
        // Downsampling pads right/bottom by one and convolves with stride 2, padding 0.
        resample_conv = s0->add("conv", up ? std::make_shared<Conv2d>(out, out, 3, 1, 1, o)
                                           : std::make_shared<Conv2d>(out, out, 3, 2, 0, o));
    }
}

VAEEncoder::VAEEncoder(const VAEConfig& c, at::TensorOptions o) : ParamModule(o) {
    const auto& ch = c.block_out_channels;
    const int64_t g = c.norm_num_groups;
    conv_in = child("conv_in", std::make_shared<Conv2d>(c.in_channels, ch[0], 3, 1, 1, o));
    auto blocks = child("down_blocks", std::make_shared<ModuleScope>(o));
    for (size_t i = 0; i < ch.size(); ++i) {
        const bool last = i + 1 == ch.size();
        down_blocks.push_back(blocks->add(std::to_string(i),
            std::make_shared<VAEBlock>(i == 0 ? ch[0] : ch[i - 1], ch[i], c.layers_per_block, g, !last, false, o)));
    }
    mid_block = child("mid_block", std::make_shared<VAEMidBlock>(ch.back(), g, c.mid_block_add_attention, o));
    conv_norm_out = child("conv_norm_out", std::make_shared<GroupNorm>(g, ch.back(), kGroupNormEps, o));
    conv_out = child("conv_out", std::make_shared<Conv2d>(ch.back(), 2 * c.latent_channels, 3, 1, 1, o));
}

VAEDecoder::VAEDecoder(const VAEConfig& c, at::TensorOptions o) : ParamModule(o) {
    std::vector<int64_t> rch(c.block_out_channels.rbegin(), c.block_out_channels.rend());
    const int64_t g = c.norm_num_groups;
    conv_in = child("conv_in", std::make_shared<Conv2d>(c.latent_channels, rch[0], 3, 1, 1, o));
    mid_block = child("mid_block", std::make_shared<VAEMidBlock>(rch[0], g, c.mid_block_add_attention, o));
    auto blocks = child("up_blocks", std::make_shared<ModuleScope>(o));
    for (size_t i = 0; i < rch.size(); ++i) {
        const bool last = i + 1 == rch.size();
        up_blocks.push_back(blocks->add(std::to_string(i),
            std::make_shared<VAEBlock>(i == 0 ? rch[0] : rch[i - 1], rch[i], c.layers_per_block + 1, g, !last, true, o)));
    }
    conv_norm_out = child("conv_norm_out", std::make_shared<GroupNorm>(g, rch.back(), kGroupNormEps, o));
    conv_out = child("conv_out", std::make_shared<Conv2d>(rch.back(), c.out_channels, 3, 1, 1, o));
}

AutoencoderKL::AutoencoderKL(const VAEConfig& c, at::TensorOptions o) : ParamModule(o), config(c) {
    encoder = child("encoder", std::make_shared<VAEEncoder>(c, o));
    decoder = child("decoder", std::make_shared<VAEDecoder>(c, o));
    const int64_t z = c.latent_channels;
    if (c.use_quant_conv) quant_conv = child("quant_conv", std::make_shared<Conv2d>(2 * z, 2 * z, 1, 1, 0, o));
    if (c.use_post_quant_conv) post_quant_conv = child("post_quant_conv", std::make_shared<Conv2d>(z, z, 1, 1, 0, o));
}

}  // namespace glmimage
