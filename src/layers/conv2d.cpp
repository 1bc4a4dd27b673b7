#include "layers/conv2d.h"

#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>

#include "kernels/cpu_products.h"
#include "kernels/layout.h"
#include "layers/large_activations.h"

namespace glmimage {

namespace {

using large_activations::once_per_dtype;

// LibTorch 2.13's bf16 convolution on the CPU (oneDNN) computes in NHWC whatever the input's layout,
// and turns an NCHW result back with a strided copy: a [1, 512, 256, 256] 3x3 512 -> 512 took 318 ms
// from NCHW, 128 from NHWC, and the copy was most of the difference. The same convolution on NHWC
// input gives the same bits there (checked for every VAE shape, bf16; not in float32, where the two
// layouts take different kernels). Whether that holds is LibTorch's and the CPU's business, so it
// is checked here once per dtype, on two small convolutions (3x3 and 1x1), before it is relied on;
// where the bits differ the convolution stays NCHW.
// Whether alt(x, w, b, pad) gives the bits of the NCHW convolution as kernels::conv2d computes it
// (LibTorch's, in float32 for bf16 where the CPU has no bf16 kernels), on two small random ones (3x3
// and 1x1) of `dtype` at height x width.
template <typename Alt>
bool gives_whole_conv_bits(at::ScalarType dtype, uint64_t seed, int64_t height, int64_t width, const Alt& alt) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const auto o = at::TensorOptions().dtype(at::kFloat);
    auto same = [&](int64_t in, int64_t out, int64_t k, int64_t pad) {
        const auto x = at::randn({1, in, height, width}, gen, o).to(dtype);
        const auto w = (at::randn({out, in, k, k}, gen, o) * 0.05).to(dtype);
        const auto b = at::randn({out}, gen, o).to(dtype);
        return at::equal(kernels::conv2d(x, w, b, 1, {pad, pad}), alt(x, w, b, pad).contiguous());
    };
    return same(64, 64, 3, 1) && same(64, 32, 1, 0);
}

bool channels_last_gives_same_bits(at::ScalarType dtype) {
    return gives_whole_conv_bits(dtype, 20261203, 12, 12, [](const auto& x, const auto& w, const auto& b, int64_t pad) {
        return kernels::conv2d(kernels::to_channels_last(x), w, b, 1, {pad, pad});
    });
}

bool conv_in_channels_last(const at::Tensor& x) {
    // computed in float32: other kernels per layout here, and no copy to save
    if (!x.is_cpu() || x.dim() != 4 || kernels::product_compute_dtype(x) == at::kFloat) return false;
    return once_per_dtype<channels_last_gives_same_bits>(x.scalar_type());
}

// LibTorch's CPU convolution copies an NCHW input into oneDNN's blocked layout for the call (seen on
// a 2-core EPYC, bf16 and float32: at the VAE's widest convolution, 512 channels at 1024², 1 GiB in
// bf16), so input, copy and output are held at once. Run in bands of output rows, only a band's
// input rows (with the kernel's halo) are copied at a time: the input, the output and a few bands'
// copies are held. And where the output has the input's shape and the input is handed over, the
// output is written into the input's own rows, so that only the input and a few bands are held. A
// band's output equals the same rows of the whole where the kernel computes each output pixel alike
// whatever the height (on that EPYC: the VAE's shapes in bf16, the tests' in float32); whether it
// does is LibTorch's and the CPU's business, so it is checked once per dtype, as the layout above,
// and otherwise the convolution runs whole.

// x convolved with a stride-1 kernel of odd size k = 2 * pad + 1 ('same' output size), in bands of
// `rows` (>= pad) output rows, each one's input rows zero-padded where they meet the image's edge;
// written into x itself where `into_x` (x's channels = the output's). Each band's output is written
// only once the next band has been convolved: that band's halo was the last read of the rows it
// overwrites, so x may be the output.
at::Tensor conv2d_in_row_bands(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t pad,
                               int64_t rows, bool into_x) {
    const int64_t height = x.size(2);
    auto out = into_x ? x : at::empty({x.size(0), w.size(0), height, x.size(3)}, x.options());
    const std::array<int64_t, 2> pad_w_only{0, pad};  // the rows' halo is in the band
    at::Tensor pending;                                // the last band's output rows
    int64_t pending_row = 0;
    for (int64_t r0 = 0; r0 < height; r0 += rows) {
        const int64_t r1 = std::min(height, r0 + rows);
        const int64_t lo = std::max<int64_t>(0, r0 - pad), hi = std::min(height, r1 + pad);
        auto band = x.narrow(2, lo, hi - lo);
        const int64_t top = pad - (r0 - lo), bottom = pad - (hi - r1);
        if (top > 0 || bottom > 0) band = at::constant_pad_nd(band, {0, 0, top, bottom}, 0);
        auto y = kernels::conv2d(band, w, b, 1, at::IntArrayRef(pad_w_only));
        band.reset();
        if (pending.defined()) out.narrow(2, pending_row, pending.size(2)).copy_(pending);
        pending = std::move(y);
        pending_row = r0;
    }
    out.narrow(2, pending_row, pending.size(2)).copy_(pending);
    return out;
}

// What a whole convolution of x holds beside x and its result, in bytes per element of x: oneDNN's
// copy of the input in its layout; computed in float32 (kernels/cpu_products.h), the widened input,
// oneDNN's copy of that and the float32 result (the VAE's convolutions keep the channel count).
int64_t whole_call_bytes_per_element(const at::Tensor& x) {
    const auto dt = kernels::product_compute_dtype(x);
    return dt == x.scalar_type() ? static_cast<int64_t>(x.element_size()) : 3 * at::elementSize(dt);
}

bool row_bands_give_same_bits(at::ScalarType dtype) {
    return gives_whole_conv_bits(dtype, 20261205, 20, 12, [](const auto& x, const auto& w, const auto& b, int64_t pad) {
        // into a copy of the input where the shapes allow, as forward does
        return conv2d_in_row_bands(x.clone(), w, b, pad, 6, w.size(0) == x.size(1));
    });
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
        auto y = kernels::conv2d(input, weight, bias, stride, {padding, padding});
        input.reset();  // before the NCHW copy of the output is made
        // NCHW out again: the group norms that read it sum in another order on NHWC input.
        return kernels::to_channels_first(y);
    }
    if (runs_in_row_bands(x)) {
        // of one image, as computed (in float32 where bf16 products run in float32: the band's copy)
        const int64_t row_bytes = x.size(1) * x.size(3) * at::elementSize(kernels::product_compute_dtype(x));
        const int64_t rows =
            std::max<int64_t>(2 * padding + 1, large_activations::kBandBytes / (row_bytes * x.size(0)));
        // into the input's own memory where the caller handed it over and the shapes allow
        const bool into_x = weight.size(0) == x.size(1) && large_activations::is_sole_reference(x);
        return conv2d_in_row_bands(x, weight, bias, padding, rows, into_x);
    }
    return kernels::conv2d(x, weight, bias, stride, {padding, padding});
}

bool Conv2d::runs_in_row_bands(const at::Tensor& x) const {
    const int64_t k = weight.size(2);
    return large_activations::is_large_cpu_activation(x, whole_call_bytes_per_element(x)) &&
           x.dim() == 4 && !conv_in_channels_last(x) &&
           stride == 1 && weight.size(3) == k && k == 2 * padding + 1 &&
           once_per_dtype<row_bands_give_same_bits>(x.scalar_type());
}

}  // namespace glmimage
