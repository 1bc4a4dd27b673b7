// GlmImageTransformer2DModel: the module tree, named exactly like transformer/*.safetensors,
// and its forward pass (diffusers transformer_glm_image.py; spec: shared/reference/diffusion.md §2-4).
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "layers/linear.h"
#include "layers/norms.h"
#include "models/dit/config.h"
#include "models/dit/first_block_cache.h"
#include "models/dit/kv_cache.h"
#include "models/dit/rope.h"

namespace glmimage {

// diffusers FeedForward / projector layout: net.0.proj (Linear + activation), net.1
// (dropout, no weights), net.2 (Linear).
class DiTFeedForward : public ParamModule {
  public:
    enum class Activation { kGeluExact, kGeluTanh, kSilu };
    DiTFeedForward(int64_t in, int64_t hidden, int64_t out, Activation act, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x) const;
    // forward() of each input, as separate products, layer by layer: each weight's products follow
    // one another, so that those of a few rows read the weight from the cache where the first, of
    // many rows, has just left it.
    std::vector<at::Tensor> forward_each(const std::vector<at::Tensor>& xs) const;

    std::shared_ptr<Linear> proj_in;   // net.0.proj
    std::shared_ptr<Linear> proj_out;  // net.2
    Activation act;
};

// temb = SiLU(MLP_t(sin(timestep)) + MLP_c([sin(crop), sin(target_size)])), [B, time_embed_dim].
class DiTTimeConditionEmbed : public ParamModule {
  public:
    DiTTimeConditionEmbed(const DiTConfig& c, at::TensorOptions options);
    // timestep [B] (or [1]); target_size, crop_coords [B, 2] (or [1, 2]), any real dtype. The
    // sinusoids are float32, cast to `dtype` before the MLPs.
    at::Tensor forward(const at::Tensor& timestep, const at::Tensor& target_size, const at::Tensor& crop_coords,
                       at::ScalarType dtype) const;

    std::shared_ptr<Linear> t_linear_1, t_linear_2;  // timestep_embedder.linear_{1,2}
    std::shared_ptr<Linear> c_linear_1, c_linear_2;  // condition_embedder.linear_{1,2}
    int64_t time_dim, condition_dim;
};

class DiTBlock : public ParamModule {
  public:
    DiTBlock(const DiTConfig& c, at::TensorOptions options);
    // x: image tokens [B, S, D]; texts: the text tokens of each group of samples, [B_g, L_g, D]
    // (the B_g sum to B; the groups are x's rows in order; see forward_projected);
    // modulation = this block's adaln(temb), [B, 12 D]. Returns the new (x, texts). `kv` is this
    // block's slot `layer` of a condition-image cache, or null: the first group's attention
    // passes through it in its mode, the others' never.
    std::pair<at::Tensor, std::vector<at::Tensor>> forward(const at::Tensor& x, const std::vector<at::Tensor>& texts,
                                                           const at::Tensor& modulation, const DiTRope& rope,
                                                           DiTKVCache* kv, int64_t layer) const;

    std::shared_ptr<Linear> adaln;  // norm1.linear: temb -> 12 modulation chunks
    std::shared_ptr<Linear> to_q, to_k, to_v, to_out;  // attn1.*
    std::shared_ptr<const FusedLinear> qkv;             // to_q/k/v as one matmul, when fused at load
    std::shared_ptr<DiTFeedForward> ff;
    int64_t n_heads, head_dim;

