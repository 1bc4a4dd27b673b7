// y = x W^T (+ b) for inputs of a few rows on the CPU: the AR decode step, where every weight is
// read once per token and the speed is the memory's. LibTorch reads a one-row product at about
// half the memory bandwidth on the CPUs measured here (its bf16 gemm and oneDNN's, and MKL's fp32
// gemv on AMD), so these products have a kernel of their own: each weight row streamed once, in
// fp32 arithmetic, split across threads by output rows.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// The most input rows gemv() takes: beyond a few, a GEMM's cache reuse wins.
constexpr int64_t kGemvMaxRows = 4;

// Whether gemv() runs this product: x [M, K] with M <= kGemvMaxRows and W [N, K] contiguous,
// both on the CPU, both bfloat16 or both float32, bias (if defined) contiguous [N] of W's dtype,
// and the CPU has AVX2 and FMA (checked once at run time; builds for other architectures say no).
bool gemv_takes(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias);

// y [M, N] in x's dtype. Products are summed in float32 (as LibTorch's bf16 gemm does) and rounded
// once to bf16 with the bias added; the summation order is this kernel's own, so results equal
// LibTorch's up to float32 rounding. Requires gemv_takes().
at::Tensor gemv(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias);

}  // namespace glmimage::kernels
