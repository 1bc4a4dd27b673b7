#include "kernels/attention.h"

// SDPA's backend enum: ATen/SDPBackend.h from LibTorch 2.6; in 2.5 it sits with SDPA's helpers.
#if __has_include(<ATen/SDPBackend.h>)
#include <ATen/SDPBackend.h>
using SdpBackend = at::SDPBackend;
#else
#include <ATen/native/transformers/sdp_utils_cpp.h>
using SdpBackend = sdp::SDPBackend;
#endif

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "core/check.h"
#include "kernels/cpu_bf16_attention.h"
#include "kernels/cpu_decode_attention.h"

namespace glmimage::kernels {

namespace {

// The SDPA call attention() makes: the same for running it and for asking which backend runs it.
struct SdpaCall {
    at::Tensor q, k, v;
    std::optional<at::Tensor> mask;
    bool causal = false, gqa = false;
    std::vector<int64_t> out_shape;  // non-empty: reshape the output to this (grouped decode)
};

SdpBackend sdpa_choice(const SdpaCall& c, const AttentionOptions& o) {
    return static_cast<SdpBackend>(
        at::_fused_sdp_choice(c.q, c.k, c.v, c.mask, /*dropout_p=*/0.0, c.causal, o.scale, c.gqa));
}

SdpaCall prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                 const AttentionOptions& o) {
    GLMI_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects [B, H, S, D] tensors, got ",
               q.sizes(), ", ", k.sizes(), ", ", v.sizes());
    const int64_t B = q.size(0), hq = q.size(1), sq = q.size(2), D = q.size(3), hkv = k.size(1);
    GLMI_CHECK(hkv > 0 && hq % hkv == 0, "query heads ", hq, " are not a multiple of key/value heads ", hkv);
    GLMI_CHECK(!(o.causal && mask.defined()), "causal attention takes no mask");
    SdpaCall c{q, k, v, std::nullopt, o.causal, hq != hkv, {}};
    if (mask.defined()) c.mask = mask;
    if (hq != hkv && sq == 1) {
        // One query per head: the heads sharing a kv head become a group of queries, so each
        // kv head is read once instead of being repeated per query head. A mask broadcast over
        // heads ([B, 1, 1, Sk]) broadcasts over the group the same way.
        GLMI_CHECK(!mask.defined() || mask.size(1) == 1, "a per-head mask is not supported for grouped decode");
        c.q = q.reshape({B, hkv, hq / hkv, D});
        c.gqa = false;
        c.out_shape = {B, hq, 1, D};
    } else if (c.gqa && sdpa_choice(c, o) == SdpBackend::math) {
        // No fused kernel takes grouped heads here (LibTorch 2.6's CPU flash kernel does not;
        // 2.13's does): repeat the key/value heads, as transformers' repeat_kv does, so that a fused
        // kernel runs instead of the math fallback. A speed choice: where both exist, the grouped
        // and the repeated call give the same bits (2.13, CPU flash); where only the repeated one
        // does, the reference passes grouped heads when there is no mask, runs the math fallback
        // itself, and its bits differ from ours (2.6, bf16 tiny AR prefill logits: 0.44).
        // Following its layout rule everywhere would cost more: grouped single queries instead
        // of the grouped decode above took the bf16 decode from 785-828 to 557-562 tok/s (2.13).
        auto repeated = c;
        repeated.k = k.repeat_interleave(hq / hkv, 1);
        repeated.v = v.repeat_interleave(hq / hkv, 1);
        repeated.gqa = false;
        if (sdpa_choice(repeated, o) != SdpBackend::math) return repeated;
    }
    return c;
}

}  // namespace

// One query token per head on the CPU (the AR decode step) where each key carries little work
// (the query heads sharing a KV head times the head size, up to 512): kernels/cpu_decode_attention.h,
// where SDPA's flash kernel costs more in its set-up than in the few dot products per key (the
// small preset, 4 heads of 64 per KV head, 350 keys: 17-19 us against SDPA's 28-43, 2 threads, AVX2
// EPYC). The real model's 16 heads of 128 per KV head stay with SDPA, whose products are as fast
// there (1000-4400 keys: 0.3-1.4 ms either way). The rule does not depend on the number of keys,
// so that the eager step and the static one (the whole cache under a mask) take the same path.
bool cpu_decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                const AttentionOptions& o) {
    constexpr int64_t kMaxWorkPerKey = 512;
    return !o.causal && cpu_decode_attention_takes(q, k, v, mask) &&
           q.size(1) / k.size(1) * q.size(3) <= kMaxWorkPerKey;
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     const AttentionOptions& o) {
    const auto scale = [&] { return o.scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(3)))); };
    if (cpu_decode(q, k, v, mask, o)) return cpu_decode_attention(q, k, v, mask, scale());
    // Before SDPA: its CPU flash kernel runs bf16 products through MKL's generic path on a CPU
    // with AVX-512 bf16 and no AMX (cpu_bf16_attention.h), 2-3x slower than this kernel there.
    if (cpu_bf16_attention_takes(q, k, v, mask, o.causal)) return cpu_bf16_attention(q, k, v, scale());
    const SdpaCall c = prepare(q, k, v, mask, o);
    auto out = at::scaled_dot_product_attention(c.q, c.k, c.v, c.mask, /*dropout_p=*/0.0, c.causal, o.scale, c.gqa);
    return c.out_shape.empty() ? out : out.reshape(c.out_shape);
}

at::Tensor sdpa_additive_mask(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              const AttentionOptions& o) {
    if (!mask.defined() || mask.scalar_type() != at::kBool) return mask;
    const SdpaCall c = prepare(q, k, v, mask, o);
    const auto zero = at::TensorOptions().dtype(q.scalar_type());
    if (sdpa_choice(c, o) == SdpBackend::cudnn_attention)
        return at::where(mask.logical_not(), -65504.0, at::scalar_tensor(0.0, zero));
    return at::where(mask.logical_not(), -std::numeric_limits<double>::infinity(),
                     at::scalar_tensor(0.0, zero.device(mask.device())));
}

std::string attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              const AttentionOptions& o) {
    if (cpu_decode(q, k, v, mask, o)) return "cpu_decode";
    if (cpu_bf16_attention_takes(q, k, v, mask, o.causal)) return "cpu_bf16";
    switch (sdpa_choice(prepare(q, k, v, mask, o), o)) {
        case SdpBackend::math: return "math";
        case SdpBackend::flash_attention: return "flash_attention";
        case SdpBackend::efficient_attention: return "efficient_attention";
        case SdpBackend::cudnn_attention: return "cudnn_attention";
        case SdpBackend::overrideable: return "overrideable";
        default: return "none (SDPA finds no kernel for these inputs)";
    }
}

at::Tensor segment_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const std::vector<int64_t>& lengths, const AttentionOptions& o) {
    if (lengths.size() == 1) return attention(q, k, v, {}, o);
    // One SDPA per segment rather than one masked call: no [N, N] mask, and each segment's
    // accumulation order equals the reference's per-image attention.
    const auto qs = q.split_with_sizes(lengths, 2), ks = k.split_with_sizes(lengths, 2),
               vs = v.split_with_sizes(lengths, 2);
    std::vector<at::Tensor> outs;
    outs.reserve(lengths.size());
    for (size_t i = 0; i < lengths.size(); ++i) outs.push_back(attention(qs[i], ks[i], vs[i], {}, o));
    return at::cat(outs, 2);
}

}  // namespace glmimage::kernels
