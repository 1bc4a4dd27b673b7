#include "kernels/attention.h"

#include "core/check.h"

namespace glmimage::kernels {

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     const AttentionOptions& o) {
    GLMI_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects [B, H, S, D] tensors, got ",
               q.sizes(), ", ", k.sizes(), ", ", v.sizes());
    const int64_t B = q.size(0), hq = q.size(1), sq = q.size(2), D = q.size(3), hkv = k.size(1);
    GLMI_CHECK(hkv > 0 && hq % hkv == 0, "query heads ", hq, " are not a multiple of key/value heads ", hkv);
    GLMI_CHECK(!(o.causal && mask.defined()), "causal attention takes no mask");
    std::optional<at::Tensor> m;
    if (mask.defined()) m = mask;
    if (hq != hkv && sq == 1) {
        // One query per head: the heads sharing a kv head become a group of queries, so each
        // kv head is read once instead of being repeated per query head. A mask broadcast over
        // heads ([B, 1, 1, Sk]) broadcasts over the group the same way.
        GLMI_CHECK(!mask.defined() || mask.size(1) == 1, "a per-head mask is not supported for grouped decode");
        auto qg = q.reshape({B, hkv, hq / hkv, D});
        return at::scaled_dot_product_attention(qg, k, v, m, /*dropout_p=*/0.0, /*is_causal=*/false, o.scale)
            .reshape({B, hq, 1, D});
    }
    return at::scaled_dot_product_attention(q, k, v, m, /*dropout_p=*/0.0, o.causal, o.scale,
                                            /*enable_gqa=*/hq != hkv);
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
