// The AR text decoder's elementwise work in few passes. As LibTorch ops a decoder layer on a GPU
// is about 57 kernels, 52 of them elementwise beside its four matmuls and its attention (each
// RMSNorm eight: the float copy, the square, the mean, the epsilon, the rsqrt, the product, the cast
// back, the weight; the rotary of q and k with their cache writes fifteen; SDPA's conversion of
// the bool mask; the residual sums; the gate), and at the decode step each costs its launch, not
// its bytes: at the real size (40 layers) about 2,300 kernels a token. Here a layer is 17 (about
// 680 a token; the mask is converted once per step). Counted from the code; LibTorch's profiler on
// the CPU counts 830 leaf ATen ops a decoded token against 352 (small preset, 6 layers, views and
// the sampling included). Every result is the same bits as the op sequence it replaces
// (fused_math.h): the CPU loops are tested against it, and on a GPU tests/python/test_fused_kernels.py
// compares the kernels with the ops they replace.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// Whether the fused path runs for tensors of this device and dtype: float32 and bfloat16, on the
// CPU, and on CUDA where this build has the kernels (GLMI_WITH_CUDA_KERNELS); and the switch of
// fused_switch.h is on.
bool decoder_fused_available(const at::Device& device, at::ScalarType dtype);

// x.to(float32).pow(2) of a contiguous [..., D] tensor.
at::Tensor squares(const at::Tensor& x);

// Whether the RMSNorms below need x's float32 squares stored (squares(x)) for their mean: on CUDA,
// and on the CPU where row_sum.h's loop does not give LibTorch's sum for rows of x's width (its
// probe found no lane width); elsewhere they square x as they read it and sum in LibTorch's order.
bool norm_needs_squares(const at::Tensor& x);

// RMSNorm of x:  weight * (x.float() * rsqrt(mean(x.float()^2) + eps)).to(x.dtype), given `sq` =
// squares(x) where norm_needs_squares(x) (else `sq` is not read and may be undefined). The sum behind
// the mean has LibTorch's reduction's bits: on the CPU row_sum.h's loop or LibTorch's sum of `sq`,
// with the division, the epsilon and the rsqrt in the pass that scales x (ATen ops fewer a norm,
// each more dispatch than work at the decode step); on CUDA LibTorch's mean, the rest in its kernel.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& sq, const at::Tensor& weight, double eps);

// residual + rms_norm(h) in one pass over h (a post-norm and its residual sum), and the output's
// squares for the next RMSNorm where norm_needs_squares(h) (else undefined).
struct ResidualNorm {
    at::Tensor out, out_squares;
};
ResidualNorm residual_rms_norm(const at::Tensor& residual, const at::Tensor& h, const at::Tensor& weight, double eps);

// The attention inputs of one decoder layer from its projections q [B, S, hq * D], k and v
// [B, S, hkv * D] (views of one fused projection, or tensors of their own, with the last dimension
// contiguous and the same token stride): returns q with rotary applied, a contiguous
// [B, hq, S, D]; writes k with rotary applied and v into cache_k / cache_v [B, hkv, capacity, D]
// at slot + s, where slot is a long [1] tensor on the cache's device (the static step) or, when
// undefined, `slot0`. Rotary (NeoX pairs) on the first cos.size(-1) channels, cos/sin [B, S, rd].
at::Tensor rotary_qkv_to_cache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                               const at::Tensor& sin, int64_t head_dim, const at::Tensor& slot, int64_t slot0,
                               at::Tensor& cache_k, at::Tensor& cache_v);

// up * silu(gate) of a gate_up projection [..., 2I] (gate first): [..., I]. One kernel on a GPU
// (where decoder_fused_available); on the CPU where silu_mul_by_table, one pass that looks the silu
// up in LibTorch's own table (half_float_table.h; profile-led: LibTorch's silu and product were 12
// ATen calls a small-preset bf16 decode token, about 4 us each) and multiplies as LibTorch's mul
// does; elsewhere, and with the switch off, LibTorch's silu (whose exp a CPU loop here would not
// reproduce) and product: the decoder's one place for this formula.
at::Tensor silu_mul(const at::Tensor& gate_up);

// Whether silu_mul(gate_up) looks its silu up: a contiguous bfloat16 or float16 CPU tensor whose I
// is a multiple of 64 (LibTorch's vector loop, the one the table holds, then computes every element
// of a row: it takes two vectors of 16 or 32 elements a step), and the switch on.
bool silu_mul_by_table(const at::Tensor& gate_up);

}  // namespace glmimage::kernels
