#include "kernels/cpu_bf16_attention.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/profile_scope.h"
#include "kernels/softmax_exp.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GLMI_AVX512_BF16_ATTENTION 1
#include <cpuid.h>
// GCC 12 warns of the `undefined` vectors inside its own AVX-512 intrinsics once they are inlined
// (GCC bug 105593), in the intrinsics header's lines; nothing of this file's.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
// Each function using the instructions is compiled for them on its own (the library's flags stay
// generic); callers check cpu_has_avx512_bf16_without_amx() first.
#define GLMI_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma")))
#endif

namespace glmimage::kernels {

namespace {

constexpr int64_t kMaxHeadDim = 256;  // a limit of the checks: the loops take any multiple of 32

#ifdef GLMI_AVX512_BF16_ATTENTION

constexpr int kRows = 4;         // query rows (or rows of weights) a micro-kernel keeps in registers
constexpr int64_t kKeyPad = 16;  // keys are padded to whole vectors of 16 scores

// e^x for sixteen floats x <= 88.3 (the softmax's s - max <= 0), within 2 ulp: softmax_exp.h's
// formula, as cpu_decode_attention's eight lanes compute it. Below its kMinX it gives 0, as for -inf.
GLMI_AVX512BF16 inline __m512 exp16(__m512 x) {
    using namespace softmax_exp;
    const __m512 xc = _mm512_min_ps(_mm512_set1_ps(kMaxX), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
    __m512 p = _mm512_set1_ps(kPoly[0]);
    for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kPoly[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    const __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
    const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kMinX), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
}

// Two bf16 (a pair along the dot product) as one 32-bit lane, broadcast to all sixteen.
GLMI_AVX512BF16 inline __m512bh broadcast_pair(const uint16_t* pair) {
    uint32_t bits;
    std::memcpy(&bits, pair, sizeof(bits));
    return (__m512bh)_mm512_set1_epi32(static_cast<int>(bits));
}

GLMI_AVX512BF16 inline __m512bh load_pairs(const uint32_t* p) { return (__m512bh)_mm512_loadu_si512(p); }

// What one call attends: element strides (bf16 elements) of q, k and v; the last dimension is
// contiguous.
struct Problem {
    int64_t B, Hq, Hkv, Sq, Sk, D;
    int64_t qs0, qs1, qs2, ks0, ks1, ks2, vs0, vs1, vs2;
    float scale;
    int64_t keys_padded() const { return (Sk + kKeyPad - 1) / kKeyPad * kKeyPad; }
};

// One kv head's keys and values in pairs, the layouts the two products read a vector at a time:
// keys [D/2][Skp] (each 32-bit lane two neighbouring dimensions of one key), values [Skp/2][D] (each
// lane one dimension of two neighbouring keys); the padding keys are zeros.
void pack_head(const Problem& P, const uint16_t* k, const uint16_t* v, int64_t b, int64_t h, uint32_t* keys,
               uint32_t* values) {
    const int64_t skp = P.keys_padded(), pairs = P.D / 2;
    const uint16_t* kb = k + b * P.ks0 + h * P.ks1;
    const uint16_t* vb = v + b * P.vs0 + h * P.vs1;
    for (int64_t j = 0; j < P.Sk; ++j) {
        const uint16_t* row = kb + j * P.ks2;
        for (int64_t p = 0; p < pairs; ++p) keys[p * skp + j] = uint32_t{row[2 * p]} | uint32_t{row[2 * p + 1]} << 16;
    }
    for (int64_t p = 0; p < pairs; ++p) std::fill(keys + p * skp + P.Sk, keys + (p + 1) * skp, 0u);
    for (int64_t jp = 0; jp < skp / 2; ++jp) {
        const int64_t j0 = 2 * jp, j1 = 2 * jp + 1;
        uint32_t* out = values + jp * P.D;
        for (int64_t d = 0; d < P.D; ++d) {
            const uint32_t lo = j0 < P.Sk ? vb[j0 * P.vs2 + d] : 0u, hi = j1 < P.Sk ? vb[j1 * P.vs2 + d] : 0u;
            out[d] = lo | hi << 16;
        }
    }
}

// Scores of kRows query rows against 16 C keys: s[r][c] = q_r . k_c * scale, over D/2 pairs.
template <int C>
GLMI_AVX512BF16 void scores_tile(const uint16_t* const* q, const uint32_t* keys, int64_t skp, int64_t pairs, float* s,
                                 int64_t s_stride, float scale) {
    __m512 acc[kRows][C];
    for (int r = 0; r < kRows; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
        __m512bh kv[C];
        for (int c = 0; c < C; ++c) kv[c] = load_pairs(keys + p * skp + 16 * c);
        for (int r = 0; r < kRows; ++r) {
            const __m512bh qr = broadcast_pair(q[r] + 2 * p);
            for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], qr, kv[c]);
        }
    }
    const __m512 sc = _mm512_set1_ps(scale);
    for (int r = 0; r < kRows; ++r)
        for (int c = 0; c < C; ++c) _mm512_storeu_ps(s + r * s_stride + 16 * c, _mm512_mul_ps(acc[r][c], sc));
}

// Weighted sums of kRows rows of weights (bf16, in pairs of keys) over 16 V value columns.
template <int V>
GLMI_AVX512BF16 void weigh_tile(const uint16_t* w, int64_t w_stride, const uint32_t* values, int64_t D,
                                int64_t key_pairs, __m512 (&acc)[kRows][4]) {
    for (int r = 0; r < kRows; ++r)
        for (int c = 0; c < V; ++c) acc[r][c] = _mm512_setzero_ps();
    for (int64_t jp = 0; jp < key_pairs; ++jp) {
        __m512bh vv[V];
        for (int c = 0; c < V; ++c) vv[c] = load_pairs(values + jp * D + 16 * c);
        for (int r = 0; r < kRows; ++r) {
            const __m512bh wr = broadcast_pair(w + r * w_stride + 2 * jp);
            for (int c = 0; c < V; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wr, vv[c]);
        }
    }
}

// Rows [i0, i1) of query head h in sample b (i1 - i0 <= the scratch's rows), into out [B, Sq, Hq, D].
// `scores` holds rows x Skp floats, `weights` rows x Skp bf16, `inv_sums` rows floats.
GLMI_AVX512BF16 void attend_rows(const Problem& P, const uint16_t* q, const uint32_t* keys, const uint32_t* values,
                                 int64_t b, int64_t h, int64_t i0, int64_t i1, float* scores, uint16_t* weights,
                                 float* inv_sums, uint16_t* out) {
    const int64_t skp = P.keys_padded(), pairs = P.D / 2, n = i1 - i0;
    const uint16_t* qb = q + b * P.qs0 + h * P.qs1;

    // Scores, kRows query rows at a time (the last group repeats row i0 in the missing places;
    // their scores land in the scratch's spare rows and are not used).
    for (int64_t r0 = 0; r0 < n; r0 += kRows) {
        const uint16_t* rows[kRows];
        for (int r = 0; r < kRows; ++r) rows[r] = qb + (i0 + (r0 + r < n ? r0 + r : 0)) * P.qs2;
        float* s = scores + r0 * skp;
        int64_t j = 0;
        for (; j + 64 <= skp; j += 64) scores_tile<4>(rows, keys + j, skp, pairs, s + j, skp, P.scale);
        switch ((skp - j) / 16) {
            case 3: scores_tile<3>(rows, keys + j, skp, pairs, s + j, skp, P.scale); break;
            case 2: scores_tile<2>(rows, keys + j, skp, pairs, s + j, skp, P.scale); break;
            case 1: scores_tile<1>(rows, keys + j, skp, pairs, s + j, skp, P.scale); break;
            default: break;
        }
    }

    // Per row: the weights e^(s - max) rounded to bf16, zero for the padding keys; their sum unrounded.
    const float minus_inf = -std::numeric_limits<float>::infinity();
    for (int64_t r = 0; r < n; ++r) {
        float* s = scores + r * skp;
        for (int64_t j = P.Sk; j < skp; ++j) s[j] = minus_inf;
        __m512 vmax = _mm512_set1_ps(minus_inf);
        for (int64_t j = 0; j < skp; j += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(s + j));
        const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        __m512 vsum = _mm512_setzero_ps();
        uint16_t* w = weights + r * skp;
        for (int64_t j = 0; j < skp; j += 16) {
            const __m512 p = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), m));
            vsum = _mm512_add_ps(vsum, p);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + j), (__m256i)_mm512_cvtneps_pbh(p));
        }
        inv_sums[r] = 1.0f / _mm512_reduce_add_ps(vsum);  // >= 1: the maximum's own weight is 1
    }
    // The spare rows' weights are read by the last group of rows: zeros, not stale bits.
    const int64_t n_padded = (n + kRows - 1) / kRows * kRows;
    std::fill(weights + n * skp, weights + n_padded * skp, uint16_t{0});

    // Weighted sums of the value rows, kRows rows by up to 64 value columns at a time.
    for (int64_t r0 = 0; r0 < n; r0 += kRows) {
        for (int64_t d0 = 0; d0 < P.D; d0 += 64) {
            const int V = static_cast<int>(std::min<int64_t>(4, (P.D - d0) / 16));
            __m512 acc[kRows][4];
            const uint16_t* w = weights + r0 * skp;
            switch (V) {
                case 4: weigh_tile<4>(w, skp, values + d0, P.D, skp / 2, acc); break;
                case 3: weigh_tile<3>(w, skp, values + d0, P.D, skp / 2, acc); break;
                case 2: weigh_tile<2>(w, skp, values + d0, P.D, skp / 2, acc); break;
                default: weigh_tile<1>(w, skp, values + d0, P.D, skp / 2, acc); break;
            }
            for (int r = 0; r < kRows && r0 + r < n; ++r) {
                const __m512 inv = _mm512_set1_ps(inv_sums[r0 + r]);
                uint16_t* o = out + ((b * P.Sq + i0 + r0 + r) * P.Hq + h) * P.D + d0;
                for (int c = 0; c < V; ++c)
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16 * c),
                                        (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(acc[r][c], inv)));
            }
        }
    }
}

