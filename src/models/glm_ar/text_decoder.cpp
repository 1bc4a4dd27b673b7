#include "models/glm_ar/text_decoder.h"

#include <cmath>
#include <optional>
#include <string>

#include "core/check.h"
#include "glmimage/errors.h"
#include "kernels/attention.h"
#include "kernels/decoder_fused.h"

namespace glmimage {

void KVCache::allocate(int64_t layers, int64_t batch, int64_t kv_heads, int64_t cap, int64_t head_dim,
                       at::TensorOptions options) {
    k.clear();
    v.clear();
    // Zeroed, not left uninitialised: the static decode step attends over the whole capacity
    // with the unwritten slots masked, and a masked weight of 0 times a NaN left in memory is NaN.
    for (int64_t l = 0; l < layers; ++l) {
        k.push_back(at::zeros({batch, kv_heads, cap, head_dim}, options));
        v.push_back(at::zeros({batch, kv_heads, cap, head_dim}, options));
    }
    key_valid = at::ones({batch, cap}, options.dtype(at::kBool));
    has_padding = false;
    length = 0;
    capacity = cap;
}

void KVCache::set_prompt_mask(const at::Tensor& attention_mask) {
    if (!attention_mask.defined()) return;
    if (attention_mask.dim() != 2 || attention_mask.size(0) != key_valid.size(0) ||
        attention_mask.size(1) > capacity)
        throw InputError("ar: attention_mask must be [batch, prompt length]");
    auto valid = attention_mask.to(key_valid.device()).ne(0);
    key_valid.narrow(1, 0, attention_mask.size(1)).copy_(valid);
    has_padding = !valid.all().item<bool>();
}

GlmTextDecoder::GlmTextDecoder(const GlmArModel& model) : model_(model) {
    const auto& c = model.config.text;
    heads_ = c.num_attention_heads;
    kv_heads_ = c.num_key_value_heads;
    head_dim_ = c.head_dim;
    rotary_dim_ = c.rotary_dim();
    if (heads_ % kv_heads_ != 0) throw ConfigError("ar: attention heads must be a multiple of key/value heads");
    if (rotary_dim_ > head_dim_) throw ConfigError("ar: rotary dimension exceeds head_dim");
}

KVCache GlmTextDecoder::make_cache(int64_t batch, int64_t capacity) const {
    KVCache cache;
    cache.allocate(static_cast<int64_t>(model_.language_model->layers.size()), batch, kv_heads_, capacity, head_dim_,
                   at::TensorOptions().dtype(dtype()).device(device()));
    return cache;
}

namespace {

// NeoX pairing (i, i + rd/2) on the first rd channels, written in the reference's op order.
at::Tensor rotate(const at::Tensor& x_rot, const at::Tensor& cos, const at::Tensor& sin) {
    const int64_t half = x_rot.size(-1) / 2;
    auto rotated = at::cat({-x_rot.narrow(-1, half, half), x_rot.narrow(-1, 0, half)}, -1);
    return x_rot * cos + rotated * sin;
}

}  // namespace

GlmTextDecoder::Hidden GlmTextDecoder::start(const at::Tensor& x) const {
    if (!kernels::decoder_fused_available(x.device(), x.scalar_type()) || !x.is_contiguous()) return {x, {}, false};
    return {x, kernels::norm_needs_squares(x) ? kernels::squares(x) : at::Tensor(), true};
}

at::Tensor GlmTextDecoder::final_norm(const Hidden& h) const {
    const auto& norm = *model_.language_model->norm;
    return h.fused ? kernels::rms_norm(h.x, h.squares, norm.weight, norm.eps) : norm.forward(h.x);
}

GlmTextDecoder::Hidden GlmTextDecoder::layer_forward(const GlmDecoderLayer& layer, size_t index, const Hidden& in,
                                                     const at::Tensor& cos, const at::Tensor& sin, at::Tensor& mask,
                                                     const at::Tensor& slot, KVCache& cache) const {
    const at::Tensor& x = in.x;
    const bool fused = in.fused;
    const int64_t B = x.size(0), S = x.size(1), c0 = cache.length, T = c0 + S;
    const int64_t rd = rotary_dim_, D = head_dim_;

    const auto& in_norm = *layer.input_layernorm;
    auto h = fused ? kernels::rms_norm(x, in.squares, in_norm.weight, in_norm.eps) : in_norm.forward(x);
    at::Tensor q, k, v;
    if (layer.qkv) {
        auto parts = layer.qkv->forward(h);
        q = parts[0], k = parts[1], v = parts[2];
    } else {
        q = layer.q_proj->forward(h), k = layer.k_proj->forward(h), v = layer.v_proj->forward(h);
    }

    // Rotary on the first rd channels; K and V go into their cache slots.
    at::Tensor keys = cache.k[index], values = cache.v[index];
    if (fused) {
        q = kernels::rotary_qkv_to_cache(q, k, v, cos, sin, D, slot, c0, cache.k[index], cache.v[index]);
    } else {
        const auto cs = cos.unsqueeze(1), sn = sin.unsqueeze(1);  // broadcast over heads
        q = q.view({B, S, heads_, D}).transpose(1, 2);
        k = k.view({B, S, kv_heads_, D}).transpose(1, 2);
        v = v.view({B, S, kv_heads_, D}).transpose(1, 2);
        q = at::cat({rotate(q.narrow(-1, 0, rd), cs, sn), q.narrow(-1, rd, D - rd)}, -1);
        if (slot.defined()) {
            // The slot is a device tensor: index_copy_ writes there without the host reading it.
            auto k_rot = rotate(k.narrow(-1, 0, rd), cs, sn);
            if (rd < D) k_rot = at::cat({k_rot, k.narrow(-1, rd, D - rd)}, -1);
            cache.k[index].index_copy_(2, slot, k_rot);
            cache.v[index].index_copy_(2, slot, v);
        } else {
            auto k_slot = cache.k[index].narrow(2, c0, S);
            k_slot.narrow(-1, 0, rd).copy_(rotate(k.narrow(-1, 0, rd), cs, sn));
            if (rd < D) k_slot.narrow(-1, rd, D - rd).copy_(k.narrow(-1, rd, D - rd));
            cache.v[index].narrow(2, c0, S).copy_(v);
        }
    }
    if (!slot.defined()) {  // the written prefix; the static step reads the whole capacity under its mask
        keys = keys.narrow(2, 0, T);
        values = values.narrow(2, 0, T);
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));

