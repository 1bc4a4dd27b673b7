// The C++ side of launching this library's CUDA kernels (kernels/cuda/*.cu): the stream LibTorch
// is queueing on for a tensor's device, and the check of a launcher's result. Only in builds with
// the kernels (GLMI_WITH_CUDA_KERNELS).
#pragma once

#ifdef GLMI_WITH_CUDA_KERNELS
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "core/check.h"

namespace glmimage::kernels {

// LibTorch's current stream on t's device, as the launchers take it (a cudaStream_t).
inline void* current_stream(const at::Tensor& t) {
    return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// A launcher's result: nullptr, or the CUDA error's text.
inline void check_launch(const char* error, const char* kernel) {
    GLMI_CHECK(error == nullptr, "CUDA kernel ", kernel, " failed to launch: ", error ? error : "");
}

}  // namespace glmimage::kernels
#endif
