// A weight's values in float32 (or bf16) for the products that compute in a wider dtype than the
// weight is held in: bf16 weights on CPUs without oneDNN bf16 kernels (cpu_products.h), int8 and
// fp8 e4m3 weights in products of many rows (prefill, the DiT: Linear). LibTorch's own conversions
// are slow on the CPU: on a 2-core AVX2 EPYC, 2 threads, e4m3 -> float32 ran at 0.26 G elements/s,
// int8 -> float32 at 0.61 and bf16 -> float32 at 0.5-1.0, where memory allows several G/s; at the
// real widths a bf16 prefill spent most of its time there. This kernel streams the weight once,
// sixteen values per step, split across threads by rows.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// w: bf16, int8 or fp8 e4m3 [N, K]; out: w's shape, floating point. Writes exactly what
// out.copy_(w) would, or with row_scale (float32 [N], out float32) exactly
// w.to(float32) * row_scale.view({N, 1}): one float32 rounding per element, as the CPU emulation of
// the fp8 scaled matmul makes its operand. This library's kernel writes float32 (and bf16 from int8
// and e4m3, whose every value is exact there) on a CPU with AVX2, FMA and F16C for contiguous CPU
// tensors; LibTorch's ops do the rest, with the same values.
void widen_weight_into(const at::Tensor& w, at::Tensor& out, const at::Tensor& row_scale = {});

// The same into a new tensor of dtype `to`.
at::Tensor widen_weight(const at::Tensor& w, at::ScalarType to, const at::Tensor& row_scale = {});

}  // namespace glmimage::kernels
