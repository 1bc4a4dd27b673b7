#include "models/dit/transformer.h"

namespace glmimage {

DiTFeedForward::DiTFeedForward(int64_t in, int64_t hidden, int64_t out, at::TensorOptions o) : ParamModule(o) {
    auto net = child("net", std::make_shared<ModuleScope>(o));
    auto net0 = net->add("0", std::make_shared<ModuleScope>(o));
    proj_in = net0->add("proj", std::make_shared<Linear>(in, hidden, true, o));
    proj_out = net->add("2", std::make_shared<Linear>(hidden, out, true, o));
}

DiTTimeConditionEmbed::DiTTimeConditionEmbed(const DiTConfig& c, at::TensorOptions o) : ParamModule(o) {
    const int64_t t = c.time_embed_dim;
    auto te = child("timestep_embedder", std::make_shared<ModuleScope>(o));
    t_linear_1 = te->add("linear_1", std::make_shared<Linear>(t, t, true, o));
    t_linear_2 = te->add("linear_2", std::make_shared<Linear>(t, t, true, o));
    auto ce = child("condition_embedder", std::make_shared<ModuleScope>(o));
    c_linear_1 = ce->add("linear_1", std::make_shared<Linear>(4 * c.condition_dim, t, true, o));
    c_linear_2 = ce->add("linear_2", std::make_shared<Linear>(t, t, true, o));
}

DiTBlock::DiTBlock(const DiTConfig& c, at::TensorOptions o) : ParamModule(o) {
    const int64_t d = c.inner_dim();
    auto norm1 = child("norm1", std::make_shared<ModuleScope>(o));
    adaln = norm1->add("linear", std::make_shared<Linear>(c.time_embed_dim, 12 * d, true, o));
    auto attn = child("attn1", std::make_shared<ModuleScope>(o));
    to_q = attn->add("to_q", std::make_shared<Linear>(d, d, true, o));
    to_k = attn->add("to_k", std::make_shared<Linear>(d, d, true, o));
    to_v = attn->add("to_v", std::make_shared<Linear>(d, d, true, o));
    auto out = attn->add("to_out", std::make_shared<ModuleScope>(o));
    to_out = out->add("0", std::make_shared<Linear>(d, d, true, o));
    ff = child("ff", std::make_shared<DiTFeedForward>(d, 4 * d, d, o));
}

GlmImageTransformer::GlmImageTransformer(const DiTConfig& c, at::TensorOptions o) : ParamModule(o), config(c) {
    const int64_t d = c.inner_dim();
    const int64_t p2 = c.patch_size * c.patch_size;
    auto ip = child("image_projector", std::make_shared<ModuleScope>(o));
    image_projector = ip->add("proj", std::make_shared<Linear>(c.in_channels * p2, d, true, o));
    glyph_projector = child("glyph_projector", std::make_shared<DiTFeedForward>(c.text_embed_dim, d, d, o));
    prior_token_embedding =
        child("prior_token_embedding", std::make_shared<Embedding>(c.prior_vq_quantizer_codebook_size, d, o));
    prior_projector = child("prior_projector", std::make_shared<DiTFeedForward>(d, d, d, o));
    time_condition_embed = child("time_condition_embed", std::make_shared<DiTTimeConditionEmbed>(c, o));
    auto list = child("transformer_blocks", std::make_shared<ModuleScope>(o));
    for (int64_t i = 0; i < c.num_layers; ++i)
        blocks.push_back(list->add(std::to_string(i), std::make_shared<DiTBlock>(c, o)));
    auto no = child("norm_out", std::make_shared<ModuleScope>(o));
    norm_out = no->add("linear", std::make_shared<Linear>(c.time_embed_dim, 2 * d, true, o));
    proj_out = child("proj_out", std::make_shared<Linear>(d, p2 * c.out_channels, true, o));
}

}  // namespace glmimage
