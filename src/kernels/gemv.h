// y = x W^T (+ b) for inputs of a few rows on the CPU: the AR decode step, where every weight is
// read once per token and the speed is the memory's. LibTorch reads a one-row product at about
// half the memory bandwidth on the CPUs measured here (its bf16 gemm and oneDNN's, and MKL's fp32
// gemv on AMD; its int8 _weight_int8pack_mm at 0.59 of it on a 2-core AVX2 EPYC), so these
// products have a kernel of their own: each weight row streamed once, in fp32 arithmetic, split
// across threads by output rows.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// The most input rows gemv() takes: beyond a few, a GEMM's cache reuse wins.
constexpr int64_t kGemvMaxRows = 4;

// Whether gemv() runs this product: x [M, K] with M <= kGemvMaxRows and W [N, K] contiguous, all
// on the CPU, and the CPU has AVX2, FMA and F16C (checked once at run time; builds for other
// architectures say no). W is x's dtype (bfloat16 or float32) with `scale` undefined; or int8
// with `scale` [N] in x's dtype, one per output row (Linear::quantize_int8's weight-only format:
// the weight is w8 * scale); or fp8 e4m3 the same way with x and `scale` float32
// (Linear::quantize_fp8's weights; the caller quantizes x, whose values times 256 must stay
// finite: at most 448 there). bias (if defined) is contiguous [N] in x's dtype.
bool gemv_takes(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& scale = {});

// y [M, N] in x's dtype: y = (x W^T) * scale + bias. Products are summed in float32 (as LibTorch's
// bf16 gemm and its _weight_int8pack_mm do), scaled, the bias added and the result rounded once
// to x's dtype; the summation order is this kernel's own, so results equal LibTorch's up to float32
// rounding (and, for int8, up to LibTorch's second rounding when it adds the bias apart).
// Requires gemv_takes().
at::Tensor gemv(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& scale = {});

}  // namespace glmimage::kernels
