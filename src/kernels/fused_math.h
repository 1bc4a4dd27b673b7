// The element formulas of the fused kernels, shared by their CPU loops (decoder_fused.cpp,
// rotary.cpp, mul_add.cpp) and their CUDA kernels (cuda/*.cu), so that the CPU tests,
// which hold the CPU loops to the reference's op sequences bit for bit, check the very arithmetic
// the GPU runs. Each formula computes in float32 and rounds to the storage type exactly where
// LibTorch's separate ops round (every op reads its inputs as float, computes, and rounds its
// result to the tensor's dtype), with no fused multiply-add: the CPU file is built with
// -ffp-contract=off and the device side uses the round-to-nearest intrinsics.
// No LibTorch header: nvcc compiles this without them.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define GLMI_HD __host__ __device__ __forceinline__
#else
#define GLMI_HD inline
#endif

namespace glmimage::kernels::fused {

// bfloat16 storage: the bit layout of c10::BFloat16 and __nv_bfloat16.
struct bf16_t {
    uint16_t bits;
};

GLMI_HD float bits_to_float(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#endif
}

GLMI_HD uint32_t float_to_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
#endif
}

// Storage <-> float. Templates (specialized per storage type) so that a storage type of the CPU's
// alone (c10::Half: fused_math_cpu.h) can be added after the formulas below.
template <typename T>
GLMI_HD float to_float(T x);

template <>
GLMI_HD float to_float<float>(float x) {
    return x;
}

template <>
GLMI_HD float to_float<bf16_t>(bf16_t x) {
    return bits_to_float(static_cast<uint32_t>(x.bits) << 16);
}

template <typename T>
GLMI_HD T from_float(float f);

template <>
GLMI_HD float from_float<float>(float f) {
    return f;
}

// Round to nearest, ties to even, as c10::BFloat16's conversion does (NaN becomes its quiet NaN).
template <>
GLMI_HD bf16_t from_float<bf16_t>(float f) {
    if (f != f) return bf16_t{0x7FC0};
    const uint32_t u = float_to_bits(f);
    return bf16_t{static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}

GLMI_HD float mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

GLMI_HD float add(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

// x * x in float: x.to(float32).pow(2).
template <typename T>
GLMI_HD float square(T x) {
    const float f = to_float(x);
    return mul(f, f);
}

// a * b and a + b in the storage type: LibTorch's mul and add of two T tensors.
template <typename T>
GLMI_HD T product(T a, T b) {
    return from_float<T>(mul(to_float(a), to_float(b)));
}

template <typename T>
GLMI_HD T sum(T a, T b) {
    return from_float<T>(add(to_float(a), to_float(b)));
}

// RMSNorm after its mean, given r = rsqrt(mean(x^2) + eps):
//   weight * (x.to(float32) * r).to(dtype)
template <typename T>
GLMI_HD T rms_scale(T x, float r, T weight) {
    return product(weight, from_float<T>(mul(to_float(x), r)));
}

// -x in the storage type (exact).
template <typename T>
GLMI_HD T negate(T x) {
    return from_float<T>(-to_float(x));
}

// One rotated channel: x * cos + rotate_half(x) * sin, each product rounded, then the sum.
// `partner` is rotate_half(x) at this channel: -x[i + half] below half, x[i - half] above.
template <typename T>
GLMI_HD T rotary(T x, T partner, T cos, T sin) {
    return sum(product(x, cos), product(partner, sin));
}

// The DiT's RoPE channel with float32 tables: (x.float() * cos + rotate_half(x).float() * sin).to(T),
// the products and the sum rounded in float32, the result once to T. `partner` is rotate_half(x)
// at this channel as a float: -x[d + half] below half, x[d - half] above.
template <typename T>
GLMI_HD T rope_channel(T x, float partner, float cos, float sin) {
    return from_float<T>(add(mul(to_float(x), cos), mul(partner, sin)));
}

// a * g + c as LibTorch's mul then add: the product rounded to T before the sum.
template <typename T>
GLMI_HD T mul_add(T a, T g, T c) {
    return sum(product(a, g), c);
}

}  // namespace glmimage::kernels::fused
