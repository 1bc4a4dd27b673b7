#include "kernels/cpu_decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/fused_math.h"
#include "kernels/profile_scope.h"
#include "kernels/softmax_exp.h"
#include "kernels/x86_weight_loads.h"

namespace glmimage::kernels {

namespace {

constexpr int64_t kMaxHeadDim = 256;  // a limit of the checks, not of the loops

#ifdef GLMI_X86_WEIGHT_LOADS

using namespace weight_loads;

// e^x for eight floats x <= 88.3 (the softmax's s - max <= 0), within 2 ulp: softmax_exp.h's
// formula. Below its kMinX it gives 0, as it does for -inf; NaN stays NaN.
GLMI_AVX2 inline __m256 exp8(__m256 x) {
    using namespace softmax_exp;
    const __m256 xc = _mm256_min_ps(_mm256_set1_ps(kMaxX), x);  // min(a, NaN) returns the NaN
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
    __m256 p = _mm256_set1_ps(kPoly[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kPoly[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(kMinX), _CMP_LT_OQ));
}

// Eight floats stored as T (bf16 bits: rounded to nearest, ties to even, NaN kept).
template <typename T>
GLMI_AVX2 inline void store8(T* out, __m256 v) {
    if constexpr (std::is_same_v<T, float>) {
        _mm256_storeu_ps(out, v);
    } else {
        alignas(32) float f[8];
        _mm256_store_ps(f, v);
        for (int i = 0; i < 8; ++i) out[i] = fused::from_float<fused::bf16_t>(f[i]).bits;
    }
}

// What one call attends: element strides of each tensor (its last dimension is contiguous).
struct Problem {
    int64_t B, Hq, Hkv, T, D;
    int64_t qs0, qs1, ks0, ks1, ks2, vs0, vs1, vs2;
    int64_t ms0;                 // the mask's batch stride (0: one row for every sample)
    at::ScalarType mask_dtype;   // Undefined: no mask
    float scale;
};

// Element i of a mask row: 0 (attend) or -inf for a bool mask, the value otherwise.
inline float mask_value(const void* m, at::ScalarType dt, int64_t i) {
    switch (dt) {
        case at::kBool: return static_cast<const bool*>(m)[i] ? 0.0f : -std::numeric_limits<float>::infinity();
        case at::kFloat: return static_cast<const float*>(m)[i];
        default: return to_float(static_cast<const uint16_t*>(m)[i]);  // bf16
    }
}

// The sums of four vectors' lanes, as the four lanes of one: a, b, c, d.
GLMI_AVX2 inline __m128 horizontal_sums4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// out[0, 8V) += p[t] * rows[t][0, 8V) over the keys t with a nonzero weight, in order, the V
// accumulators in registers.
template <int V, typename T>
GLMI_AVX2 inline void weigh_rows(const float* p, int64_t n_keys, const T* rows, int64_t row_stride, float* out) {
    __m256 acc[V];
    for (int c = 0; c < V; ++c) acc[c] = _mm256_loadu_ps(out + 8 * c);
    for (int64_t t = 0; t < n_keys; ++t) {
        if (p[t] == 0.0f) continue;  // a masked key (or one e^x underflowed for): adds nothing
        const __m256 w = _mm256_set1_ps(p[t]);
        const T* row = rows + t * row_stride;
        for (int c = 0; c < V; ++c) acc[c] = _mm256_fmadd_ps(w, load8(row + 8 * c), acc[c]);
    }
    for (int c = 0; c < V; ++c) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

template <typename T>
GLMI_AVX2 void weigh_rows_any(int64_t vectors, const float* p, int64_t n_keys, const T* rows, int64_t row_stride,
                              float* out) {
    switch (vectors) {
        case 1: return weigh_rows<1>(p, n_keys, rows, row_stride, out);
        case 2: return weigh_rows<2>(p, n_keys, rows, row_stride, out);
        case 3: return weigh_rows<3>(p, n_keys, rows, row_stride, out);
        case 4: return weigh_rows<4>(p, n_keys, rows, row_stride, out);
        case 5: return weigh_rows<5>(p, n_keys, rows, row_stride, out);
        case 6: return weigh_rows<6>(p, n_keys, rows, row_stride, out);
        case 7: return weigh_rows<7>(p, n_keys, rows, row_stride, out);
        default: return weigh_rows<8>(p, n_keys, rows, row_stride, out);
    }
}

// The G query heads of KV head h in sample b. `scratch` holds G x D widened queries, G x T
// scores, G x D weighted sums and G sums of weights.
template <typename T>
GLMI_AVX2 void attend_group(const Problem& P, const T* q, const T* k, const T* v, const void* mask, T* out, int64_t b,
                            int64_t h, std::vector<float>& scratch) {
    const int64_t G = P.Hq / P.Hkv, D = P.D, T_ = P.T, C = D / 8;
    scratch.resize(static_cast<size_t>(G * (2 * D + T_ + 1)));
    float* qf = scratch.data();
    float* s = qf + G * D;
    float* acc = s + G * T_;
    float* sums = acc + G * D;
    for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d) qf[g * D + d] = to_float(q[b * P.qs0 + (h * G + g) * P.qs1 + d]);
    const T* kb = k + b * P.ks0 + h * P.ks1;
    const T* vb = v + b * P.vs0 + h * P.vs1;
    const void* mb = mask ? static_cast<const char*>(mask) + b * P.ms0 * c10::elementSize(P.mask_dtype) : nullptr;
    const float minus_inf = -std::numeric_limits<float>::infinity();
    const __m128 scale4 = _mm_set1_ps(P.scale);

    // Keys a tile at a time, so that a tile's key and value rows stay in the core's cache while
    // every query head of the group reads them (64 KB of float32 rows).
    const int64_t tile = std::max<int64_t>(16, 16384 / D);

    // Scores, a key row at a time for four query heads at once.
    for (int64_t t0 = 0; t0 < T_; t0 += tile) {
        const int64_t t1 = std::min(T_, t0 + tile);
        int64_t g = 0;
        for (; g + 4 <= G; g += 4) {
            const float* q0 = qf + g * D;
            for (int64_t t = t0; t < t1; ++t) {
                const float m = mb ? mask_value(mb, P.mask_dtype, t) : 0.0f;
                if (m == minus_inf) {
                    for (int i = 0; i < 4; ++i) s[(g + i) * T_ + t] = minus_inf;
                    continue;
                }
                const T* kt = kb + t * P.ks2;
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (int64_t c = 0; c < C; ++c) {
                    const __m256 kc = load8(kt + 8 * c);
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + 8 * c), kc, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + D + 8 * c), kc, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + 2 * D + 8 * c), kc, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + 3 * D + 8 * c), kc, a3);
                }
                alignas(16) float four[4];
                _mm_store_ps(four, _mm_add_ps(_mm_mul_ps(horizontal_sums4(a0, a1, a2, a3), scale4), _mm_set1_ps(m)));
                for (int i = 0; i < 4; ++i) s[(g + i) * T_ + t] = four[i];
            }
        }
        for (; g < G; ++g)
            for (int64_t t = t0; t < t1; ++t) {
                const float m = mb ? mask_value(mb, P.mask_dtype, t) : 0.0f;
                if (m == minus_inf) {
                    s[g * T_ + t] = minus_inf;
                    continue;
                }
                const T* kt = kb + t * P.ks2;
                __m256 acc = _mm256_setzero_ps();
                for (int64_t c = 0; c < C; ++c)
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(qf + g * D + 8 * c), load8(kt + 8 * c), acc);
                s[g * T_ + t] = horizontal_sum(acc) * P.scale + m;
            }
    }

    // Per query head, the softmax's weights (unnormalized) and their sum.
    for (int64_t g = 0; g < G; ++g) {
        float* sg = s + g * T_;
        float max = minus_inf;
        for (int64_t t = 0; t < T_; ++t) max = std::max(max, sg[t]);
        if (max == minus_inf) {  // every key masked: zero weights, and zeros out, as SDPA's CPU kernels give
            std::fill(sg, sg + T_, 0.0f);
            sums[g] = 0.0f;
            continue;
        }
        const __m256 vmax = _mm256_set1_ps(max);
        __m256 vsum = _mm256_setzero_ps();
        int64_t t = 0;
        for (; t + 8 <= T_; t += 8) {
            const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(sg + t), vmax));
            vsum = _mm256_add_ps(vsum, p);
            _mm256_storeu_ps(sg + t, std::is_same_v<T, float> ? p : round_to_bf16(p));
        }
        if (t < T_) {  // the last keys as a vector padded with weight 0, summed in the same lanes
            alignas(32) float rest[8];
            const int64_t n = T_ - t;
            for (int64_t i = 0; i < 8; ++i) rest[i] = i < n ? sg[t + i] : minus_inf;
            const __m256 p = exp8(_mm256_sub_ps(_mm256_load_ps(rest), vmax));
            vsum = _mm256_add_ps(vsum, p);
            _mm256_store_ps(rest, std::is_same_v<T, float> ? p : round_to_bf16(p));
            for (int64_t i = 0; i < n; ++i) sg[t + i] = rest[i];
        }
        // Masked keys weigh 0 and add nothing: the eager step's prefix and the static step's whole
        // capacity give the same sums, bit for bit.
        sums[g] = horizontal_sum(vsum);
    }

    // The weighted sums of the value rows, a tile of keys at a time for every query head.
    std::fill(acc, acc + G * D, 0.0f);
    for (int64_t t0 = 0; t0 < T_; t0 += tile) {
        const int64_t n = std::min(T_, t0 + tile) - t0;
        for (int64_t g = 0; g < G; ++g)
            for (int64_t c = 0; c < C; c += 8)
                weigh_rows_any(std::min<int64_t>(8, C - c), s + g * T_ + t0, n, vb + t0 * P.vs2 + 8 * c, P.vs2,
                               acc + g * D + 8 * c);
    }
    for (int64_t g = 0; g < G; ++g) {
        T* og = out + (b * P.Hq + h * G + g) * D;
        const __m256 inv = _mm256_set1_ps(sums[g] == 0.0f ? 0.0f : 1.0f / sums[g]);
        for (int64_t c = 0; c < C; ++c) store8(og + 8 * c, _mm256_mul_ps(_mm256_loadu_ps(acc + g * D + 8 * c), inv));
    }
}