  private:
    // Where the attention's rows sit in one [rows, D] buffer: each sample's [text; image] tokens,
    // sample after sample and group after group (group g: samples[g] samples of n_text[g] + n_image
    // tokens from row first[g]; the batch's samples from first_sample[g]).
    struct JointRows {
        JointRows(const std::vector<at::Tensor>& texts, int64_t n_image);
        at::Tensor group(const at::Tensor& buffer, size_t g) const;  // [B_g, n_text + n_image, D] view
        at::Tensor text(const at::Tensor& buffer, size_t g) const;   // [B_g, n_text, D] view
        at::Tensor image(const at::Tensor& buffer, size_t g) const;  // [B_g, n_image, D] view
        at::Tensor samples_of(const at::Tensor& batch, size_t g) const;  // group g's samples of [B, ...]
        std::vector<int64_t> first, first_sample, samples, n_text;
        int64_t n_image = 0, rows = 0;
    };
    // Joint attention over [text, image] within each group, seq laid out as `rows` says; returns
    // the output projection's rows in the same layout.
    at::Tensor attention(const at::Tensor& seq, const JointRows& rows, const DiTRope& rope, DiTKVCache* kv,
                         int64_t layer) const;
    // norm * (1 + scale) + shift, scale and shift one vector per sample [B, D], for the call that
    // computes it to write where its reader wants it.
    struct Modulated {
        at::Tensor norm, scale, shift;
    };
    // ff over the image rows x [B, S, D] and each text group's rows [B_g, L_g, D], given as the
    // modulations that make them: returns the outputs in the same shapes (see the definition for
    // which rows share a call).
    std::pair<at::Tensor, std::vector<at::Tensor>> feed_forward(const Modulated& x,
                                                                const std::vector<Modulated>& texts) const;
};

// What one denoising step's timestep gives every block: the embedding and each adaLN's output.
// Both CFG passes of a step take the same, so the sampler computes it once per step: the adaLN
// weights are 1.5 GB at the real size, read by one-row products (about 0.1 s a pass here). A
// block's modulation is computed when a block first asks for it, so that a step whose later blocks
// do not run (the first-block cache) never reads their weights; the conditionings made from one
// (rows()) share those products.
class DiTStepConditioning {
  public:
    DiTStepConditioning() = default;
    // adaln: each block's norm1.linear; temb [B, T]; norm_out: norm_out.linear(temb) [B, 2 D].
    DiTStepConditioning(std::vector<std::shared_ptr<Linear>> adaln, at::Tensor temb, at::Tensor norm_out);

    size_t num_blocks() const { return products_ ? products_->adaln.size() : 0; }
    const at::Tensor& temb() const { return temb_; }          // [rows, T]
    const at::Tensor& norm_out() const { return norm_out_; }  // [rows, 2 D]
    // Block i's modulation adaln_i(temb), [rows, 12 D]. The product runs over the step's own rows
    // (the row count the reference's pass gives it) and is then gathered to these rows.
    at::Tensor block(size_t i) const;
    // This conditioning's rows `index` (int64, in order; rows may repeat): a batch and its copy
    // for both CFG passes in one forward, or the groups that run alone.
    DiTStepConditioning rows(const at::Tensor& index) const;

  private:
    struct Products {
        std::vector<std::shared_ptr<Linear>> adaln;
        at::Tensor temb;                     // the step's own rows
        std::vector<at::Tensor> modulation;  // per block, undefined until asked
    };
    std::shared_ptr<Products> products_;
    at::Tensor index_;  // rows of products_->temb; undefined: all, in order
    at::Tensor temb_, norm_out_;
};

class GlmImageTransformer : public ParamModule {
  public:
    GlmImageTransformer(const DiTConfig& config, at::TensorOptions options);
    // Fuses each block's to_q/to_k/to_v; returns how many groups fused.
    size_t fuse_projections();

    // The velocity prediction [B, out_channels, H, W] in the model dtype.
    //   hidden_states         [B, in_channels, H, W], H and W multiples of patch_size
    //   encoder_hidden_states [B, L, text_embed_dim] glyph embeddings (L may be 0)
    //   prior_token_id        [B, S] integer, S = (H/p)(W/p), values in [0, codebook); [S] when B = 1
    //   prior_token_drop      bool, shape of prior_token_id (true zeroes that token's embedding);
    //                         undefined = none dropped
    //   timestep              [B] or [1], the label as the pipeline passes it (e.g. 999.0)
    //   target_size           [B, 2] or [1, 2] (height, width) in pixels; crop_coords likewise (top, left)
    //   kv_cache              condition-image cache driven by its mode, or null
    //   rope                  tables from make_rope(H, W), or null to compute them here
    // Inputs are moved to the model's device and dtype. Bad shapes or ids raise InputError.
    at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                       const at::Tensor& prior_token_id, const at::Tensor& prior_token_drop,
                       const at::Tensor& timestep, const at::Tensor& target_size, const at::Tensor& crop_coords,
                       DiTKVCache* kv_cache = nullptr, const DiTRope* rope = nullptr) const;

