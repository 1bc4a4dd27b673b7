// GlmImageTransformer2DModel: the module tree, named exactly like transformer/*.safetensors.
#pragma once

#include <memory>
#include <vector>

#include "layers/linear.h"
#include "layers/norms.h"
#include "models/dit/config.h"

namespace glmimage {

// diffusers FeedForward / projector layout: net.0.proj (Linear + activation), net.1
// (dropout, no weights), net.2 (Linear).
class DiTFeedForward : public ParamModule {
  public:
    DiTFeedForward(int64_t in, int64_t hidden, int64_t out, at::TensorOptions options);
    std::shared_ptr<Linear> proj_in;   // net.0.proj
    std::shared_ptr<Linear> proj_out;  // net.2
};

class DiTTimeConditionEmbed : public ParamModule {
  public:
    DiTTimeConditionEmbed(const DiTConfig& c, at::TensorOptions options);
    std::shared_ptr<Linear> t_linear_1, t_linear_2;  // timestep_embedder.linear_{1,2}
    std::shared_ptr<Linear> c_linear_1, c_linear_2;  // condition_embedder.linear_{1,2}
};

class DiTBlock : public ParamModule {
  public:
    DiTBlock(const DiTConfig& c, at::TensorOptions options);
    std::shared_ptr<Linear> adaln;  // norm1.linear: temb -> 12 modulation chunks
    std::shared_ptr<Linear> to_q, to_k, to_v, to_out;  // attn1.*
    std::shared_ptr<DiTFeedForward> ff;
};

class GlmImageTransformer : public ParamModule {
  public:
    GlmImageTransformer(const DiTConfig& config, at::TensorOptions options);

    DiTConfig config;
    std::shared_ptr<Linear> image_projector;  // image_projector.proj
    std::shared_ptr<DiTFeedForward> glyph_projector;
    std::shared_ptr<Embedding> prior_token_embedding;
    std::shared_ptr<DiTFeedForward> prior_projector;
    std::shared_ptr<DiTTimeConditionEmbed> time_condition_embed;
    std::vector<std::shared_ptr<DiTBlock>> blocks;  // transformer_blocks.N
    std::shared_ptr<Linear> norm_out;  // norm_out.linear: temb -> (scale, shift)
    std::shared_ptr<Linear> proj_out;
};

}  // namespace glmimage
