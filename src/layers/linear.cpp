#include "layers/linear.h"

#include <torch/version.h>

#include "core/check.h"

namespace glmimage {

Linear::Linear(int64_t in, int64_t out, bool has_bias, at::TensorOptions options) : ParamModule(std::move(options)) {
    param(weight, "weight", {out, in});
    if (has_bias) param(bias, "bias", {out});
}

namespace {

// LibTorch's CPU _weight_int8pack_mm reads int8 at half the bytes of bf16 and wins where the
// matmul is memory-bound: a few rows (the AR decode step; 4096x4096 with one row: 0.56 ms against
// 1.11 ms in bf16, 2 threads here). From a few dozen rows on it is slower than widening the
// weight and running the bf16 GEMM (64 rows: 12.8 ms against 12.0; 600: 8.4 against 1.1), so
// prefill and DiT-sized inputs take the widening path.
constexpr int64_t kInt8PackMaxRows = 8;

// LibTorch 2.13's bf16 kernel also crashes when the inner size is not a multiple of 32 (seen
// with K = 100 and K = 13); every real GLM-Image width is one.
bool int8pack_takes(const at::Tensor& x2d, const at::Tensor& w) {
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 4
    (void)x2d, (void)w;
    return false;  // no _weight_int8pack_mm before LibTorch 2.4
#else
    const auto t = x2d.scalar_type();
    return x2d.is_cpu() && w.is_cpu() && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) &&
           w.size(1) % 32 == 0 && x2d.size(0) <= kInt8PackMaxRows;
#endif
}

}  // namespace

at::Tensor Linear::forward(const at::Tensor& x) const {
    if (!quantized()) return at::linear(x, weight, bias);
    const int64_t in = weight.size(1), out = weight.size(0);
    auto x2d = x.reshape({-1, in}).contiguous();
    const auto scale = weight_scale.to(x.scalar_type());
    at::Tensor y;
#if !(TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 4)
    if (int8pack_takes(x2d, weight)) y = at::_weight_int8pack_mm(x2d, weight, scale);
#endif
    if (!y.defined()) y = at::linear(x2d, weight.to(x.scalar_type())) * scale;
    if (bias.defined()) y = y + bias;
    auto sizes = x.sizes().vec();
    sizes.back() = out;
    return y.view(sizes);
}

void Linear::quantize_int8() {
    if (quantized()) return;
    GLMI_CHECK(at::isFloatingType(weight.scalar_type()), "cannot quantize a ", weight.scalar_type(), " weight");
    const auto dtype = weight.scalar_type();
    const auto w = weight.to(at::kFloat);
    const auto amax = w.abs().amax({1}, /*keepdim=*/true).clamp_min(1e-12);
    const auto scale = amax / 127.0;
    const auto q = (w / scale).round().clamp(-127, 127).to(at::kChar).contiguous();
    weight_scale = scale.view({-1}).to(dtype);
    replace_parameter("weight", q);
}

}  // namespace glmimage
