// The one attention entry point of every model (AR decoder, vision encoder, T5, DiT, VAE).
// Model files say what attends to what; this file decides how: the layout SDPA gets, the
// grouped-query trick for single-token decode, the mask form, and which SDPA backend that gets;
// on the CPU one query token per head may go to this library's loop instead (cpu_decode_attention.h),
// and unmasked bf16 attention of many queries to its AVX-512 bf16 kernel (cpu_bf16_attention.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace glmimage::kernels {

struct AttentionOptions {
    std::optional<double> scale;  // softmax scale; nullopt: 1/sqrt(head_dim)
    bool causal = false;          // query i sees keys 0..i (only with no mask and Sq == Sk)
};

// q [B, Hq, Sq, D]; k, v [B, Hkv, Sk, D] with Hq a multiple of Hkv (grouped-query attention
// when they differ). mask: undefined, or bool (true = attend) / additive float, broadcastable
// to [B, Hq, Sq, Sk]. Returns [B, Hq, Sq, D].
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask = {},
                     const AttentionOptions& options = {});

// What attention() runs on these inputs: "cpu_decode" (this library's loop for one query token per
// head on the CPU, kernels/cpu_decode_attention.h; attention.cpp says where), "cpu_bf16" (its bf16
// kernel for many queries, kernels/cpu_bf16_attention.h), else the SDPA
// backend LibTorch chooses: "math", "flash_attention", "efficient_attention", "cudnn_attention"
// or "overrideable" (for benches and device checks: whether the fused kernels run, or the math
// fallback).
std::string attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& mask = {}, const AttentionOptions& options = {});

// The additive mask SDPA itself makes of a bool `mask` for these inputs, at every call (on a GPU a
// kernel or two a call): 0 where true, and where false -inf, or -65504 where SDPA picks cuDNN (its
// own workaround). A step that attends with one mask in every layer converts it once with this and
// passes the result: SDPA then computes the same bits. Any other mask is returned as it is.
at::Tensor sdpa_additive_mask(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              const AttentionOptions& options = {});

// Block-diagonal attention over segments of the sequence axis: tokens attend only within
// their own segment (the vision encoder's images). q, k, v [1, H, N, D]; lengths sum to N.
at::Tensor segment_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const std::vector<int64_t>& lengths, const AttentionOptions& options = {});

}  // namespace glmimage::kernels
