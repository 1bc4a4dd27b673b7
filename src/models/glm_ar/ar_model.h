// GlmImageForConditionalGeneration (vision_language_encoder/): GLM-4 text decoder, ViT
// vision encoder and VQ quantizer. Module tree named exactly like its safetensors.
#pragma once

#include <memory>
#include <vector>

#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/norms.h"
#include "models/glm_ar/config.h"

namespace glmimage {

class GlmDecoderLayer : public ParamModule {
  public:
    GlmDecoderLayer(const GlmTextConfig& c, at::TensorOptions options);
    std::shared_ptr<RMSNorm> input_layernorm, post_self_attn_layernorm, post_attention_layernorm, post_mlp_layernorm;
    std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;  // self_attn.*
    std::shared_ptr<Linear> gate_up_proj, down_proj;         // mlp.*
    std::shared_ptr<const FusedLinear> qkv;                   // q/k/v as one matmul, when fused at load
};

class GlmTextModel : public ParamModule {
  public:
    GlmTextModel(const GlmTextConfig& c, at::TensorOptions options);
    std::shared_ptr<Embedding> embed_tokens;
    std::vector<std::shared_ptr<GlmDecoderLayer>> layers;
    std::shared_ptr<RMSNorm> norm;
};

class GlmVisionBlock : public ParamModule {
  public:
    GlmVisionBlock(const GlmVisionConfig& c, at::TensorOptions options);
    std::shared_ptr<LayerNorm> norm1, norm2;
    std::shared_ptr<Linear> qkv, proj;  // attn.*
    std::shared_ptr<Linear> fc1, fc2;   // mlp.*
};

class GlmVisionModel : public ParamModule {
  public:
    GlmVisionModel(const GlmVisionConfig& c, at::TensorOptions options);
    std::shared_ptr<Conv2d> patch_embed;  // patch_embed.proj
    std::shared_ptr<Embedding> position_embedding;  // embeddings.position_embedding
    std::vector<std::shared_ptr<GlmVisionBlock>> blocks;
};

class GlmVQModel : public ParamModule {
  public:
    GlmVQModel(const GlmVQConfig& c, at::TensorOptions options);
    std::shared_ptr<Conv2d> quant_conv, post_quant_conv;
    std::shared_ptr<Embedding> codebook;  // quantize.embedding
};

class GlmArModel : public ParamModule {
  public:
    GlmArModel(const GlmArConfig& config, at::TensorOptions options);
    // Fuses each text decoder layer's q/k/v; returns how many groups fused.
    size_t fuse_projections();

    GlmArConfig config;
    std::shared_ptr<GlmTextModel> language_model;  // model.language_model
    std::shared_ptr<GlmVisionModel> visual;        // model.visual
    std::shared_ptr<GlmVQModel> vqmodel;           // model.vqmodel
    std::shared_ptr<Linear> lm_head;               // rows = vision vocabulary only
};

}  // namespace glmimage
