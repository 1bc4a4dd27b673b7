#include "layers/conv2d.h"

#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>

#include "kernels/layout.h"

namespace glmimage {

namespace {

// LibTorch 2.13's bf16 convolution on the CPU (oneDNN) computes in NHWC whatever the input's layout,
// and turns an NCHW result back with a strided copy: a [1, 512, 256, 256] 3x3 512 -> 512 took 318 ms
// from NCHW, 128 from NHWC, and the copy was most of the difference. The same convolution on NHWC
// input gives the same bits there (checked for every VAE shape, bf16; not in float32, where the two
// layouts take different kernels). Whether that holds is LibTorch's and the CPU's business, so it
// is checked here once per dtype, on two small convolutions (3x3 and 1x1), before it is relied on;
// where the bits differ the convolution stays NCHW.
bool channels_last_gives_same_bits(at::ScalarType dtype) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(20261203);
    const auto o = at::TensorOptions().dtype(at::kFloat);
    auto same = [&](int64_t in, int64_t out, int64_t k, int64_t pad) {
        const auto x = at::randn({1, in, 12, 12}, gen, o).to(dtype);
        const auto w = (at::randn({out, in, k, k}, gen, o) * 0.05).to(dtype);
        const auto b = at::randn({out}, gen, o).to(dtype);
        const auto nchw = at::conv2d(x, w, b, {1, 1}, {pad, pad});
        const auto nhwc = at::conv2d(kernels::to_channels_last(x), w, b, {1, 1}, {pad, pad});
        return at::equal(nchw, nhwc.contiguous());
    };
    return same(64, 64, 3, 1) && same(64, 32, 1, 0);
}

bool conv_in_channels_last(const at::Tensor& x) {
    if (!x.is_cpu() || x.dim() != 4) return false;
    switch (x.scalar_type()) {
        case at::kBFloat16: {
            static const bool bf16 = channels_last_gives_same_bits(at::kBFloat16);
            return bf16;
        }
        case at::kHalf: {
            static const bool half = channels_last_gives_same_bits(at::kHalf);
            return half;
        }
        default: return false;  // float32: other kernels per layout here, and no copy to save
    }
}

}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride_, int64_t padding_, at::TensorOptions options)
    : ParamModule(std::move(options)), stride(stride_), padding(padding_) {
    param(weight, "weight", {out, in, kernel, kernel});
    param(bias, "bias", {out});
}

at::Tensor Conv2d::to_input_layout(const at::Tensor& x) const {
    return conv_in_channels_last(x) ? kernels::to_channels_last(x) : x;
}

at::Tensor Conv2d::forward(at::Tensor x) const {
    if (conv_in_channels_last(x)) {
        auto input = kernels::to_channels_last(x);
        x.reset();  // the NCHW input, freed here when the caller handed it over
        auto y = at::conv2d(input, weight, bias, {stride, stride}, {padding, padding});
        input.reset();  // before the NCHW copy of the output is made
        // NCHW out again: the group norms that read it sum in another order on NHWC input.
        return kernels::to_channels_first(y);
    }
    return at::conv2d(x, weight, bias, {stride, stride}, {padding, padding});
}

}  // namespace glmimage