// Query rows per piece of work: the piece's scores (rows x Skp floats) stay within 512 KB, in a
// core's L2 beside the keys it streams; at least kRows, at most 64.
int64_t rows_per_piece(int64_t skp) {
    const int64_t fit = (512 * 1024 / static_cast<int64_t>(sizeof(float))) / skp / kRows * kRows;
    return std::clamp<int64_t>(fit, kRows, 64);
}

void run(const Problem& P, const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out) {
    const int64_t skp = P.keys_padded(), head_words = skp * P.D / 2;
    const int64_t rows = rows_per_piece(skp), pieces_per_head = (P.Sq + rows - 1) / rows;
    const int64_t group = P.Hq / P.Hkv;
    // The pieces go to the threads in contiguous runs, head by head: each thread repacks the keys and
    // values of the kv heads its run reaches, once each, into its own buffers (one parallel region,
    // and no buffer of every head's: 67 MB a call at the real size's 1024²).
    parallel_for_cpu(P.B * P.Hq * pieces_per_head, 1, [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> scores, inv_sums;
        thread_local std::vector<uint16_t> weights;
        thread_local std::vector<uint32_t> keys, values;
        const size_t padded_rows = static_cast<size_t>((rows + kRows - 1) / kRows * kRows);
        scores.resize(padded_rows * static_cast<size_t>(skp));
        weights.resize(scores.size());
        inv_sums.resize(padded_rows);
        keys.resize(static_cast<size_t>(head_words));
        values.resize(keys.size());
        int64_t packed = -1;  // the kv head (b * Hkv + h) the buffers hold
        for (int64_t i = begin; i < end; ++i) {
            const int64_t piece = i % pieces_per_head, bh = i / pieces_per_head, b = bh / P.Hq, h = bh % P.Hq;
            const int64_t kv = b * P.Hkv + h / group;
            if (kv != packed) pack_head(P, k, v, b, h / group, keys.data(), values.data()), packed = kv;
            const int64_t i0 = piece * rows, i1 = std::min(P.Sq, i0 + rows);
            attend_rows(P, q, keys.data(), values.data(), b, h, i0, i1, scores.data(), weights.data(),
                        inv_sums.data(), out);
        }
    });
}

