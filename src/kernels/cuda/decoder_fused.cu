// The AR decoder's fused elementwise kernels (decoder_fused_cuda.h says what each computes).
// The element formulas are fused_math.h's, shared with the CPU loops that the CPU tests hold to
// the reference bit for bit; the two functions LibTorch's CUDA ops compute that a CPU cannot
// reproduce bit for bit are taken as those ops take them: rsqrt is CUDA's rsqrtf (at::rsqrt's
// ::rsqrt on float) and silu is x / (1 + expf(-x)) (at::silu's CUDA kernel).
// One thread per output element, grid-stride: at the decode step every kernel here touches a few
// thousand elements, so its cost is the launch, not the bandwidth.
#include <cuda_runtime.h>

#include "kernels/cuda/decoder_fused_cuda.h"
#include "kernels/fused_math.h"

namespace glmimage::kernels::cuda {

using fused::bf16_t;

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
    const int64_t b = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

const char* launched() {
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

#define GLMI_GRID_STRIDE(i, n) \
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += gridDim.x * static_cast<int64_t>(blockDim.x))

__device__ __forceinline__ float inverse_rms(float mean, float eps) { return rsqrtf(fused::add(mean, eps)); }

template <typename T>
__global__ void squares_kernel(const T* x, float* sq, int64_t n) {
    GLMI_GRID_STRIDE(i, n) sq[i] = fused::square(x[i]);
}

template <typename T>
__global__ void rms_scale_kernel(const T* x, const float* mean, const T* weight, float eps, T* y, int64_t n,
                                 int64_t D) {
    GLMI_GRID_STRIDE(i, n) {
        const int64_t r = i / D, d = i - r * D;
        y[i] = fused::rms_scale(x[i], inverse_rms(mean[r], eps), weight[d]);
    }
}

template <typename T>
__global__ void residual_rms_scale_kernel(const T* residual, const T* h, const float* mean, const T* weight, float eps,
                                          T* out, float* out_sq, int64_t n, int64_t D) {
    GLMI_GRID_STRIDE(i, n) {
        const int64_t r = i / D, d = i - r * D;
        const T y = fused::sum(residual[i], fused::rms_scale(h[i], inverse_rms(mean[r], eps), weight[d]));
        out[i] = y;
        out_sq[i] = fused::square(y);
    }
}

// Element (b, s, head, d) over the hq query heads, then the hkv key heads, then the hkv value heads.
template <typename T>
__global__ void rotary_qkv_kernel(const T* q, const T* k, const T* v, const T* cos, const T* sin, T* q_out,
                                  T* cache_k, T* cache_v, RotaryQkvArgs a, int64_t n) {
    const int64_t heads = a.hq + 2 * a.hkv, half = a.rd / 2;
    const int64_t base = a.slot ? *a.slot : a.slot0;
    GLMI_GRID_STRIDE(i, n) {
        const int64_t d = i % a.D;
        int64_t rest = i / a.D;
        const int64_t head = rest % heads;
        rest /= heads;
        const int64_t s = rest % a.S, b = rest / a.S;
        const int64_t token = b * a.S + s;
        if (head >= a.hq + a.hkv) {  // value: copied into its cache slot
            const int64_t h = head - a.hq - a.hkv;
            cache_v[((b * a.hkv + h) * a.cap + base + s) * a.D + d] = v[token * a.v_row + h * a.D + d];
            continue;
        }
        const bool is_q = head < a.hq;
        const int64_t h = is_q ? head : head - a.hq;
        const T* x = is_q ? q + token * a.q_row + h * a.D : k + token * a.k_row + h * a.D;
        T y = x[d];
        if (d < a.rd) {
            const T partner = d < half ? fused::negate(x[d + half]) : x[d - half];
            const int64_t c = b * a.cs_b + s * a.cs_s + d;
            y = fused::rotary(x[d], partner, cos[c], sin[c]);
        }
        if (is_q)
            q_out[((b * a.hq + h) * a.S + s) * a.D + d] = y;
        else
            cache_k[((b * a.hkv + h) * a.cap + base + s) * a.D + d] = y;
    }
}

template <typename T>
__global__ void silu_mul_kernel(const T* gate_up, T* act, int64_t n, int64_t I) {
    GLMI_GRID_STRIDE(i, n) {
        const int64_t r = i / I, j = i - r * I;
        const float g = fused::to_float(gate_up[r * 2 * I + j]);
        const T silu = fused::from_float<T>(__fdiv_rn(g, fused::add(1.0f, expf(-g))));
        act[i] = fused::from_float<T>(fused::mul(fused::to_float(gate_up[r * 2 * I + I + j]), fused::to_float(silu)));
    }
}

}  // namespace

template <typename T>
const char* launch_squares(const T* x, float* sq, int64_t rows, int64_t D, void* stream) {
    const int64_t n = rows * D;
    squares_kernel<T><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, sq, n);
    return launched();
}

template <typename T>
const char* launch_rms_scale(const T* x, const float* mean, const T* weight, float eps, T* y, int64_t rows, int64_t D,
                             void* stream) {
    const int64_t n = rows * D;
    rms_scale_kernel<T><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, mean, weight, eps, y, n, D);
    return launched();
}

template <typename T>
const char* launch_residual_rms_scale(const T* residual, const T* h, const float* mean, const T* weight, float eps,
                                      T* out, float* out_sq, int64_t rows, int64_t D, void* stream) {
    const int64_t n = rows * D;
    residual_rms_scale_kernel<T><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        residual, h, mean, weight, eps, out, out_sq, n, D);
    return launched();
}

template <typename T>
const char* launch_rotary_qkv(const T* q, const T* k, const T* v, const T* cos, const T* sin, T* q_out, T* cache_k,
                              T* cache_v, const RotaryQkvArgs& a, void* stream) {
    const int64_t n = a.B * a.S * (a.hq + 2 * a.hkv) * a.D;
    rotary_qkv_kernel<T><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        q, k, v, cos, sin, q_out, cache_k, cache_v, a, n);
    return launched();
}

template <typename T>
const char* launch_silu_mul(const T* gate_up, T* act, int64_t rows, int64_t I, void* stream) {
    const int64_t n = rows * I;
    silu_mul_kernel<T><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(gate_up, act, n, I);
    return launched();
}

#define GLMI_INSTANTIATE(T)                                                                                         \
    template const char* launch_squares<T>(const T*, float*, int64_t, int64_t, void*);                              \
    template const char* launch_rms_scale<T>(const T*, const float*, const T*, float, T*, int64_t, int64_t, void*); \
    template const char* launch_residual_rms_scale<T>(const T*, const T*, const float*, const T*, float, T*, float*, \
                                                      int64_t, int64_t, void*);                                     \
    template const char* launch_rotary_qkv<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*,         \
                                              const RotaryQkvArgs&, void*);                                         \
    template const char* launch_silu_mul<T>(const T*, T*, int64_t, int64_t, void*);

GLMI_INSTANTIATE(float)
GLMI_INSTANTIATE(bf16_t)

}  // namespace glmimage::kernels::cuda
