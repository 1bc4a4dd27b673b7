// One query token per head attending over a KV cache on the CPU: the AR decoder's step.
//
// Profile-led: LibTorch's SDPA took 30-40 us a call at the small preset's decode step (8 query
// heads over 2 KV heads of 64, 40-350 keys, bf16 or float32, 2 threads, the 2-core AVX2 EPYC): 13 %
// of a bf16 token (0.73 of its memory roofline), for about 0.4 MFLOP. Its CPU flash kernel sets up
// blocks of 64 queries and 512 keys, their buffers and a parallel region, and multiplies blocks
// through its GEMM, for what here is a few dot products per key. This loop reads each key and
// value row once per group of query heads sharing it (grouped-query attention), in float32.
//
// The arithmetic is that flash kernel's, not its bits: each score q.k in float32 (bf16 values
// widened exactly), times the scale, plus the mask; p = exp(s - max) in float32, summed
// unrounded; for bf16, each p rounded to bf16 before it weighs its value row (as the flash kernel
// multiplies P.V in bf16); the weighted sum divided by the sum (a product by its reciprocal) and
// rounded once to the output's dtype. The order of the sums and the exp differ (this exp is within
// 2 ulp of the true value), so results differ from SDPA's in the last bits: float32 outputs by
// about 1e-7 relative, bf16 ones by one step in 1-18 % of the outputs, as accurate as SDPA's
// against the same attention in float64 (test_kernels measures both;
// test_ar_parity holds the decoder's logits to the reference's within its tolerances).
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// Whether cpu_decode_attention() runs for these: an x86-64 CPU with AVX2 and FMA; q [B, Hq, 1, D],
// k and v [B, Hkv, T, D] (T >= 1, Hq a multiple of Hkv), one dtype, float32 or bf16, on the CPU,
// each with its last dimension contiguous, D a multiple of 8 up to 256; the mask undefined, or
// bool (true = attend) or additive (q's dtype or float32), shaped [B or 1, 1, 1, T] with its last
// dimension contiguous.
bool cpu_decode_attention_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& mask);

// softmax(q k^T * scale + mask) v as said above: [B, Hq, 1, D], contiguous, q's dtype.
at::Tensor cpu_decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                                double scale);

}  // namespace glmimage::kernels
