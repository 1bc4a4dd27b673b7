// Attention of many query tokens in bf16 on an x86-64 CPU with AVX-512 bf16 dot products and no
// AMX: the DiT's joint attention (and the vision encoder's), where LibTorch's SDPA is slow.
//
// Profile-led (perf and LibTorch's profiler on a 2-core AMD EPYC, Zen 4, AVX-512 bf16, no AMX):
// SDPA's CPU flash kernel hands its bf16 block products to MKL's bf16 GEMM, which on that CPU takes
// its generic path (widening to float32, copying, MKL's sgemm): 0.23-0.27 of the bf16 GEMM rate
// oneDNN reaches for the step's other products, 15-21 % of a bf16 DiT step at the small preset and
// about a quarter of one at the real size's 1024². On a CPU with AMX, SDPA runs oneDNN's AMX
// kernels instead, and stays. This kernel multiplies with AVX-512 bf16 dot products (vdpbf16ps,
// each pair of bf16 products summed into float32), four query rows against 64 keys, or four rows
// of weights against 64 value columns, at a time in registers, from keys and values repacked once
// per head into pairs.
//
// The arithmetic is the flash kernel's, not its bits: each score q.k summed in float32 (the bf16
// products are exact), times the scale; p = exp(s - max) in float32 over the row's exact maximum,
// summed unrounded; each p rounded to bf16 (nearest even) before it weighs its value row, as the
// flash kernel multiplies P.V in bf16; the weighted sum divided by the sum (a product by its
// reciprocal) and rounded once to bf16. The order of the sums and the exp differ (this exp is
// within 2 ulp), so outputs differ from SDPA's by one bf16 step in some elements, as accurate as
// SDPA's against the same attention in float64 (test_cpu_bf16_attention measures both; the DiT,
// decoder and end-to-end parity tests hold the model's outputs to the reference's).
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// Whether this CPU has the kernel: x86-64 (GCC or Clang), AVX-512 F + BW + bf16, and no AMX-bf16.
bool cpu_has_avx512_bf16_without_amx();

// Whether cpu_bf16_attention() runs for these: this CPU has it; q [B, Hq, Sq, D], k and v
// [B, Hkv, Sk, D] (Sq >= 2, Sk >= 1, Hq a multiple of Hkv), all bf16 on the CPU with their last
// dimension contiguous, D a multiple of 32 up to 256; no mask, not causal.
bool cpu_bf16_attention_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              bool causal);

// softmax(q k^T * scale) v as said above: [B, Hq, Sq, D], bf16, a transposed view of a contiguous
// [B, Sq, Hq, D] (as SDPA's CPU kernel returns it: the models' transpose back to rows is free).
at::Tensor cpu_bf16_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

}  // namespace glmimage::kernels
