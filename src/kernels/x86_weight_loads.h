// Reading weights into AVX2 float32 vectors, for the CPU kernels that stream them (kernels::gemv,
// kernels::widen_weight, and the KV cache rows of kernels::cpu_decode_attention): bf16, float32,
// int8 and fp8 e4m3 storage, exact widening in every case; a vector's horizontal sum; and the way
// back to bf16 (rounding, packing sixteen lanes) for the loops that write bf16. Internal to
// the library; x86-64 with GCC or Clang only (GLMI_X86_WEIGHT_LOADS), each function compiled for
// AVX2 + FMA + F16C on its own (the library's flags stay generic), so callers must check
// cpu_has_avx2_fma_f16c() before running one. The same attribute and check also build and guard the
// elementwise row loops compiled for AVX2 beside their generic build (mul_add.cpp, rotary.cpp).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GLMI_X86_WEIGHT_LOADS 1

#include <c10/util/BFloat16.h>
#include <c10/util/Float8_e4m3fn.h>
#include <cpuid.h>
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#define GLMI_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace glmimage::kernels::weight_loads {

inline bool cpu_has_avx2_fma_f16c() {
    static const bool has = [] {
        // F16C from CPUID leaf 1 itself: Clang's __builtin_cpu_supports has no "f16c" before
        // Clang 17 (a compile error with Clang 14). The AVX2 check covers the OS's AVX state.
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
        return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return has;
}

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

// The sum of a vector's eight lanes (pairwise: lanes i and i + 4, then i and i + 2, then the two).
GLMI_AVX2 inline float horizontal_sum(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

// Each lane rounded to its nearest bf16 (ties to even), kept as a float whose low half is zero; a
// NaN becomes 0xFFFF0000 (a NaN), as LibTorch's AVX2 conversion writes NaN.
GLMI_AVX2 inline __m256 round_to_bf16(__m256 x) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF)));
    const __m256 rounded =
        _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
    return _mm256_blendv_ps(rounded, _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0xFFFF0000u))),
                            _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// Sixteen bf16 values held as floats (low halves zero: exact, or round_to_bf16's) -> their bits.
GLMI_AVX2 inline void store16_bf16(uint16_t* out, __m256 lo, __m256 hi) {
    const __m256i a = _mm256_srli_epi32(_mm256_castps_si256(lo), 16);
    const __m256i b = _mm256_srli_epi32(_mm256_castps_si256(hi), 16);
    // packus interleaves the 128-bit lanes: a0 b0 a1 b1 -> a0 a1 b0 b1
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), packed);
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

}  // namespace glmimage::kernels::weight_loads

#endif  // x86-64, GCC or Clang
