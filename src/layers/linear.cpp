#include "layers/linear.h"

#include <ATen/Context.h>

#include <algorithm>
#include <mutex>
#include <numeric>
#include <optional>

#include "core/check.h"
#include "kernels/cpu_products.h"
#include "kernels/gemv.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

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
// prefill and DiT-sized inputs take the widening path. The AR decode's layers (few_rows_gemv)
// take kernels::gemv instead where it runs, which reads the int8 weight at the memory's pace.
constexpr int64_t kInt8PackMaxRows = 8;

// LibTorch 2.13's bf16 kernel also crashes when the inner size is not a multiple of 32 (seen
// with K = 100 and K = 13); every real GLM-Image width is one.
bool int8pack_takes(const at::Tensor& x2d, const at::Tensor& w) {
    const auto t = x2d.scalar_type();
    return x2d.is_cpu() && w.is_cpu() && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) &&
           w.size(1) % 32 == 0 && x2d.size(0) <= kInt8PackMaxRows;
}

// LibTorch sends bf16 matmuls on the CPU to oneDNN, which for a few rows (the AR decode step)
// reads the weight at about half the speed of LibTorch's own bf16 gemm (fp32 accumulation):
// measured here, one row, 1 thread, 16.4 GB/s read bandwidth: 4096x4096 4.7 ms against 2.15
// (2.0 is the bandwidth's limit), 27392x4096 28.2 against 16.0. The choice is a process-wide
// switch (Context::setUserEnabledMkldnn), so it is off only while such calls run; a count of the
// calls in flight keeps concurrent ones from turning it back on under each other, and the
// caller's own setting is restored after the last. Meanwhile other threads' bf16 matmuls take
// LibTorch's gemm too: slower for large ones, the same results up to rounding.
constexpr int64_t kNativeBf16MaxRows = 8;

class NativeBf16Gemm {
  public:
    NativeBf16Gemm() {
        std::lock_guard<std::mutex> lock(mutex());
        auto& ctx = at::globalContext();
        if (state().in_flight++ == 0) {
            state().saved = ctx.userEnabledMkldnn();
            ctx.setUserEnabledMkldnn(false);
        }
    }
    ~NativeBf16Gemm() {
        std::lock_guard<std::mutex> lock(mutex());
        if (--state().in_flight == 0) at::globalContext().setUserEnabledMkldnn(state().saved);
    }
    NativeBf16Gemm(const NativeBf16Gemm&) = delete;
    NativeBf16Gemm& operator=(const NativeBf16Gemm&) = delete;

  private:
    struct State {
        int in_flight = 0;
        bool saved = true;
    };
    static std::mutex& mutex() {
        static std::mutex m;
        return m;
    }
    static State& state() {
        static State s;
        return s;
    }
};

// (Where the CPU has no oneDNN bf16 kernels the products run in float32 instead: cpu_products.h.)
bool wants_native_bf16(const at::Tensor& x, const at::Tensor& w) {
    return x.is_cpu() && x.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16 &&
           kernels::product_compute_dtype(x) == at::kBFloat16 &&
           x.numel() / std::max<int64_t>(x.size(-1), 1) <= kNativeBf16MaxRows;
}

constexpr double kE4m3Max = 448.0;

// LibTorch's CPU _scaled_mm runs oneDNN's fp8 kernels where the CPU has AMX-INT8 (and oneDNN is
// on); elsewhere it emulates: it widens both operands to float32, scales them, multiplies in
// float32 and rounds once, with LibTorch's e4m3 conversion at 0.26 G elements/s and a transposed
// copy of the weight first. fp8_matmul computes that emulation itself there, on the same values:
// the real widths' fp8 prefill (2 layers and the lm_head, 33 rows, 2 threads on the AVX2 EPYC)
// 3.41-3.65 s through _scaled_mm, 0.51-0.55 s this way.
bool cpu_runs_fp8_kernels() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const bool amx_int8 = [] {
        unsigned a = 0, b = 0, c = 0, d = 0;
        return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 25)) != 0;  // CPUID.7.0:EDX[25]
    }();
    return amx_int8 && at::globalContext().userEnabledMkldnn();
#else
    return true;  // not x86: leave the choice to LibTorch
#endif
}

