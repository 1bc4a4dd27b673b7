// The DiT's rotary embedding ("rotate-half": element d pairs with d + D/2) in one pass over the
// tokens. As LibTorch ops it is eight passes over [B, S, heads, D] tensors (a float copy, a
// negation, a concatenation, two products, a sum, the cast back, the concatenation with the
// text tokens), each into freshly allocated memory: 11 s of a 97 s denoising step at the real
// size and 1024x1024 on this 2-core CPU. Here each element is computed with the same float32
// operations in the same order, each rounded as LibTorch rounds it (no fused multiply-add), so
// the result is the same bits.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// Whether rotary_half() runs these (and the switch of fused_switch.h is on): x a [B, S, heads, D]
// tensor with its last dimension contiguous, D even, on the CPU (float32, bfloat16 or float16) or,
// where this build has the CUDA kernels (kernels/cuda/dit_fused.cu), on a GPU (float32 or
// bfloat16); cos and sin contiguous float32 [S - skip, D] on x's device; 0 <= skip <= S.
bool rotary_half_takes(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t skip);

// Where rotary_half() puts the [B, S, heads, D] result in memory.
enum class RotaryLayout {
    kTokenMajor,  // contiguous [B, S, heads, D], x's own order
    kHeadMajor,   // each head's tokens together: y.transpose(1, 2) is a contiguous [B, heads, S, D],
                  // which LibTorch's CPU flash attention reads about 9 % faster as its keys than
                  // the token-major view (bf16, 4106 tokens x 32 heads x 128; the same bits)
};
// The DiT passes its keys head-major and its queries token-major: SDPA lays its output out as its
// queries are, so a token-major output is already the [tokens, heads x D] rows the output
// projection reads, where a head-major one was copied (0.2-0.3 ms a call at 281 tokens, 8 x 64,
// float32, 2-core EPYC); with head-major keys, token-major queries took no longer at 281 tokens
// (float32 and bf16) nor at 4106 x 32 x 128 (bf16), and every layout gives the same bits.

// A tensor of x's shape and dtype, laid out as `layout` says: tokens [0, skip) copied as they are,
// token s >= skip rotated with row s - skip of the tables:
//   y = dtype(float(x) * cos + float(rotate_half(x)) * sin),  rotate_half(x) = [-x[D/2:], x[:D/2]].
at::Tensor rotary_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t skip,
                       RotaryLayout layout = RotaryLayout::kTokenMajor);

}  // namespace glmimage::kernels
