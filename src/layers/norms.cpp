#include "layers/norms.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/Generator.h>

#include <algorithm>

#include "layers/large_activations.h"

namespace glmimage {

LayerNorm::LayerNorm(int64_t dim_, double eps_, at::TensorOptions options)
    : ParamModule(std::move(options)), dim(dim_), eps(eps_) {
    param(weight, "weight", {dim});
    param(bias, "bias", {dim});
}

at::Tensor LayerNorm::forward(const at::Tensor& x) const { return at::layer_norm(x, {dim}, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t dim, double eps_, at::TensorOptions options) : ParamModule(std::move(options)), eps(eps_) {
    param(weight, "weight", {dim});
}

at::Tensor RMSNorm::forward(const at::Tensor& x) const {
    auto xf = x.to(at::kFloat);
    auto normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return weight * normed.to(x.scalar_type());
}

GroupNorm::GroupNorm(int64_t groups_, int64_t channels, double eps_, at::TensorOptions options)
    : ParamModule(std::move(options)), groups(groups_), eps(eps_) {
    param(weight, "weight", {channels});
    param(bias, "bias", {channels});
}

namespace {

// LibTorch's group norm computes each (image, group) from that group's elements alone, so a few
// groups of one image, normalized as a group norm of their own, give the same rows as the whole;
// written back over their input, the output needs no second tensor of the input's size (1 GiB at
// the VAE's last 512-channel norm at 1024², bf16). Whether the bits are the same is LibTorch's
// business, so it is checked once per dtype, on a small random batch of two, before it is relied on.

// x normalized in place, `per_band` groups of one image at a time.
void group_norm_in_bands(at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias, double eps,
                         int64_t per_band) {
    const int64_t per_group = x.size(1) / groups;
    for (int64_t n = 0; n < x.size(0); ++n) {
        auto image = x.narrow(0, n, 1);
        for (int64_t g0 = 0; g0 < groups; g0 += per_band) {
            const int64_t g = std::min(per_band, groups - g0), c0 = g0 * per_group, c = g * per_group;
            auto slice = image.narrow(1, c0, c);  // contiguous: whole channels of one image
            slice.copy_(at::group_norm(slice, g, weight.narrow(0, c0, c), bias.narrow(0, c0, c), eps));
        }
    }
}

bool group_bands_give_same_bits(at::ScalarType dtype) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(20261205);
    const auto o = at::TensorOptions().dtype(at::kFloat);
    const auto x = (at::randn({2, 64, 9, 11}, gen, o) * 3 + 1).to(dtype);
    const auto w = at::randn({64}, gen, o).to(dtype), b = at::randn({64}, gen, o).to(dtype);
    auto banded = x.clone();
    group_norm_in_bands(banded, 16, w, b, 1e-6, 3);
    return at::equal(banded, at::group_norm(x, 16, w, b, 1e-6));
}

}  // namespace

bool GroupNorm::works_in_place_on(const at::Tensor& x) const {
    return large_activations::is_large_cpu_activation(x) && x.dim() >= 2 && x.is_contiguous() &&
           x.scalar_type() == weight.scalar_type() &&
           large_activations::once_per_dtype<group_bands_give_same_bits>(x.scalar_type());
}

at::Tensor GroupNorm::forward(at::Tensor x) const {
    if (!large_activations::is_sole_reference(x) || !works_in_place_on(x))
        return at::group_norm(x, groups, weight, bias, eps);
    // A few groups' worth of output at a time; at least a group per thread, since LibTorch spreads
    // one call over its (image, group) pairs.
    const int64_t group_bytes = x.numel() / (x.size(0) * groups) * static_cast<int64_t>(x.element_size());
    const int64_t per_band = std::clamp<int64_t>(
        std::max<int64_t>(at::get_num_threads(), large_activations::kBandBytes / group_bytes), 1, groups);
    group_norm_in_bands(x, groups, weight, bias, eps, per_band);
    return x;
}

Embedding::Embedding(int64_t num, int64_t dim, at::TensorOptions options) : ParamModule(std::move(options)) {
    param(weight, "weight", {num, dim});
}

}  // namespace glmimage
