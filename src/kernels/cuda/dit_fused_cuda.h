// Launchers of the DiT's fused CUDA kernels (dit_fused.cu): the CUDA side of kernels::rotary_half
// and kernels::mul_add (rotary.h, mul_add.h say what each computes), on raw device pointers so
// that nvcc compiles them without LibTorch's headers. Each queues one kernel on `stream` (a
// cudaStream_t) and returns nullptr, or the CUDA error's text. T is float or fused::bf16_t.
#pragma once

#include <cstdint>

namespace glmimage::kernels::cuda {

// x [B, S, H, D] with strides (sb, ss, sh, 1); cos/sin float32 [S - skip, D]; out contiguous,
// token-major ([B, S, H, D]) or head-major ([B, H, S, D]). Tokens below `skip` are copied.
struct RopeArgs {
    int64_t B, S, H, D, sb, ss, sh, skip;
    bool head_major;
};
template <typename T>
const char* launch_rope(const T* x, const float* cos, const float* sin, T* out, const RopeArgs& a, void* stream);

// y [B, S, D] contiguous = a * g + c: a's rows contiguous with strides (sa0, sa1); g [gB, 1, D]
// (gB = B or 1); c either [B, S, D] contiguous (c_full) or [cB, 1, D] (cB = B or 1).
struct MulAddArgs {
    int64_t B, S, D, sa0, sa1;
    bool g_per_sample, c_full, c_per_sample;
    int64_t sy0, sy1;  // y's sample and token strides (its rows contiguous)
};
template <typename T>
const char* launch_mul_add(const T* a, const T* g, const T* c, T* y, const MulAddArgs& m, void* stream);

}  // namespace glmimage::kernels::cuda