#endif  // GLMI_AVX512_BF16_ATTENTION

}  // namespace

bool cpu_has_avx512_bf16_without_amx() {
#ifdef GLMI_AVX512_BF16_ATTENTION
    static const bool has = [] {
        // __builtin_cpu_supports checks the OS keeps the AVX-512 state; the bf16 and AMX bits come
        // from CPUID leaf 7 itself (older compilers' builtins do not know them).
        if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) return false;
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
        const bool bf16 = (eax & (1u << 5)) != 0;
        if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
        const bool amx_bf16 = (edx & (1u << 22)) != 0;
        return bf16 && !amx_bf16;
    }();
    return has;
#else
    return false;
#endif
}

bool cpu_bf16_attention_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              bool causal) {
    if (mask.defined() || causal || !cpu_has_avx512_bf16_without_amx()) return false;
    if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
    for (const auto* t : {&q, &k, &v})
        if (!t->device().is_cpu() || t->scalar_type() != at::kBFloat16 || t->stride(3) != 1) return false;
    const int64_t B = q.size(0), Hq = q.size(1), D = q.size(3), Hkv = k.size(1);
    return q.size(2) >= 2 && k.size(2) >= 1 && Hkv >= 1 && Hq % Hkv == 0 && D % 32 == 0 && D >= 32 &&
           D <= kMaxHeadDim && k.sizes() == v.sizes() && k.size(0) == B && k.size(3) == D;
}

at::Tensor cpu_bf16_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
    GLMI_CHECK(cpu_bf16_attention_takes(q, k, v, {}, false), "cpu_bf16_attention: unsupported inputs q ", q.sizes(),
               " ", q.scalar_type(), ", k ", k.sizes(), ", v ", v.sizes());
    GLMI_KERNEL_SCOPE("glmimage::cpu_bf16_attention", q, k, v);
    auto out = at::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.options());
#ifdef GLMI_AVX512_BF16_ATTENTION
    const Problem P{q.size(0),   q.size(1),   k.size(1),   q.size(2),   k.size(2),
                    q.size(3),   q.stride(0), q.stride(1), q.stride(2), k.stride(0),
                    k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
                    static_cast<float>(scale)};
    run(P, static_cast<const uint16_t*>(q.data_ptr()), static_cast<const uint16_t*>(k.data_ptr()),
        static_cast<const uint16_t*>(v.data_ptr()), static_cast<uint16_t*>(out.data_ptr()));
#else
    (void)scale;
#endif
    return out.transpose(1, 2);
}

}  // namespace glmimage::kernels