template <typename T>
void run(const Problem& P, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
         at::Tensor& out) {
    const auto* pq = static_cast<const T*>(q.data_ptr());
    const auto* pk = static_cast<const T*>(k.data_ptr());
    const auto* pv = static_cast<const T*>(v.data_ptr());
    const void* pm = mask.defined() ? mask.data_ptr() : nullptr;
    auto* po = static_cast<T*>(out.data_ptr());
    // A group's G query heads each take T key rows and T value rows through float32 arithmetic:
    // counted as that many float32 bytes streamed, to split the groups across threads only where
    // a piece is worth a thread (parallel.h).
    const int64_t group_work = 2 * P.T * P.D * (P.Hq / P.Hkv) * static_cast<int64_t>(sizeof(float));
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / std::max<int64_t>(group_work, 1));
    parallel_for_cpu(P.B * P.Hkv, grain, [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> scratch;
        for (int64_t i = begin; i < end; ++i) attend_group<T>(P, pq, pk, pv, pm, po, i / P.Hkv, i % P.Hkv, scratch);
    });
}

#endif  // GLMI_X86_WEIGHT_LOADS

}  // namespace

bool cpu_decode_attention_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& mask) {
#ifdef GLMI_X86_WEIGHT_LOADS
    if (!cpu_has_avx2_fma_f16c()) return false;
    if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || !q.device().is_cpu() || !k.device().is_cpu() ||
        !v.device().is_cpu())
        return false;
    const auto dt = q.scalar_type();
    if ((dt != at::kFloat && dt != at::kBFloat16) || k.scalar_type() != dt || v.scalar_type() != dt) return false;
    const int64_t B = q.size(0), Hq = q.size(1), D = q.size(3), Hkv = k.size(1), T = k.size(2);
    if (q.size(2) != 1 || T < 1 || Hkv < 1 || Hq % Hkv != 0 || D % 8 != 0 || D < 8 || D > kMaxHeadDim) return false;
    if (k.sizes() != v.sizes() || k.size(0) != B || k.size(3) != D) return false;
    if (q.stride(3) != 1 || k.stride(3) != 1 || v.stride(3) != 1) return false;
    if (!mask.defined()) return true;
    const auto mt = mask.scalar_type();
    return mask.device().is_cpu() && mask.dim() == 4 && (mask.size(0) == 1 || mask.size(0) == B) &&
           mask.size(1) == 1 && mask.size(2) == 1 && mask.size(3) == T && mask.stride(3) == 1 &&
           (mt == at::kBool || mt == at::kFloat || mt == dt);
#else
    (void)q, (void)k, (void)v, (void)mask;
    return false;
#endif
}

at::Tensor cpu_decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                                double scale) {
    GLMI_CHECK(cpu_decode_attention_takes(q, k, v, mask), "cpu_decode_attention: unsupported inputs q ", q.sizes(),
               " ", q.scalar_type(), ", k ", k.sizes(), ", v ", v.sizes());
    GLMI_KERNEL_SCOPE("glmimage::cpu_decode_attention", q, k, v);
    auto out = at::empty({q.size(0), q.size(1), 1, q.size(3)}, q.options());
#ifdef GLMI_X86_WEIGHT_LOADS
    Problem P{q.size(0), q.size(1), k.size(1), k.size(2), q.size(3),
              q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
              mask.defined() && mask.size(0) > 1 ? mask.stride(0) : 0,
              mask.defined() ? mask.scalar_type() : at::ScalarType::Undefined, static_cast<float>(scale)};
    if (q.scalar_type() == at::kFloat)
        run<float>(P, q, k, v, mask, out);
    else
        run<uint16_t>(P, q, k, v, mask, out);
#else
    (void)scale;
#endif
    return out;
}

}  // namespace glmimage::kernels
