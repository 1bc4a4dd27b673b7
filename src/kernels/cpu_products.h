// The CPU's matrix products and convolutions where bf16 has no kernels: every Linear and Conv2d
// call runs through here.
//
// LibTorch computes bf16 products on the CPU with oneDNN's bf16 kernels where oneDNN has them for
// the CPU (x86 with AVX-512 BW/VL/DQ or AVX-NE-CONVERT; Arm with bf16). Elsewhere, on x86 with AVX2
// only (AMD Zen 2 and 3, Intel before Skylake-SP), it falls back to generic loops, measured on a
// 2-core EPYC (Zen 3) with 1 thread: a 300x512x2048 linear at 8 GFLOP/s against 63 in float32, a
// 128 -> 128 3x3 convolution at 64x64 at 0.33 GFLOP/s against 47 (a small-preset VAE decode at
// 128x128 took 23 s). On such CPUs the products are computed in float32 from the bf16 values
// (widening is exact) and rounded to bf16 once. LibTorch's loops accumulate in float32 too, so the
// results differ from its bf16 call's by summation order: there, 1 bf16 step in about 0.02 % of
// the elements. Where the CPU has the kernels, and for every other dtype and device, these are
// LibTorch's own calls.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// Whether bf16 products of CPU tensors run in float32 here: LibTorch's own rule for whether it
// has oneDNN bf16 kernels on this CPU (mkldnn::_is_mkldnn_bf16_supported), asked once.
bool cpu_bf16_products_in_float32();

// The dtype a product of `x` is computed in: float32 for a CPU bf16 x where the above holds,
// otherwise x's own; the same for a tensor of `dtype` on `device`.
at::ScalarType product_compute_dtype(const at::Tensor& x);
at::ScalarType product_compute_dtype(const at::Device& device, at::ScalarType dtype);

// The row count from which LibTorch's CPU linear (MKL's float32 GEMM on x86; oneDNN's bf16 kernels)
// gives a row the same bits whatever other rows the call holds, where it does at all. Measured on
// an AVX2 EPYC (Zen 3), float32: rows of 12 to 257 alone against the same rows at the ends of a call
// 513 rows longer, widths 64 to 16384: equal; below 12 rows it takes other kernels (1-3, 5-7 and
// 9-11 rows differed). On an AVX-512 Xeon it does not hold at any row count in float32
// (products_keep_row_bits finds it so). oneDNN's bf16 kernels on an AVX-512 EPYC (Zen 4, no AMX)
// kept them from 2 rows up; 1 row parted at 4096 -> 16384 (a matrix-vector kernel).
constexpr int64_t kRowBitsMinRows = 12;

// Whether products computed for `dtype` on `device` give each row, in a call of kRowBitsMinRows
// rows or more, the same bits whatever the call's other rows: the CPU, products computed in float32
// or bf16 (product_compute_dtype), where LibTorch's linear is found so here with the current thread
// count (probed once per thread count and computing dtype: products of 557 rows at three widths
// against slices of 12 to 257 of their rows, about 5 GFLOP where every slice agrees). Where it
// holds, rows of separate products may share one call (the DiT's two CFG passes, its
// feed-forward's image and text rows) with the same results; where not, they keep the reference's
// calls.
bool products_keep_row_bits(const at::Device& device, at::ScalarType dtype);

// at::linear(x, w, b), computed in product_compute_dtype(x). In float32 the weight is widened a
// block of output features at a time (at most 32 MiB of float32 each), so a real-size weight is
// not copied whole. It is widened again at every call rather than kept widened, which would double
// the weights' memory: a pass over them (2 bytes read, 4 written and read back per weight) against
// a product of 2 x rows FLOPs per weight, small beside it wherever rows are many (the DiT's
// thousands of tokens; fewer than 5 rows take kernels::gemv, which reads bf16 directly).
// w may also be int8 (Linear::quantize_int8's values, the caller applying the scales): its values
// widened exactly, straight to float32 where the product is computed there (a CPU float32 or
// bf16-in-float32 x), to x's dtype otherwise.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

// y [M, N] (any dtype) = xf W^T (+ b) computed in float32: xf float32 [M, K]; W [N, K] in bf16,
// int8 or fp8 e4m3, widened exactly (kernels::widen_weight; times row_scale, float32 [N], where
// given) a block of output features at a time into one float32 buffer of at most 32 MiB; the bias
// added in float32; each result rounded once to y's dtype. kernels::linear's float32 path, and the
// CPU's fp8 product of many rows (Linear).
void widened_linear_into(const at::Tensor& xf, const at::Tensor& w, const at::Tensor& row_scale,
                         const at::Tensor& b, at::Tensor& y);

// at::einsum(equation, operands), computed in product_compute_dtype(operands[0]) and rounded back to
// its dtype: the vision quantizer's code distances, a [patches, 2048] x [2048, 16384] product at
// real size (a 1024x1024 condition image: 4096 patches, 275 GFLOP), which LibTorch's bf16 loops
// ran at 21 GFLOP/s on the 2-core EPYC above (2 threads) against 118 widened. The operands are
// widened whole (at real size the codebook: 128 MiB of float32, for the one call per image).
at::Tensor einsum(c10::string_view equation, at::TensorList operands);

// at::conv2d(x, w, b, stride, padding), computed in product_compute_dtype(x).
at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t stride, at::IntArrayRef padding);

}  // namespace glmimage::kernels
