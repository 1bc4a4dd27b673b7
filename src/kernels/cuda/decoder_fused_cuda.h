// Launchers of the AR decoder's fused CUDA kernels (decoder_fused.cu), on raw device pointers so
// that nvcc compiles them without LibTorch's headers. decoder_fused.cpp checks the tensors and
// calls these; each queues one kernel on `stream` (a cudaStream_t) and returns nullptr, or the
// CUDA error's text when the launch failed. T is float or fused::bf16_t; every row is contiguous.
#pragma once

#include <cstdint>

namespace glmimage::kernels::cuda {

// sq[i] = float(x[i])^2 for rows x D elements.
template <typename T>
const char* launch_squares(const T* x, float* sq, int64_t rows, int64_t D, void* stream);

// y[r, :] = weight * (x[r, :] * rsqrt(mean[r] + eps)).to(T)
template <typename T>
const char* launch_rms_scale(const T* x, const float* mean, const T* weight, float eps, T* y, int64_t rows, int64_t D,
                             void* stream);

// out[r, :] = residual[r, :] + weight * (h[r, :] * rsqrt(mean[r] + eps)).to(T); out_sq = float(out)^2
template <typename T>
const char* launch_residual_rms_scale(const T* residual, const T* h, const float* mean, const T* weight, float eps,
                                      T* out, float* out_sq, int64_t rows, int64_t D, void* stream);

// The attention inputs of one layer from its q/k/v projections [B, S, heads * D] (each token's
// row q_row / k_row / v_row elements after the one before: views of one fused projection share
// its row length): q rotated into
// q_out [B, hq, S, D]; k rotated and v copied into the caches [B, hkv, cap, D] at slots
// (slot ? *slot : slot0) + s. cos/sin [B, S, rd] with strides (cs_b, cs_s) and the last contiguous.
struct RotaryQkvArgs {
    int64_t B, S, hq, hkv, D, rd, cap;
    int64_t q_row, k_row, v_row, cs_b, cs_s;
    const int64_t* slot;  // device, or nullptr
    int64_t slot0;
};
template <typename T>
const char* launch_rotary_qkv(const T* q, const T* k, const T* v, const T* cos, const T* sin, T* q_out, T* cache_k,
                              T* cache_v, const RotaryQkvArgs& a, void* stream);

// act[r, j] = up[r, j] * silu(gate[r, j]) of gate_up [rows, 2I] (gate first, then up), act [rows, I].
template <typename T>
const char* launch_silu_mul(const T* gate_up, T* act, int64_t rows, int64_t I, void* stream);

}  // namespace glmimage::kernels::cuda
