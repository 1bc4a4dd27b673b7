#include "kernels/gemv.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Float8_e4m3fn.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GLMI_GEMV_X86 1
#include <immintrin.h>
#endif

namespace glmimage::kernels {

namespace {

#ifdef GLMI_GEMV_X86

#define GLMI_AVX2 __attribute__((target("avx2,fma,f16c")))

// Eight weights as floats: bf16 is the high half of an fp32, so widening is a shift.
GLMI_AVX2 inline __m256 load8(const uint16_t* w) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
GLMI_AVX2 inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
GLMI_AVX2 inline __m256 load8(const int8_t* w) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

// fp8 e4m3 (Linear::quantize_fp8's weights), its byte: sign, 4 exponent bits (bias 7), 3 mantissa
// bits; no infinities, and S.1111.111 is NaN. A distinct type so the kernel can tell it from int8.
struct E4m3 {
    uint8_t bits;
};
static_assert(sizeof(E4m3) == 1, "e4m3 weights are one byte each");

// The kernel reads an e4m3 weight as its value / 256, and x times 256 (both exact): the byte's
// exponent and mantissa, moved up by 7 bits under the sign, are a float16 of exactly that value
// for every finite e4m3, subnormals included (float16's exponent bias is 8 more than e4m3's), which
// F16C widens. Measured on the 2-core AVX2 EPYC: decoding the fields into float32 with integer ops
// and blends instead kept a one-row product at 0.38 of the memory bandwidth.
constexpr float kE4m3Unit = 256.0f;

// Sixteen e4m3 weights -> two vectors of eight floats (value / 256).
GLMI_AVX2 inline void load16(const E4m3* w, __m256& lo, __m256& hi) {
    // byte << 7 puts the sign at bit 14, one below float16's: adding bit 14 to itself carries it up.
    const __m256i t = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))), 7);
    const __m256i em = _mm256_and_si256(t, _mm256_set1_epi16(0x3F80));
    __m256i h = _mm256_add_epi16(t, _mm256_and_si256(t, _mm256_set1_epi16(0x4000)));
    // NaN (exponent and mantissa all ones) would read as 480 / 256: give it float16's NaN bits
    h = _mm256_blendv_epi8(h, _mm256_set1_epi16(0x7E00), _mm256_cmpeq_epi16(em, _mm256_set1_epi16(0x3F80)));
    lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

// V vectors of eight weights from w: eight at a time, or e4m3 sixteen at a time.
template <int V, typename W>
GLMI_AVX2 inline void load_weights(const W* w, __m256 (&out)[V]) {
    if constexpr (std::is_same_v<W, E4m3>) {
        static_assert(V % 2 == 0, "e4m3 weights are decoded sixteen at a time");
        for (int v = 0; v < V; v += 2) load16(w + 8 * v, out[v], out[v + 1]);
    } else {
        for (int v = 0; v < V; ++v) out[v] = load8(w + 8 * v);
    }
}

inline float to_float(uint16_t w) {
    c10::BFloat16 b;
    b.x = w;
    return static_cast<float>(b);
}
inline float to_float(float w) { return w; }
inline float to_float(int8_t w) { return static_cast<float>(w); }
inline float to_float(E4m3 w) {
    return static_cast<float>(c10::Float8_e4m3fn(w.bits, c10::Float8_e4m3fn::from_bits())) / kE4m3Unit;
}

GLMI_AVX2 inline float horizontal_sum(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

// How far ahead of the loads each thread asks for the weight's next lines. The hardware prefetcher
// alone kept one streaming thread at about 13 GB/s on a 2-core Xeon (2 GB weight, 2 threads: 26.4
// GB/s; a plain sum reads 34.5 there); asking 1 KB ahead gave 30.5 (256 B: 28.6, 512 B: 29.8,
// 2 KB: 29.1, 4 KB: 26.0, which is too far: the lines come back evicted or late).
constexpr int64_t kPrefetchBytes = 1024;

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

bool cpu_has_avx2_fma_f16c() {
    static const bool has =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return has;
}

// W: the weight's storage (uint16_t for bf16, float, int8_t, E4m3); X: x's, and so y's, bias's
// and scale's (at::BFloat16 or float).
template <typename W, typename X>
void run(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& scale, at::Tensor& y) {
    const int64_t M = x2d.size(0), K = x2d.size(1), N = w.size(0);
    // x once in float32: the kernel's loads of it hit the cache, the weight's stream from memory.
    std::vector<float> xf(static_cast<size_t>(M * K));
    const auto x = x2d.contiguous();
    const X* xp = x.data_ptr<X>();
    const float x_unit = std::is_same_v<W, E4m3> ? kE4m3Unit : 1.0f;
    for (int64_t i = 0; i < M * K; ++i) xf[i] = static_cast<float>(xp[i]) * x_unit;
    std::vector<float> sums(static_cast<size_t>(M * N));
    const auto* wp = reinterpret_cast<const W*>(w.data_ptr());
    // Pieces worth a thread (parallel_min_piece_bytes: 256 KB on LibTorch's OpenMP team, 4 MB on
    // the fallback pool); the real size's weights are 32-224 MB each, the small preset's 0.5-16 MB.
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / (K * static_cast<int64_t>(sizeof(W))));
    parallel_for_cpu(N, grain, [&](int64_t n0, int64_t n1) {
        gemv_rows_dispatch<W>(M, wp, xf.data(), K, N, n0, n1, sums.data());
    });
    // One rounding, after the scale and the bias: as LibTorch's gemm with beta = 1 does.
    const X* bp = bias.defined() ? bias.data_ptr<X>() : nullptr;
    const X* sp = scale.defined() ? scale.data_ptr<X>() : nullptr;
    X* yp = y.data_ptr<X>();
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            float v = sums[m * N + n];
            if (sp) v *= static_cast<float>(sp[n]);
            if (bp) v += static_cast<float>(bp[n]);
            yp[m * N + n] = X(v);
        }
}

#endif  // GLMI_GEMV_X86

}  // namespace

bool gemv_takes(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& scale) {
#ifdef GLMI_GEMV_X86
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
#ifdef GLMI_GEMV_X86
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