    kernels::AttentionOptions ao;
    ao.scale = scale;
    ao.causal = S > 1 && !mask.defined();  // a prefill from an empty cache
    if (S == 1 && mask.defined()) mask = mask.view({B, 1, 1, keys.size(2)});
    mask = kernels::sdpa_additive_mask(q, keys, values, mask, ao);
    auto attn = kernels::attention(q, keys, values, mask, ao).transpose(1, 2).reshape({B, S, heads_ * D});
    auto o = layer.o_proj->forward(attn);

    if (fused) {
        // Each post-norm, its residual sum and the next norm's squares in one pass.
        const auto& attn_norm = *layer.post_self_attn_layernorm;
        const auto& mlp_in_norm = *layer.post_attention_layernorm;
        const auto& mlp_norm = *layer.post_mlp_layernorm;
        auto x1 = kernels::residual_rms_norm(x, o, attn_norm.weight, attn_norm.eps);
        auto gu = layer.gate_up_proj->forward(kernels::rms_norm(x1.out, x1.out_squares, mlp_in_norm.weight,
                                                                mlp_in_norm.eps));
        auto x2 = kernels::residual_rms_norm(x1.out, layer.down_proj->forward(kernels::silu_mul(gu)), mlp_norm.weight,
                                             mlp_norm.eps);
        return {x2.out, x2.out_squares, true};
    }
    auto x1 = x + layer.post_self_attn_layernorm->forward(o);
    auto gu = layer.gate_up_proj->forward(layer.post_attention_layernorm->forward(x1));
    h = layer.post_mlp_layernorm->forward(layer.down_proj->forward(kernels::silu_mul(gu)));
    return {x1 + h, {}, false};
}

