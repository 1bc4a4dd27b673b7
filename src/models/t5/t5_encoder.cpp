#include "models/t5/t5_encoder.h"

#include <cmath>
#include <limits>

#include "core/check.h"
#include "kernels/attention.h"

namespace glmimage {

using detail::str_cat;

namespace {

// transformers' NewGELUActivation ("gelu_new"), op for op, so reduced-precision runs round
// at the same places as the reference.
at::Tensor gelu_new(const at::Tensor& x) {
    const double c = std::sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + at::tanh(c * (x + 0.044715 * at::pow(x, 3.0))));
}

// fp16 only: the reference clamps each sub-layer's output away from +-inf.
at::Tensor clamp_fp16(const at::Tensor& h) {
    if (h.scalar_type() != at::kHalf) return h;
    const double max = std::numeric_limits<c10::Half>::max();
    const double v = h.isinf().any().item<bool>() ? max - 1000 : max;
    return at::clamp(h, -v, v);
}

// torch.finfo(dtype).min.
double finfo_min(at::ScalarType t) {
    double v = 0;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t, "finfo_min",
                                    [&] { v = static_cast<double>(std::numeric_limits<scalar_t>::lowest()); });
    return v;
}

}  // namespace

T5Block::T5Block(const T5Config& c, bool has_relative_bias, at::TensorOptions o)
    : ParamModule(o), num_heads(c.num_heads), d_kv(c.d_kv), gated(c.gated) {
    auto layer = child("layer", std::make_shared<ModuleScope>(o));
    auto l0 = layer->add("0", std::make_shared<ModuleScope>(o));
    auto sa = l0->add("SelfAttention", std::make_shared<ModuleScope>(o));
    q = sa->add("q", std::make_shared<Linear>(c.d_model, c.inner_dim(), false, o));
    k = sa->add("k", std::make_shared<Linear>(c.d_model, c.inner_dim(), false, o));
    v = sa->add("v", std::make_shared<Linear>(c.d_model, c.inner_dim(), false, o));
    this->o = sa->add("o", std::make_shared<Linear>(c.inner_dim(), c.d_model, false, o));
    if (has_relative_bias)
        relative_attention_bias = sa->add("relative_attention_bias",
                                          std::make_shared<Embedding>(c.relative_attention_num_buckets, c.num_heads, o));
    attn_norm = l0->add("layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon, o));
    auto l1 = layer->add("1", std::make_shared<ModuleScope>(o));
    auto ff = l1->add("DenseReluDense", std::make_shared<ModuleScope>(o));
    if (c.gated) {
        wi_0 = ff->add("wi_0", std::make_shared<Linear>(c.d_model, c.d_ff, false, o));
        wi_1 = ff->add("wi_1", std::make_shared<Linear>(c.d_model, c.d_ff, false, o));
    } else {
        wi = ff->add("wi", std::make_shared<Linear>(c.d_model, c.d_ff, false, o));
    }
    wo = ff->add("wo", std::make_shared<Linear>(c.d_ff, c.d_model, false, o));
    ff_norm = l1->add("layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon, o));
}

at::Tensor T5Block::forward(const at::Tensor& h_in, const at::Tensor& bias) const {
    const int64_t B = h_in.size(0), L = h_in.size(1);
    // (a) self-attention. T5 has no 1/sqrt(d_kv) scaling: scale = 1.
    auto x = attn_norm->forward(h_in);
    auto heads = [&](const Linear& lin) { return lin.forward(x).view({B, L, num_heads, d_kv}).transpose(1, 2); };
    kernels::AttentionOptions ao;
    ao.scale = 1.0;
    auto attn = kernels::attention(heads(*q), heads(*k), heads(*v), bias, ao);
    attn = attn.transpose(1, 2).reshape({B, L, num_heads * d_kv});
    auto h = clamp_fp16(h_in + o->forward(attn));

    // (b) feed-forward.
    auto y = ff_norm->forward(h);
    at::Tensor inner = gated ? gelu_new(wi_0->forward(y)) * wi_1->forward(y) : at::relu(wi->forward(y));
    if (inner.scalar_type() != wo->weight.scalar_type()) inner = inner.to(wo->weight.scalar_type());
    return clamp_fp16(h + wo->forward(inner));
}

T5Encoder::T5Encoder(const T5Config& c, at::TensorOptions o) : ParamModule(o), config(c) {
    shared = child("shared", std::make_shared<Embedding>(c.vocab_size, c.d_model, o));
    auto enc = child("encoder", std::make_shared<ModuleScope>(o));
    auto list = enc->add("block", std::make_shared<ModuleScope>(o));
    for (int64_t i = 0; i < c.num_layers; ++i)
        blocks.push_back(list->add(std::to_string(i), std::make_shared<T5Block>(c, i == 0, o)));
    final_layer_norm = enc->add("final_layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon, o));
}

at::Tensor T5Encoder::relative_position_bucket(const at::Tensor& rel, int64_t num_buckets, int64_t max_distance) {
    // Bidirectional: half of the buckets for keys after the query, half for keys before.
    const int64_t nb = num_buckets / 2;
    auto buckets = (rel > 0).to(at::kLong) * nb;
    auto n = at::abs(rel);
    // Half of those exact, the rest logarithmic up to max_distance; evaluated in float32
    // with the same operations as the reference, so n = 16, 32, 64 land where it lands.
    const int64_t max_exact = nb / 2;
    auto is_small = n < max_exact;
    auto large = max_exact + (at::log(n.to(at::kFloat) / max_exact) /
                              std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
                              static_cast<double>(nb - max_exact))
                                 .to(at::kLong);
    large = at::minimum(large, at::full_like(large, nb - 1));
    return buckets + at::where(is_small, n, large);
}

at::Tensor T5Encoder::position_bias(int64_t length) const {
    const auto& table = blocks.at(0)->relative_attention_bias;
    GLMI_CHECK(table, "T5 block 0 has no relative_attention_bias");
    auto opts = at::TensorOptions().dtype(at::kLong).device(table->weight.device());
    auto pos = at::arange(length, opts);
    auto rel = pos.unsqueeze(0) - pos.unsqueeze(1);  // [q, k] = k - q
    auto bucket = relative_position_bucket(rel, config.relative_attention_num_buckets,
                                           config.relative_attention_max_distance);
    return table->forward(bucket).permute({2, 0, 1}).unsqueeze(0);  // (1, H, L, L)
}

at::Tensor T5Encoder::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) const {
    if (!input_ids.defined() || input_ids.dim() != 2)
        throw InputError(str_cat("t5 encoder: input_ids must be 2-D (batch, length), got ",
                                 input_ids.defined() ? str_cat(input_ids.sizes()) : std::string("none")));
    if (at::isFloatingType(input_ids.scalar_type()) || input_ids.scalar_type() == at::kBool ||
        at::isComplexType(input_ids.scalar_type()))
        throw InputError(str_cat("t5 encoder: input_ids must be integer, got ", input_ids.scalar_type()));
    const int64_t B = input_ids.size(0), L = input_ids.size(1);
    if (B == 0 || L == 0) throw InputError(str_cat("t5 encoder: empty input_ids ", input_ids.sizes()));
    const at::Device device = shared->weight.device();
    auto ids = input_ids.to(device, at::kLong);
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config.vocab_size)
        throw InputError(str_cat("t5 encoder: token id out of range: expected [0, ", config.vocab_size, "), got ",
                                 lo < 0 ? lo : hi));

    auto h = shared->forward(ids);  // no sqrt(d_model) scaling
    auto bias = position_bias(L);   // computed once by block 0, shared by every layer
    if (attention_mask.defined()) {
        if (attention_mask.sizes() != input_ids.sizes())
            throw InputError(str_cat("t5 encoder: attention_mask shape ", attention_mask.sizes(),
                                     ": expected ", input_ids.sizes()));
        auto keep = attention_mask.to(device).ne(0).view({B, 1, 1, L});
        const double min = finfo_min(bias.scalar_type());
        bias = at::where(keep, bias, at::scalar_tensor(min, bias.options()));
    }
    bias = bias.contiguous();
    for (const auto& block : blocks) h = block->forward(h, bias);
    return final_layer_norm->forward(h);
}

}  // namespace glmimage
