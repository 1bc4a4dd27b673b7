#include "kernels/widen_weight.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/profile_scope.h"
#include "kernels/x86_weight_loads.h"

namespace glmimage::kernels {

namespace {

void with_libtorch(const at::Tensor& w, at::Tensor& out, const at::Tensor& row_scale) {
    if (row_scale.defined())
        at::mul_out(out, w.to(at::kFloat), row_scale.view({-1, 1}));
    else
        out.copy_(w);
}

#ifdef GLMI_X86_WEIGHT_LOADS

using namespace weight_loads;

// Sixteen weights as two vectors of eight exact floats, times `unit` (e4m3 loads read value / 256,
// so their unit is 256 times the scale: (v / 256) * (256 s) rounds as v * s does, the other
// products being exact).
template <typename W>
GLMI_AVX2 inline void load16_scaled(const W* w, __m256 unit, __m256& lo, __m256& hi) {
    if constexpr (std::is_same_v<W, E4m3>) {
        load16(w, lo, hi);
    } else {
        lo = load8(w);
        hi = load8(w + 8);
    }
    lo = _mm256_mul_ps(lo, unit);
    hi = _mm256_mul_ps(hi, unit);
}

// Rows [n0, n1): Out is float (times the row's scale where there is one) or uint16_t (bf16 bits).
template <typename W, typename Out>
GLMI_AVX2 void widen_rows(const W* w, const float* scale, int64_t K, int64_t n0, int64_t n1, Out* out) {
    const float load_unit = std::is_same_v<W, E4m3> ? kE4m3Unit : 1.0f;
    for (int64_t n = n0; n < n1; ++n) {
        const W* wn = w + n * K;
        Out* on = out + n * K;
        const float row_unit = load_unit * (scale ? scale[n] : 1.0f);
        const __m256 unit = _mm256_set1_ps(row_unit);
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256 lo, hi;
            load16_scaled(wn + k, unit, lo, hi);
            if constexpr (std::is_same_v<Out, float>) {
                _mm256_storeu_ps(on + k, lo);
                _mm256_storeu_ps(on + k + 8, hi);
            } else {
                store16_bf16(on + k, lo, hi);
            }
        }
        for (; k < K; ++k) {
            const float v = to_float(wn[k]) * row_unit;  // the vector loop's arithmetic, one value
            if constexpr (std::is_same_v<Out, float>) {
                on[k] = v;
            } else {
                on[k] = c10::BFloat16(v).x;  // exact: no rounding happens
            }
        }
    }
}

template <typename W, typename Out>
void run(const at::Tensor& w, const at::Tensor& row_scale, at::Tensor& out) {
    const int64_t N = w.size(0), K = w.size(1);
    const auto* wp = reinterpret_cast<const W*>(w.data_ptr());
    const float* sp = row_scale.defined() ? row_scale.data_ptr<float>() : nullptr;
    auto* op = reinterpret_cast<Out*>(out.data_ptr());
    const int64_t row_bytes = std::max<int64_t>(1, K * static_cast<int64_t>(sizeof(Out)));
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / row_bytes);
    parallel_for_cpu(N, grain, [&](int64_t n0, int64_t n1) { widen_rows<W, Out>(wp, sp, K, n0, n1, op); });
}

#endif  // GLMI_X86_WEIGHT_LOADS

}  // namespace

void widen_weight_into(const at::Tensor& w, at::Tensor& out, const at::Tensor& row_scale) {
    const auto wt = w.scalar_type(), to = out.scalar_type();
    GLMI_CHECK(wt == at::kBFloat16 || wt == at::kChar || wt == at::kFloat8_e4m3fn,
               "widen_weight takes bf16, int8 or fp8 e4m3 weights, got ", wt);
    GLMI_CHECK(w.dim() == 2 && out.sizes() == w.sizes(), "widen_weight takes a 2-D weight and an output of its shape, got ",
               w.sizes(), " into ", out.sizes());
    GLMI_CHECK(at::isFloatingType(to), "widen_weight writes a floating-point tensor, not ", to);
    if (row_scale.defined())
        GLMI_CHECK(to == at::kFloat && row_scale.scalar_type() == at::kFloat && row_scale.numel() == w.size(0),
                   "widen_weight's row scale is float32 [", w.size(0), "] with a float32 result; got ",
                   row_scale.scalar_type(), " ", row_scale.sizes(), " to ", to);
#ifdef GLMI_X86_WEIGHT_LOADS
    const bool scale_ok = !row_scale.defined() || (row_scale.is_cpu() && row_scale.is_contiguous());
    const bool f32 = to == at::kFloat, kernel_writes = f32 || (to == at::kBFloat16 && wt != at::kBFloat16);
    if (kernel_writes && w.is_cpu() && out.is_cpu() && w.is_contiguous() && out.is_contiguous() && scale_ok &&
        cpu_has_avx2_fma_f16c()) {
        GLMI_KERNEL_SCOPE("glmimage::widen_weight", w);
        if (wt == at::kBFloat16)
            run<uint16_t, float>(w, row_scale, out);
        else if (wt == at::kChar)
            f32 ? run<int8_t, float>(w, row_scale, out) : run<int8_t, uint16_t>(w, row_scale, out);
        else
            f32 ? run<E4m3, float>(w, row_scale, out) : run<E4m3, uint16_t>(w, row_scale, out);
        return;
    }
#endif
    with_libtorch(w, out, row_scale);
}

at::Tensor widen_weight(const at::Tensor& w, at::ScalarType to, const at::Tensor& row_scale) {
    auto out = at::empty(w.sizes(), w.options().dtype(to));
    widen_weight_into(w, out, row_scale);
    return out;
}

}  // namespace glmimage::kernels
