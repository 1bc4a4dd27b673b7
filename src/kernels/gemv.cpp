#include "kernels/gemv.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/profile_scope.h"
#include "kernels/x86_weight_loads.h"

namespace glmimage::kernels {

namespace {

#ifdef GLMI_X86_WEIGHT_LOADS

using namespace weight_loads;

// How far ahead of the loads each thread asks for the weight's next lines: the distance that keeps
// enough lines in flight depends on the memory's latency, so no one value is best everywhere.
// - A 2-core Xeon (2 GB weight, 2 threads): the hardware prefetcher alone 26.4 GB/s (a plain sum
//   reads 34.5 there); 256 B ahead 28.6, 512 B 29.8, 1 KB 30.5, 2 KB 29.1, 4 KB 26.0.
// - A 2-core Xeon with AMX and a 300 MB L3 (2026-12-06; int8 weights of 5 x 112 MB in turn, 2
//   threads, against a plain sum in the same run): none 0.48-0.53 of the sum, 1 KB 0.64-0.75,
//   2 KB 0.84-0.89, 4 KB 0.93-0.99, 8 and 16 KB 0.85-0.91. The real widths' int8 decode (2
//   layers, a token's 476 MB): 27.7-31.5 ms a token at 4 KB, 28.2-35.2 at 2 KB, 33.3-39.5 at 1 KB;
//   bf16: 50.3-53.3 ms at 4 KB against 57.2-68.1 at 1 KB (this host's noise: 10-20 %).
// 2 KB: within 5 % of the best on the first, within noise of it on the second.
constexpr int64_t kPrefetchBytes = 2048;

// Output rows [n0, n1) of y = x W^T for M input rows: each weight row is read once, V vectors of
// eight at a time, into M x V independent float32 accumulators (V shrinks as M grows so that
// accumulators and weights stay in the sixteen AVX registers). x is float32 [M, K]; sums [M, N].
template <int M, typename W>
GLMI_AVX2 void gemv_rows(const W* w, const float* x, int64_t K, int64_t N, int64_t n0, int64_t n1, float* sums) {
    constexpr int V = M <= 2 ? 4 : 2;
    constexpr int64_t step = 8 * V;
    for (int64_t n = n0; n < n1; ++n) {
        const W* wn = w + n * K;
        __m256 acc[M][V];
        for (int m = 0; m < M; ++m)
            for (int v = 0; v < V; ++v) acc[m][v] = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + step <= K; k += step) {
            // Rows are contiguous, so near a row's end this runs on into the next one; past the
            // weight's end a prefetch is only a hint and never faults.
            const auto* ahead = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(wn + k) + kPrefetchBytes);
            for (int64_t b = 0; b < step * static_cast<int64_t>(sizeof(W)); b += 64)
                _mm_prefetch(ahead + b, _MM_HINT_T0);
            __m256 wv[V];
            load_weights<V>(wn + k, wv);
            for (int m = 0; m < M; ++m)
                for (int v = 0; v < V; ++v)
                    acc[m][v] = _mm256_fmadd_ps(wv[v], _mm256_loadu_ps(x + m * K + k + 8 * v), acc[m][v]);
        }
        for (int m = 0; m < M; ++m) {
            for (int v = 1; v < V; ++v) acc[m][0] = _mm256_add_ps(acc[m][0], acc[m][v]);
            float s = horizontal_sum(acc[m][0]);
            for (int64_t j = k; j < K; ++j) s += to_float(wn[j]) * x[m * K + j];
            sums[m * N + n] = s;
        }
    }
}

template <typename W>
void gemv_rows_dispatch(int64_t M, const W* w, const float* x, int64_t K, int64_t N, int64_t n0, int64_t n1,
                        float* sums) {
    switch (M) {
        case 1: return gemv_rows<1>(w, x, K, N, n0, n1, sums);
        case 2: return gemv_rows<2>(w, x, K, N, n0, n1, sums);
        case 3: return gemv_rows<3>(w, x, K, N, n0, n1, sums);
        case 4: return gemv_rows<4>(w, x, K, N, n0, n1, sums);
        default: GLMI_CHECK(false, "gemv takes at most ", kGemvMaxRows, " rows, got ", M);
    }
}

static_assert(kGemvMaxRows == 4, "gemv_rows_dispatch instantiates 1..4 rows");

