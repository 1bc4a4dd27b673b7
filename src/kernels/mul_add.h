// round(round(a * g) + c) in one pass: the DiT's modulation (norm * (1 + scale) + shift) and its
// gated residuals (x + out * gate), where g (and the shift) are one vector per sample broadcast
// over the tokens. As LibTorch ops each is two passes over [B, S, D] tensors into fresh memory
// (the muls and adds took 6.6 s of an 82 s denoising step at the real size and 1024x1024 on this
// 2-core CPU); one pass takes 19-20 ms where the two took 29-32 at [1, 4096, 4096] in bf16
// (test_kernels prints both; the rest is the memory traffic and the new tensor's first touch,
// which explicit vector code did not shorten). Each element
// here is computed as LibTorch's separate mul and add compute it: in float32, each result rounded
// to the tensors' dtype before the next op uses it, no fused multiply-add. The same bits.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// Whether mul_add() runs these (and the switch of fused_switch.h is on): tensors of one dtype and
// device, the CPU (float32, bfloat16 or float16) or, where this build has the CUDA kernels
// (kernels/cuda/dit_fused.cu), a GPU (float32 or bfloat16); a [B, S, D] whose rows are contiguous
// (any sample and token strides: the image tokens' slice of the attention output is taken without
// a copy); g contiguous [B, 1, D] or [1, 1, D]; c contiguous, either a's shape or g's kind of vector.
bool mul_add_takes(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c);

// a * g + c as LibTorch computes (a * g) + c, contiguous [B, S, D].
at::Tensor mul_add(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c);

// Whether mul_add_into() runs these: mul_add_takes(a, g, c), and y of a's shape, dtype and device
// with its rows contiguous (any sample and token strides: rows of a longer sequence).
bool mul_add_into_takes(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c, const at::Tensor& y);

// The same written into y, where the next op reads it (the DiT's [text; image] rows of each
// sample in one buffer) instead of into a new tensor that is then copied there. y must not
// overlap a, g or c.
void mul_add_into(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c, const at::Tensor& y);

}  // namespace glmimage::kernels