    // Pieces of forward() that stay fixed across the denoising steps of one prompt, so a sampler
    // can compute them once and call forward_projected() per step.
    DiTRope make_rope(int64_t latent_h, int64_t latent_w) const;
    at::Tensor project_text(const at::Tensor& encoder_hidden_states) const;  // glyph_projector: [B, L, D]
    at::Tensor project_prior(const at::Tensor& prior_token_id, const at::Tensor& prior_token_drop,
                             int64_t batch, int64_t n_tokens) const;  // prior_projector: [B, S, D]
    at::Tensor embed_time(const at::Tensor& timestep, const at::Tensor& target_size,
                          const at::Tensor& crop_coords, int64_t batch) const;  // temb: [B, T]
    DiTStepConditioning condition_step(const at::Tensor& temb) const;
    // hidden_states as in forward(); the other tensors from the functions above.
    at::Tensor forward_projected(const at::Tensor& hidden_states, const at::Tensor& text_tokens,
                                 const at::Tensor& prior_tokens, const DiTStepConditioning& step,
                                 const DiTRope& rope, DiTKVCache* kv_cache = nullptr,
                                 FirstBlockCachePass* first_block_cache = nullptr) const {
        return forward_projected(hidden_states, std::vector<at::Tensor>{text_tokens}, prior_tokens, step, rope,
                                 kv_cache, first_block_cache ? FirstBlockCachePasses{first_block_cache}
                                                             : FirstBlockCachePasses{});
    }
    // The batch in groups of samples whose texts differ in length (CFG's conditional and
    // unconditional passes in one forward): text_groups[g] is [B_g, L_g, D], the B_g summing to
    // the batch, the groups in the batch's row order. Each linear runs once over the rows of all
    // groups, except the text's feed-forward; attention and the text's feed-forward run per group,
    // as separate forwards run them. A kv_cache is read by the first group alone (it must be in
    // read or off mode when there are several). first_block_cache: empty, or one pass state per
    // group (the group's CFG pass), each deciding for its group's samples whether the blocks after
    // the first run (first_block_cache.h); a group whose blocks run while another's do not runs
    // them alone.
    using FirstBlockCachePasses = std::vector<FirstBlockCachePass*>;
    at::Tensor forward_projected(const at::Tensor& hidden_states, const std::vector<at::Tensor>& text_groups,
                                 const at::Tensor& prior_tokens, const DiTStepConditioning& step,
                                 const DiTRope& rope, DiTKVCache* kv_cache = nullptr,
                                 const FirstBlockCachePasses& first_block_cache = {}) const;
    at::Tensor forward_projected(const at::Tensor& hidden_states, const at::Tensor& text_tokens,
                                 const at::Tensor& prior_tokens, const at::Tensor& temb, const DiTRope& rope,
                                 DiTKVCache* kv_cache = nullptr) const {
        return forward_projected(hidden_states, text_tokens, prior_tokens, condition_step(temb), rope, kv_cache);
    }

    // From the prior-token table, which is never quantized (the Linear weights may be int8).
    at::ScalarType dtype() const { return prior_token_embedding->weight.scalar_type(); }
    at::Device device() const { return prior_token_embedding->weight.device(); }

    DiTConfig config;
    std::shared_ptr<Linear> image_projector;  // image_projector.proj
    std::shared_ptr<DiTFeedForward> glyph_projector;
    std::shared_ptr<Embedding> prior_token_embedding;
    std::shared_ptr<DiTFeedForward> prior_projector;
    std::shared_ptr<DiTTimeConditionEmbed> time_condition_embed;
    std::vector<std::shared_ptr<DiTBlock>> blocks;  // transformer_blocks.N
    std::shared_ptr<Linear> norm_out;  // norm_out.linear: temb -> (scale, shift)
    std::shared_ptr<Linear> proj_out;

  private:
    void check_latent(const at::Tensor& hidden_states) const;
    // Blocks [from, to) over the image tokens x and the text groups, in place.
    void run_blocks(at::Tensor& x, std::vector<at::Tensor>& texts, const DiTStepConditioning& step,
                    const DiTRope& rope, DiTKVCache* kv_cache, size_t from, size_t to) const;
    // The blocks with the first-block cache (one pass state per text group); returns x after the last.
    at::Tensor run_blocks_cached(at::Tensor x, std::vector<at::Tensor> texts, const DiTStepConditioning& step,
                                 const DiTRope& rope, DiTKVCache* kv_cache,
                                 const FirstBlockCachePasses& passes) const;
};

}  // namespace glmimage
