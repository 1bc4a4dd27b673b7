// The C++ side of launching this library's CUDA kernels (kernels/cuda/*.cu): the device, the stream
// LibTorch is queueing on, and the check of the launcher's result, in one place. Only in builds
// with the kernels (GLMI_WITH_CUDA_KERNELS).
#pragma once

#ifdef GLMI_WITH_CUDA_KERNELS
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "core/check.h"

namespace glmimage::kernels {

// Queues one of this library's kernels on t's device and LibTorch's current stream there:
// launch(stream) is a launcher of kernels/cuda/ (a cudaStream_t in, nullptr or the CUDA error's
// text out); a failed launch throws, naming the kernel.
template <typename Launch>
void launch_on(const at::Tensor& t, const char* kernel, Launch&& launch) {
    c10::cuda::CUDAGuard guard(t.device());
    void* stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
    const char* error = launch(stream);
    GLMI_CHECK(error == nullptr, "CUDA kernel ", kernel, " failed to launch: ", error ? error : "");
}

}  // namespace glmimage::kernels
#endif