// x2d [M, K] -> y [M, N] through the row-wise fp8 scaled matmul: x is quantized per row with a
// dynamic scale (max |x| / 448, as the weight was per output channel), w8 is [N, K] e4m3 and
// w_scale float32 [1, N]. CUDA's row-wise kernel writes bf16; the result is cast to x's dtype.
// With `few_rows_gemv`, a CPU input of a few rows (the AR decode) takes kernels::gemv on the same
// quantized x instead (float32 sums of the e4m3 values, both scales, one bf16 rounding): through
// _scaled_mm's emulation the small preset's AR decode ran at 6.4 tok/s (bf16: 347) on a 2-core
// AVX2 EPYC.
at::Tensor fp8_matmul(const at::Tensor& x2d, const at::Tensor& w8, const at::Tensor& w_scale, bool few_rows_gemv) {
    const auto xf = x2d.to(at::kFloat);
    const auto x_scale = xf.abs().amax({1}, /*keepdim=*/true).clamp_min(1e-12) / kE4m3Max;
    const auto xq = (xf / x_scale).to(at::kFloat8_e4m3fn);
    if (few_rows_gemv) {
        const auto xq_values = xq.to(at::kFloat), w_scale_row = w_scale.view({-1});
        if (kernels::gemv_takes(xq_values, w8, {}, w_scale_row))
            return (kernels::gemv(xq_values, w8, {}, w_scale_row) * x_scale).to(at::kBFloat16).to(x2d.scalar_type());
    }
    if (x2d.is_cpu() && !cpu_runs_fp8_kernels()) {
        // The emulation's arithmetic (operands widened and scaled, one float32 product, one
        // rounding) with this library's widening; the sums' order is MKL's either way.
        auto y = at::empty({x2d.size(0), w8.size(0)}, x2d.options().dtype(at::kBFloat16));
        kernels::widened_linear_into(xq.to(at::kFloat) * x_scale, w8, w_scale.view({-1}), {}, y);
        return y.to(x2d.scalar_type());
    }
    return at::_scaled_mm(xq, w8.t(), x_scale, w_scale, /*bias=*/std::nullopt, /*scale_result=*/std::nullopt,
                          at::kBFloat16, /*use_fast_accum=*/false)
        .to(x2d.scalar_type());
}

}  // namespace

bool Linear::is_quantized_dtype(at::ScalarType t) { return t == at::kChar || t == at::kFloat8_e4m3fn; }

bool Linear::quantized() const { return is_quantized_dtype(weight.scalar_type()); }

at::Tensor Linear::forward(const at::Tensor& x) const {
    if (few_rows_gemv && x.is_cpu() && x.size(-1) > 0 && x.numel() <= kernels::kGemvMaxRows * x.size(-1)) {
        // bf16 / float32 weights, and int8 ones with their scales (fp8: fp8_matmul, which
        // quantizes x first)
        const auto x2d = x.reshape({-1, x.size(-1)});
        if (kernels::gemv_takes(x2d, weight, bias, weight_scale)) {
            auto sizes = x.sizes().vec();
            sizes.back() = weight.size(0);
            return kernels::gemv(x2d, weight, bias, weight_scale).view(sizes);
        }
    }
    if (!quantized()) {
        std::optional<NativeBf16Gemm> native;
        if (few_rows_gemv && wants_native_bf16(x, weight)) native.emplace();
        return kernels::linear(x, weight, bias);
    }
    const int64_t in = weight.size(1), out = weight.size(0);
    auto x2d = x.reshape({-1, in}).contiguous();
    at::Tensor y;
    if (weight.scalar_type() == at::kFloat8_e4m3fn) {
        y = fp8_matmul(x2d, weight, weight_scale, few_rows_gemv);
    } else {
        const auto scale = weight_scale.to(x.scalar_type());
        if (int8pack_takes(x2d, weight)) y = at::_weight_int8pack_mm(x2d, weight, scale);
        if (!y.defined()) y = kernels::linear(x2d, weight) * scale;
    }
    if (bias.defined()) y = y + bias;
    auto sizes = x.sizes().vec();
    sizes.back() = out;
    return y.view(sizes);
}

void Linear::quantize_int8(at::ScalarType compute) {
    if (quantized()) return;
    GLMI_CHECK(at::isFloatingType(weight.scalar_type()), "cannot quantize a ", weight.scalar_type(), " weight");
    const auto w = weight.to(compute).to(at::kFloat);
    const auto amax = w.abs().amax({1}, /*keepdim=*/true).clamp_min(1e-12);
    const auto scale = amax / 127.0;
    const auto q = (w / scale).round().clamp(-127, 127).to(at::kChar).contiguous();
    weight_scale = scale.view({-1}).to(compute);
    replace_parameter("weight", q);
}