at::Tensor GlmTextDecoder::forward(const at::Tensor& input_ids, const at::Tensor& cos, const at::Tensor& sin,
                                   KVCache& cache, std::vector<at::Tensor>* layer_outputs) const {
    if (input_ids.dim() != 2) throw InputError("ar: input_ids must be [batch, length]");
    const int64_t B = input_ids.size(0), S = input_ids.size(1), c0 = cache.length, T = c0 + S;
    if (B != cache.key_valid.size(0)) throw InputError("ar: batch does not match the cache");
    if (T > cache.capacity)
        throw InputError("ar: " + std::to_string(T) + " tokens exceed the cache capacity " +
                         std::to_string(cache.capacity));
    if (S == 0) throw InputError("ar: no tokens to run");
    if (cos.dim() != 3 || cos.size(0) != B || cos.size(1) != S || cos.size(2) != rotary_dim_ ||
        sin.sizes() != cos.sizes())
        throw InputError("ar: rotary tables must be [batch, new tokens, " + std::to_string(rotary_dim_) + "]");

    // Mask: causal over absolute positions plus the prompt's padding keys. A padding query
    // keeps its own key so no softmax row is empty (an all-masked row would be NaN and
    // poison later layers through V); its output is never read.
    at::Tensor mask;
    if (cache.has_padding) {
        auto opts = at::TensorOptions().dtype(at::kLong).device(cache.key_valid.device());
        auto qpos = at::arange(c0, T, opts).view({S, 1});
        auto kpos = at::arange(0, T, opts).view({1, T});
        auto causal = kpos.le(qpos);                                             // [S, T]
        auto own = kpos.eq(qpos);
        auto valid = cache.key_valid.narrow(1, 0, T).view({B, 1, 1, T});
        mask = at::logical_and(causal, at::logical_or(valid, own));             // [B, 1, S, T]
    } else if (c0 > 0 && S > 1) {
        auto opts = at::TensorOptions().dtype(at::kLong).device(cache.key_valid.device());
        mask = at::arange(0, T, opts).view({1, T}).le(at::arange(c0, T, opts).view({S, 1}));
    }

    auto h = start(model_.language_model->embed_tokens->forward(input_ids));
    const auto& layers = model_.language_model->layers;
    for (size_t i = 0; i < layers.size(); ++i) {
        h = layer_forward(*layers[i], i, h, cos, sin, mask, {}, cache);
        if (layer_outputs) layer_outputs->push_back(h.x);
    }
    cache.length = T;
    return final_norm(h);
}

at::Tensor GlmTextDecoder::forward_at_slot(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                           const at::Tensor& slot, const at::Tensor& key_mask, KVCache& cache) const {
    const int64_t B = cache.key_valid.size(0);
    GLMI_CHECK(x.dim() == 3 && x.size(0) == B && x.size(1) == 1, "ar: forward_at_slot takes one token per row, got ",
               x.sizes());
    GLMI_CHECK(slot.numel() == 1 && slot.scalar_type() == at::kLong, "ar: the slot must be one long index");
    GLMI_CHECK(key_mask.dim() == 4 && key_mask.size(0) == B && key_mask.size(3) == cache.capacity,
               "ar: key_mask must be [batch, 1, 1, capacity], got ", key_mask.sizes());
    auto h = start(x);
    const auto& layers = model_.language_model->layers;
    at::Tensor mask = key_mask;
    for (size_t i = 0; i < layers.size(); ++i) h = layer_forward(*layers[i], i, h, cos, sin, mask, slot, cache);
    return final_norm(h);
}

}  // namespace glmimage
