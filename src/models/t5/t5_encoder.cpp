#include "models/t5/t5_encoder.h"

namespace glmimage {

T5Block::T5Block(const T5Config& c, bool has_relative_bias, at::TensorOptions o) : ParamModule(o) {
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

T5Encoder::T5Encoder(const T5Config& c, at::TensorOptions o) : ParamModule(o), config(c) {
    shared = child("shared", std::make_shared<Embedding>(c.vocab_size, c.d_model, o));
    auto enc = child("encoder", std::make_shared<ModuleScope>(o));
    auto list = enc->add("block", std::make_shared<ModuleScope>(o));
    for (int64_t i = 0; i < c.num_layers; ++i)
        blocks.push_back(list->add(std::to_string(i), std::make_shared<T5Block>(c, i == 0, o)));
    final_layer_norm = enc->add("final_layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon, o));
}

}  // namespace glmimage