bool Linear::quantize_fp8(at::ScalarType compute) {
    if (quantized()) return false;
    GLMI_CHECK(at::isFloatingType(weight.scalar_type()), "cannot quantize a ", weight.scalar_type(), " weight");
    if (weight.size(0) % 16 != 0 || weight.size(1) % 16 != 0) return false;
    const auto w = weight.to(compute).to(at::kFloat);
    const auto scale = w.abs().amax({1}, /*keepdim=*/true).clamp_min(1e-12) / kE4m3Max;  // [out, 1]
    const auto q = (w / scale).to(at::kFloat8_e4m3fn).contiguous();
    weight_scale = scale.view({1, -1}).contiguous();
    replace_parameter("weight", q);
    return true;
}

std::string Linear::fp8_unsupported_reason(const at::Device& device) {
    try {
        // A 32x32 product: small enough to be free, large enough to use the real kernel.
        const auto ramp = at::arange(32 * 32, at::TensorOptions().dtype(at::kFloat)).view({32, 32});
        const auto x = at::sin(ramp * 0.37), w = at::cos(ramp * 0.11);
        Linear probe(32, 32, /*bias=*/false, at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16));
        probe.replace_parameter("weight", w.to(device, at::kBFloat16));
        probe.quantize_fp8(at::kBFloat16);
        const auto got = probe.forward(x.to(device, at::kBFloat16)).to(at::kCPU, at::kFloat);
        const auto want = at::matmul(x, w.t());
        const double err = (got - want).abs().max().item<double>() / want.abs().max().item<double>();
        if (!(err < 0.1))
            return detail::str_cat("the fp8 scaled matmul on ", device.str(), " gives wrong results (relative error ",
                                   err, ")");
        return {};
    } catch (const std::exception& e) {
        std::string why = e.what();
        if (auto nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
        return detail::str_cat("this LibTorch has no fp8 scaled matmul on ", device.str(), ": ", why);
    }
}

std::shared_ptr<const FusedLinear> FusedLinear::fuse(const std::vector<Linear*>& parts) {
    if (parts.size() < 2) return nullptr;
    const Linear& first = *parts.front();
    const auto& w0 = first.weight;
    for (const Linear* p : parts) {
        const auto& w = p->weight;
        if (w.is_meta() || w.dim() != 2 || w.size(1) != w0.size(1) || w.scalar_type() != w0.scalar_type() ||
            w.device() != w0.device() || p->bias.defined() != first.bias.defined() ||
            p->weight_scale.defined() != first.weight_scale.defined())
            return nullptr;
        if (p->bias.defined() && p->bias.scalar_type() != first.bias.scalar_type()) return nullptr;
    }
    std::vector<at::Tensor> ws, bs, ss;
    std::vector<int64_t> sizes;
    for (const Linear* p : parts) {
        ws.push_back(p->weight);
        sizes.push_back(p->weight.size(0));
        if (p->bias.defined()) bs.push_back(p->bias);
        if (p->weight_scale.defined()) ss.push_back(p->weight_scale);
    }
    const int64_t out = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
    auto fused = std::make_shared<Linear>(w0.size(1), out, first.bias.defined(),
                                          at::TensorOptions().device(at::kMeta).dtype(w0.scalar_type()));
    fused->few_rows_gemv = first.few_rows_gemv;
    fused->replace_parameter("weight", at::cat(ws, 0));
    if (!bs.empty()) fused->replace_parameter("bias", at::cat(bs, 0));
    if (!ss.empty()) fused->weight_scale = at::cat(ss, -1);  // [out] (int8) or [1, out] (fp8)
    // The parts become views of the fused tensors: the originals are released.
    int64_t off = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
        Linear* p = parts[i];
        const int64_t n = sizes[i];
        p->replace_parameter("weight", fused->weight.narrow(0, off, n));
        if (p->bias.defined()) p->replace_parameter("bias", fused->bias.narrow(0, off, n));
        if (p->weight_scale.defined()) p->weight_scale = fused->weight_scale.narrow(-1, off, n);
        off += n;
    }
    return std::shared_ptr<const FusedLinear>(new FusedLinear(std::move(fused), std::move(sizes)));
}

std::vector<at::Tensor> FusedLinear::forward(const at::Tensor& x) const {
    return fused_->forward(x).split_with_sizes(sizes_, -1);
}

}  // namespace glmimage
