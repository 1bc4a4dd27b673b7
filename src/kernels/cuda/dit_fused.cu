// Launchers of dit_fused_kernels.cuh (dit_fused_cuda.h says what each computes).
#include <cuda_runtime.h>

#include "kernels/cuda/dit_fused_kernels.cuh"

namespace glmimage::kernels::cuda {

template <typename T>
const char* launch_rope(const T* x, const float* cos, const float* sin, T* out, const RopeArgs& a, void* stream) {
    const RowGrid g = row_grid(a.B * a.S * a.H, a.D);
    rope_kernel<T><<<g.blocks, g.threads, 0, static_cast<cudaStream_t>(stream)>>>(x, cos, sin, out, a);
    return launched();
}

template <typename T>
const char* launch_mul_add(const T* a, const T* g, const T* c, T* y, const MulAddArgs& m, void* stream) {
    const RowGrid grid = row_grid(m.B * m.S, m.D);
    mul_add_kernel<T><<<grid.blocks, grid.threads, 0, static_cast<cudaStream_t>(stream)>>>(a, g, c, y, m);
    return launched();
}

#define GLMI_INSTANTIATE(T)                                                                                \
    template const char* launch_rope<T>(const T*, const float*, const float*, T*, const RopeArgs&, void*); \
    template const char* launch_mul_add<T>(const T*, const T*, const T*, T*, const MulAddArgs&, void*);

GLMI_INSTANTIATE(float)
GLMI_INSTANTIATE(bf16_t)

}  // namespace glmimage::kernels::cuda
