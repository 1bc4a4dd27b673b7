// The AR decoder's fused elementwise kernels (decoder_fused_cuda.h says what each computes).
// The element formulas are fused_math.h's, shared with the CPU loops that the CPU tests hold to
// the reference bit for bit; the two functions LibTorch's CUDA ops compute that a CPU cannot
// reproduce bit for bit are taken as those ops take them: rsqrt is CUDA's rsqrtf (at::rsqrt's
// ::rsqrt on float) and silu is x / (1 + expf(-x)) (at::silu's CUDA kernel).
// The kernels alone (no launch syntax): decoder_fused.cu launches them, and
// tests/unit/test_cuda_emulated.cpp runs them on the CPU, block by block, to check their indexing.
#pragma once

#include "kernels/cuda/decoder_fused_cuda.h"
#include "kernels/cuda/grid.cuh"
#include "kernels/fused_math.h"

namespace glmimage::kernels::cuda {

using fused::bf16_t;

__device__ __forceinline__ float inverse_rms(float mean, float eps) { return rsqrtf(fused::add(mean, eps)); }

template <typename T>
__global__ void squares_kernel(const T* x, float* sq, int64_t rows, int64_t D) {
    GLMI_FOR_ROWS(r, rows) {
        GLMI_FOR_COLS(d, D) sq[r * D + d] = fused::square(x[r * D + d]);
    }
}

template <typename T>
__global__ void rms_scale_kernel(const T* x, const float* mean, const T* weight, float eps, T* y, int64_t rows,
                                 int64_t D) {
    GLMI_FOR_ROWS(r, rows) {
        const float inv = inverse_rms(mean[r], eps);
        GLMI_FOR_COLS(d, D) y[r * D + d] = fused::rms_scale(x[r * D + d], inv, weight[d]);
    }
}

template <typename T>
__global__ void residual_rms_scale_kernel(const T* residual, const T* h, const float* mean, const T* weight, float eps,
                                          T* out, float* out_sq, int64_t rows, int64_t D) {
    GLMI_FOR_ROWS(r, rows) {
        const float inv = inverse_rms(mean[r], eps);
        GLMI_FOR_COLS(d, D) {
            const int64_t i = r * D + d;
            const T y = fused::sum(residual[i], fused::rms_scale(h[i], inv, weight[d]));
            out[i] = y;
            out_sq[i] = fused::square(y);
        }
    }
}

// Row (b, s, head) over the hq query heads, then the hkv key heads, then the hkv value heads.
template <typename T>
__global__ void rotary_qkv_kernel(const T* q, const T* k, const T* v, const T* cos, const T* sin, T* q_out,
                                  T* cache_k, T* cache_v, RotaryQkvArgs a) {
    const int64_t heads = a.hq + 2 * a.hkv, half = a.rd / 2, rows = a.B * a.S * heads;
    const int64_t base = a.slot ? *a.slot : a.slot0;
    GLMI_FOR_ROWS(r, rows) {
        const int64_t head = r % heads, token = r / heads, s = token % a.S, b = token / a.S;
        if (head >= a.hq + a.hkv) {  // value: copied into its cache slot
            const int64_t h = head - a.hq - a.hkv;
            const T* x = v + token * a.v_row + h * a.D;
            T* y = cache_v + ((b * a.hkv + h) * a.cap + base + s) * a.D;
            GLMI_FOR_COLS(d, a.D) y[d] = x[d];
            continue;
        }
        const bool is_q = head < a.hq;
        const int64_t h = is_q ? head : head - a.hq;
        const T* x = is_q ? q + token * a.q_row + h * a.D : k + token * a.k_row + h * a.D;
        T* y = is_q ? q_out + ((b * a.hq + h) * a.S + s) * a.D : cache_k + ((b * a.hkv + h) * a.cap + base + s) * a.D;
        const T* c = cos + b * a.cs_b + s * a.cs_s;
        const T* sn = sin + b * a.cs_b + s * a.cs_s;
        GLMI_FOR_COLS(d, a.D) {
            if (d < a.rd) {
                const T partner = d < half ? fused::negate(x[d + half]) : x[d - half];
                y[d] = fused::rotary(x[d], partner, c[d], sn[d]);
            } else {
                y[d] = x[d];
            }
        }
    }
}

template <typename T>
__global__ void silu_mul_kernel(const T* gate_up, T* act, int64_t rows, int64_t I) {
    GLMI_FOR_ROWS(r, rows) {
        const T* gate = gate_up + r * 2 * I;
        const T* up = gate + I;
        GLMI_FOR_COLS(j, I) {
            const float g = fused::to_float(gate[j]);
            const T silu = fused::from_float<T>(__fdiv_rn(g, fused::add(1.0f, expf(-g))));
            act[r * I + j] = fused::product(up[j], silu);
        }
    }
}

}  // namespace glmimage::kernels::cuda
