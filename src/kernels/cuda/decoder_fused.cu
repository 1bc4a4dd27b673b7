// Launchers of decoder_fused_kernels.cuh (decoder_fused_cuda.h says what each computes).
#include <cuda_runtime.h>

#include "kernels/cuda/decoder_fused_kernels.cuh"

namespace glmimage::kernels::cuda {

template <typename T>
const char* launch_squares(const T* x, float* sq, int64_t rows, int64_t D, void* stream) {
    const RowGrid g = row_grid(rows, D);
    squares_kernel<T><<<g.blocks, g.threads, 0, static_cast<cudaStream_t>(stream)>>>(x, sq, rows, D);
    return launched();
}

template <typename T>
const char* launch_rms_scale(const T* x, const float* mean, const T* weight, float eps, T* y, int64_t rows, int64_t D,
                             void* stream) {
    const RowGrid g = row_grid(rows, D);
    rms_scale_kernel<T><<<g.blocks, g.threads, 0, static_cast<cudaStream_t>(stream)>>>(x, mean, weight, eps, y, rows, D);
    return launched();
}

template <typename T>
const char* launch_residual_rms_scale(const T* residual, const T* h, const float* mean, const T* weight, float eps,
                                      T* out, float* out_sq, int64_t rows, int64_t D, void* stream) {
    const RowGrid g = row_grid(rows, D);
    residual_rms_scale_kernel<T><<<g.blocks, g.threads, 0, static_cast<cudaStream_t>(stream)>>>(
        residual, h, mean, weight, eps, out, out_sq, rows, D);
    return launched();
}

template <typename T>
const char* launch_rotary_qkv(const T* q, const T* k, const T* v, const T* cos, const T* sin, T* q_out, T* cache_k,
                              T* cache_v, const RotaryQkvArgs& a, void* stream) {
    const RowGrid g = row_grid(a.B * a.S * (a.hq + 2 * a.hkv), a.D);
    rotary_qkv_kernel<T><<<g.blocks, g.threads, 0, static_cast<cudaStream_t>(stream)>>>(q, k, v, cos, sin, q_out,
                                                                                        cache_k, cache_v, a);
    return launched();
}

template <typename T>
const char* launch_silu_mul(const T* gate_up, T* act, int64_t rows, int64_t I, void* stream) {
    const RowGrid g = row_grid(rows, I);
    silu_mul_kernel<T><<<g.blocks, g.threads, 0, static_cast<cudaStream_t>(stream)>>>(gate_up, act, rows, I);
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