// W: the weight's storage (uint16_t for bf16, float, int8_t, E4m3); X: x's, and so y's, bias's
// and scale's (at::BFloat16 or float).
template <typename W, typename X>
void run(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& scale, at::Tensor& y) {
    const int64_t M = x2d.size(0), K = x2d.size(1), N = w.size(0);
    // x once in float32: the kernel's loads of it hit the cache, the weight's stream from memory.
    const std::unique_ptr<float[]> xf(new float[static_cast<size_t>(M * K)]);  // written whole below
    const auto x = x2d.contiguous();
    const X* xp = x.data_ptr<X>();
    const float x_unit = std::is_same_v<W, E4m3> ? kE4m3Unit : 1.0f;
    for (int64_t i = 0; i < M * K; ++i) xf[i] = static_cast<float>(xp[i]) * x_unit;
    // Written whole by the pieces below before any is read: no zeroing.
    const std::unique_ptr<float[]> sums(new float[static_cast<size_t>(M * N)]);
    const auto* wp = reinterpret_cast<const W*>(w.data_ptr());
    const X* bp = bias.defined() ? bias.data_ptr<X>() : nullptr;
    const X* sp = scale.defined() ? scale.data_ptr<X>() : nullptr;
    X* yp = y.data_ptr<X>();
    // Pieces worth a thread (parallel_min_piece_bytes: 256 KB on LibTorch's OpenMP team, 4 MB on
    // the fallback pool); the real size's weights are 32-224 MB each, the small preset's 0.5-16 MB.
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / (K * static_cast<int64_t>(sizeof(W))));
    parallel_for_cpu(N, grain, [&](int64_t n0, int64_t n1) {
        gemv_rows_dispatch<W>(M, wp, xf.get(), K, N, n0, n1, sums.get());
        // Each piece finishes its own outputs (no serial pass after the team). One rounding,
        // after the scale and the bias: as LibTorch's gemm with beta = 1 does.
        for (int64_t m = 0; m < M; ++m)
            for (int64_t n = n0; n < n1; ++n) {
                float v = sums[m * N + n];
                if (sp) v *= static_cast<float>(sp[n]);
                if (bp) v += static_cast<float>(bp[n]);
                yp[m * N + n] = X(v);
            }
    });
}

#endif  // GLMI_X86_WEIGHT_LOADS

}  // namespace

bool gemv_takes(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& scale) {
#ifdef GLMI_X86_WEIGHT_LOADS
    const auto t = x2d.scalar_type();
    if (!(t == at::kBFloat16 || t == at::kFloat)) return false;
    const bool scaled = w.scalar_type() == at::kChar || w.scalar_type() == at::kFloat8_e4m3fn;
    if (!(scaled || w.scalar_type() == t) || scaled != scale.defined()) return false;
    if (w.scalar_type() == at::kFloat8_e4m3fn && t != at::kFloat) return false;
    if (!x2d.is_cpu() || !w.is_cpu() || x2d.dim() != 2 || w.dim() != 2) return false;
    if (x2d.size(0) < 1 || x2d.size(0) > kGemvMaxRows || x2d.size(1) != w.size(1) || !w.is_contiguous()) return false;
    for (const at::Tensor* per_row : {&bias, &scale})
        if (per_row->defined() && (!per_row->is_cpu() || per_row->scalar_type() != t || per_row->dim() != 1 ||
                                   per_row->size(0) != w.size(0) || !per_row->is_contiguous()))
            return false;
    return cpu_has_avx2_fma_f16c();
#else
    (void)x2d, (void)w, (void)bias, (void)scale;
    return false;
#endif
}

at::Tensor gemv(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& scale) {
    GLMI_CHECK(gemv_takes(x2d, w, bias, scale), "gemv does not take x ", x2d.sizes(), " ", x2d.scalar_type(),
               " with W ", w.sizes(), " ", w.scalar_type(), scale.defined() ? " and a scale" : "");
    GLMI_KERNEL_SCOPE("glmimage::gemv", x2d, w);
#ifdef GLMI_X86_WEIGHT_LOADS
    auto y = at::empty({x2d.size(0), w.size(0)}, x2d.options());
    const bool bf16 = x2d.scalar_type() == at::kBFloat16;
    if (w.scalar_type() == at::kFloat8_e4m3fn) {
        run<E4m3, float>(x2d, w, bias, scale, y);
    } else if (w.scalar_type() == at::kChar) {
        if (bf16)
            run<int8_t, at::BFloat16>(x2d, w, bias, scale, y);
        else
            run<int8_t, float>(x2d, w, bias, scale, y);
    } else if (bf16) {
        run<uint16_t, at::BFloat16>(x2d, w, bias, scale, y);
    } else {
        run<float, float>(x2d, w, bias, scale, y);
    }
    return y;
#else
    return {};
#endif
}

}  // namespace glmimage::kernels
