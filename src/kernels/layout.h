// NCHW <-> NHWC copies of image tensors on the CPU (the VAE's convolutions run on NHWC input,
// layers/conv2d.cpp). LibTorch's own (x.contiguous(memory_format)) walks one side element by
// element with a stride of C or H*W: for a bf16 [1, 512, 256, 256] tensor, 2 threads, 53-66 ms
// to channels-last and 131-142 ms back (test_kernels prints both); these take 20-28 ms, of which
// about 14 are the first touch of the new tensor's pages (a clone of it takes that). A copy moves
// bits only: the result equals LibTorch's.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// A 4-D CPU tensor with channels-last strides (N, H, W, C in memory), the values of x.
at::Tensor to_channels_last(const at::Tensor& x);

// A 4-D CPU tensor with contiguous (N, C, H, W) strides, the values of x.
at::Tensor to_channels_first(const at::Tensor& x);

}  // namespace glmimage::kernels
