#include "models/vae/autoencoder_kl.h"

#include <cmath>

#include "core/check.h"
#include "kernels/attention.h"

namespace glmimage {

using detail::str_cat;

namespace {
constexpr double kGroupNormEps = 1e-6;  // diffusers' VAE blocks use 1e-6 everywhere

// InputError unless x is a non-empty floating (B, channels, H, W) tensor.
void check_nchw(const char* what, const at::Tensor& x, int64_t channels) {
    if (!x.defined()) throw InputError(str_cat("vae ", what, ": no tensor given"));
    if (x.dim() != 4)
        throw InputError(str_cat("vae ", what, ": expected a 4-D (batch, ", channels, ", height, width) tensor, got shape ",
                                 x.sizes()));
    if (x.size(1) != channels)
        throw InputError(str_cat("vae ", what, ": expected ", channels, " channels, got shape ", x.sizes()));
    if (x.numel() == 0) throw InputError(str_cat("vae ", what, ": empty tensor of shape ", x.sizes()));
    if (!at::isFloatingType(x.scalar_type()))
        throw InputError(str_cat("vae ", what, ": expected a floating tensor, got ", x.scalar_type()));
}
}  // namespace

VAEResnetBlock::VAEResnetBlock(int64_t in, int64_t out, int64_t groups, at::TensorOptions o) : ParamModule(o) {
    norm1 = child("norm1", std::make_shared<GroupNorm>(groups, in, kGroupNormEps, o));
    conv1 = child("conv1", std::make_shared<Conv2d>(in, out, 3, 1, 1, o));
    norm2 = child("norm2", std::make_shared<GroupNorm>(groups, out, kGroupNormEps, o));
    conv2 = child("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1, o));
    if (in != out) conv_shortcut = child("conv_shortcut", std::make_shared<Conv2d>(in, out, 1, 1, 0, o));
}

at::Tensor VAEResnetBlock::forward(at::Tensor x) const {
    // The shortcut first, so that x can be handed to the first norm (normalized in place where it
    // is large and nothing else holds it: the shortcut is then a tensor of its own); the SiLUs in
    // place, and each norm's and convolution's input handed over. The same ops on the same values
    // as the reference; what it changes is which tensors are held together (at 1024², 1 GiB each at
    // the first resnet after the last upsample).
    const auto shortcut = conv_shortcut ? conv_shortcut->forward(x) : x;
    auto h = norm1->forward(std::move(x));
    at::silu_(h);
    h = conv1->forward(std::move(h));
    h = norm2->forward(std::move(h));
    at::silu_(h);
    h = conv2->forward(std::move(h));  // dropout: identity at inference
    // (shortcut + h) / output_scale_factor, which is 1 (a division by 1 changes no value)
    return h.add_(shortcut);
}

VAEAttention::VAEAttention(int64_t ch, int64_t groups, at::TensorOptions o) : ParamModule(o) {
    group_norm = child("group_norm", std::make_shared<GroupNorm>(groups, ch, kGroupNormEps, o));
    to_q = child("to_q", std::make_shared<Linear>(ch, ch, true, o));
    to_k = child("to_k", std::make_shared<Linear>(ch, ch, true, o));
    to_v = child("to_v", std::make_shared<Linear>(ch, ch, true, o));
    auto out = child("to_out", std::make_shared<ModuleScope>(o));
    to_out = out->add("0", std::make_shared<Linear>(ch, ch, true, o));
}

at::Tensor VAEAttention::forward(const at::Tensor& x) const {
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    // Group norm on (B, C, HW), then tokens (B, HW, C); one head of width C.
    auto t = group_norm->forward(x.view({B, C, H * W})).transpose(1, 2);
    auto q = to_q->forward(t).view({B, -1, 1, C}).transpose(1, 2);
    auto k = to_k->forward(t).view({B, -1, 1, C}).transpose(1, 2);
    auto v = to_v->forward(t).view({B, -1, 1, C}).transpose(1, 2);
    auto a = kernels::attention(q, k, v);  // one head: scale 1/sqrt(C)
    a = a.transpose(1, 2).reshape({B, -1, C}).to(q.scalar_type());
    a = to_out->forward(a);  // to_out.1 is dropout
    a = a.transpose(-1, -2).reshape({B, C, H, W});
    return (a + x) / 1.0;  // residual, rescale_output_factor 1
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

at::Tensor VAEMidBlock::forward(at::Tensor x) const {
    x = resnet0->forward(std::move(x));
    if (attention) x = attention->forward(x);
    return resnet1->forward(std::move(x));
}

VAEBlock::VAEBlock(int64_t in, int64_t out, int64_t n, int64_t groups, bool resample, bool up_, at::TensorOptions o)
    : ParamModule(o), up(up_) {
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

at::Tensor VAEBlock::forward(at::Tensor x) const {
    for (const auto& r : resnets) x = r->forward(std::move(x));
    if (!resample_conv) return x;
    at::Tensor resampled;
    if (up) {
        // Upsampled in the layout the convolution reads (nearest x2 of NHWC is NHWC), rather than
        // the 4x larger result copied to it.
        resampled = at::upsample_nearest2d(resample_conv->to_input_layout(x), std::nullopt,
                                           std::vector<double>{2.0, 2.0});
    } else {
        resampled = at::constant_pad_nd(x, {0, 1, 0, 1}, 0);
    }
    x.reset();
    return resample_conv->forward(std::move(resampled));
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

at::Tensor VAEEncoder::forward(at::Tensor x) const {
    x = conv_in->forward(std::move(x));
    for (const auto& b : down_blocks) x = b->forward(std::move(x));
    x = mid_block->forward(std::move(x));
    x = conv_norm_out->forward(std::move(x));
    at::silu_(x);
    return conv_out->forward(std::move(x));
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

at::Tensor VAEDecoder::forward(at::Tensor z) const {
    auto h = conv_in->forward(std::move(z));
    h = mid_block->forward(std::move(h));
    for (const auto& b : up_blocks) h = b->forward(std::move(h));
    h = conv_norm_out->forward(std::move(h));
    at::silu_(h);
    return conv_out->forward(std::move(h));
}

AutoencoderKL::AutoencoderKL(const VAEConfig& c, at::TensorOptions o) : ParamModule(o), config(c) {
    encoder = child("encoder", std::make_shared<VAEEncoder>(c, o));
    decoder = child("decoder", std::make_shared<VAEDecoder>(c, o));
    const int64_t z = c.latent_channels;
    if (c.use_quant_conv) quant_conv = child("quant_conv", std::make_shared<Conv2d>(2 * z, 2 * z, 1, 1, 0, o));
    if (c.use_post_quant_conv) post_quant_conv = child("post_quant_conv", std::make_shared<Conv2d>(z, z, 1, 1, 0, o));
}

at::ScalarType AutoencoderKL::dtype() const { return decoder->conv_in->weight.scalar_type(); }

at::Tensor AutoencoderKL::to_vae(const at::Tensor& x) const {
    return x.to(decoder->conv_in->weight.device(), dtype());
}

at::Tensor AutoencoderKL::decode(const at::Tensor& z_in) const {
    check_nchw("decode", z_in, config.latent_channels);
    auto z = to_vae(z_in);
    if (post_quant_conv) z = post_quant_conv->forward(std::move(z));
    return decoder->forward(std::move(z));
}

at::Tensor AutoencoderKL::encode(const at::Tensor& x_in) const {
    check_nchw("encode", x_in, config.in_channels);
    auto h = encoder->forward(to_vae(x_in));
    if (quant_conv) h = quant_conv->forward(h);
    // DiagonalGaussianDistribution: mean = first half of the channels (the mode).
    return h.narrow(1, 0, config.latent_channels);
}

at::Tensor AutoencoderKL::decode_latents(const at::Tensor& latents) const {
    check_nchw("decode", latents, config.latent_channels);
    return decode(denormalize_latents(to_vae(latents)));
}

namespace {
// The config list as the pipeline builds it: torch.tensor(list) (float32), then the dtype of z.
at::Tensor channel_stats(const std::vector<double>& values, const at::Tensor& like) {
    auto t = at::tensor(values, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
    return t.to(like.device(), like.scalar_type()).view({1, -1, 1, 1});
}
}  // namespace

at::Tensor AutoencoderKL::denormalize_latents(const at::Tensor& z) const {
    check_nchw("latents", z, config.latent_channels);
    return z * channel_stats(config.latents_std, z) + channel_stats(config.latents_mean, z);
}

at::Tensor AutoencoderKL::normalize_latents(const at::Tensor& z) const {
    check_nchw("latents", z, config.latent_channels);
    return (z - channel_stats(config.latents_mean, z)) / channel_stats(config.latents_std, z);
}

}  // namespace glmimage
