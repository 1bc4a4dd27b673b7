#include "models/glm_ar/ar_model.h"

namespace glmimage {

GlmDecoderLayer::GlmDecoderLayer(const GlmTextConfig& c, at::TensorOptions o) : ParamModule(o) {
    const int64_t h = c.hidden_size, d = c.head_dim;
    input_layernorm = child("input_layernorm", std::make_shared<RMSNorm>(h, c.rms_norm_eps, o));
    auto attn = child("self_attn", std::make_shared<ModuleScope>(o));
    q_proj = attn->add("q_proj", std::make_shared<Linear>(h, c.num_attention_heads * d, c.attention_bias, o));
    k_proj = attn->add("k_proj", std::make_shared<Linear>(h, c.num_key_value_heads * d, c.attention_bias, o));
    v_proj = attn->add("v_proj", std::make_shared<Linear>(h, c.num_key_value_heads * d, c.attention_bias, o));
    o_proj = attn->add("o_proj", std::make_shared<Linear>(c.num_attention_heads * d, h, false, o));
    post_self_attn_layernorm = child("post_self_attn_layernorm", std::make_shared<RMSNorm>(h, c.rms_norm_eps, o));
    post_attention_layernorm = child("post_attention_layernorm", std::make_shared<RMSNorm>(h, c.rms_norm_eps, o));
    auto mlp = child("mlp", std::make_shared<ModuleScope>(o));
    // gate and up fused in one matrix: rows [0, I) gate, [I, 2I) up.
    gate_up_proj = mlp->add("gate_up_proj", std::make_shared<Linear>(h, 2 * c.intermediate_size, false, o));
    down_proj = mlp->add("down_proj", std::make_shared<Linear>(c.intermediate_size, h, false, o));
    post_mlp_layernorm = child("post_mlp_layernorm", std::make_shared<RMSNorm>(h, c.rms_norm_eps, o));
}

GlmTextModel::GlmTextModel(const GlmTextConfig& c, at::TensorOptions o) : ParamModule(o) {
    embed_tokens = child("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size, o));
    auto list = child("layers", std::make_shared<ModuleScope>(o));
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
        layers.push_back(list->add(std::to_string(i), std::make_shared<GlmDecoderLayer>(c, o)));
    norm = child("norm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, o));
}

GlmVisionBlock::GlmVisionBlock(const GlmVisionConfig& c, at::TensorOptions o) : ParamModule(o) {
    const int64_t h = c.hidden_size;
    norm1 = child("norm1", std::make_shared<LayerNorm>(h, c.layer_norm_eps, o));
    auto attn = child("attn", std::make_shared<ModuleScope>(o));
    qkv = attn->add("qkv", std::make_shared<Linear>(h, 3 * h, c.attention_bias, o));
    proj = attn->add("proj", std::make_shared<Linear>(h, h, c.attention_bias, o));
    norm2 = child("norm2", std::make_shared<LayerNorm>(h, c.layer_norm_eps, o));
    auto mlp = child("mlp", std::make_shared<ModuleScope>(o));
    fc1 = mlp->add("fc1", std::make_shared<Linear>(h, c.intermediate_size, true, o));
    fc2 = mlp->add("fc2", std::make_shared<Linear>(c.intermediate_size, h, true, o));
}

GlmVisionModel::GlmVisionModel(const GlmVisionConfig& c, at::TensorOptions o) : ParamModule(o) {
    auto pe = child("patch_embed", std::make_shared<ModuleScope>(o));
    patch_embed = pe->add("proj", std::make_shared<Conv2d>(c.in_channels, c.hidden_size, c.patch_size, c.patch_size, 0, o));
    auto emb = child("embeddings", std::make_shared<ModuleScope>(o));
    position_embedding = emb->add("position_embedding", std::make_shared<Embedding>(c.num_positions(), c.hidden_size, o));
    auto list = child("blocks", std::make_shared<ModuleScope>(o));
    for (int64_t j = 0; j < c.depth; ++j)
        blocks.push_back(list->add(std::to_string(j), std::make_shared<GlmVisionBlock>(c, o)));
}

GlmVQModel::GlmVQModel(const GlmVQConfig& c, at::TensorOptions o) : ParamModule(o) {
    quant_conv = child("quant_conv", std::make_shared<Conv2d>(c.latent_channels, c.embed_dim, 1, 1, 0, o));
    auto q = child("quantize", std::make_shared<ModuleScope>(o));
    codebook = q->add("embedding", std::make_shared<Embedding>(c.num_embeddings, c.embed_dim, o));
    post_quant_conv = child("post_quant_conv", std::make_shared<Conv2d>(c.embed_dim, c.latent_channels, 1, 1, 0, o));
}

GlmArModel::GlmArModel(const GlmArConfig& c, at::TensorOptions o) : ParamModule(o), config(c) {
    auto model = child("model", std::make_shared<ModuleScope>(o));
    language_model = model->add("language_model", std::make_shared<GlmTextModel>(c.text, o));
    visual = model->add("visual", std::make_shared<GlmVisionModel>(c.vision, o));
    vqmodel = model->add("vqmodel", std::make_shared<GlmVQModel>(c.vq, o));
    lm_head = child("lm_head", std::make_shared<Linear>(c.text.hidden_size, c.text.vision_vocab_size, false, o));
    // The text decoder's matmuls are one row per decode step: memory-bound weight reads.
    lm_head->few_rows_gemv = true;
    for (auto& l : language_model->layers)
        for (Linear* lin : {l->q_proj.get(), l->k_proj.get(), l->v_proj.get(), l->o_proj.get(), l->gate_up_proj.get(),
                            l->down_proj.get()})
            lin->few_rows_gemv = true;
}

size_t GlmArModel::fuse_projections() {
    size_t n = 0;
    for (auto& l : language_model->layers) {
        l->qkv = FusedLinear::fuse({l->q_proj.get(), l->k_proj.get(), l->v_proj.get()});
        n += l->qkv != nullptr;
    }
    return n;
}

}  // namespace glmimage
