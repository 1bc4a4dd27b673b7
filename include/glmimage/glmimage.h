// glmimage: native GLM-Image inference. The public C++ API; no LibTorch types here.
//
//   auto model = glmimage::Model::load("GLM-Image", {/*device=*/"cuda", /*dtype=*/"bfloat16"});
//   glmimage::Session session(model);            // one per thread / caller; all share the weights
//   glmimage::GenerateRequest req;
//   req.prompts = {"A poster that says \"Hello\""};
//   req.height = 1024; req.width = 1024; req.seed = 42;
//   glmimage::GenerateResult res = session.generate(req);
//   // res.images[0]: 1024x1024 RGB8
//
// glmimage::Pipeline bundles one Model and one Session for the common single-caller case.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "glmimage/errors.h"
#include "glmimage/options.h"

namespace glmimage {

// An 8-bit RGB image, rows top to bottom, 3 bytes per pixel, no padding.
struct Image {
    int64_t height = 0;
    int64_t width = 0;
    std::vector<uint8_t> rgb;  // height * width * 3 bytes

    // InputError unless the sizes are positive and rgb holds height * width * 3 bytes.
    void validate(const std::string& what) const;
};

// Autoregressive sampling. An unset value is the checkpoint's own: its
// vision_language_encoder/generation_config.json, else transformers' fallback (as the reference's
// generate() takes them); Model::sampling_defaults() shows what they resolve to.
struct ArSettings {
    bool do_sample = true;               // false: greedy (argmax). The reference always samples
    std::optional<double> temperature;   // > 0; fallback 1.0
    std::optional<double> top_p;         // in (0, 1]; 1 disables; fallback 1.0
    std::optional<int64_t> top_k;        // >= 0; 0 disables; fallback 50
    // Keep sampled ids inside the VQ codebook while a grid is generated, so a bad sample can
    // never end a grid early or crash the decoder. The reference has no such guard.
    bool keep_in_codebook = true;

    // InputError on a value outside the ranges above (only checked when do_sample is on).
    void validate() const;
    // These settings, each unset value taken from `defaults`.
    ArSettings with_defaults(const ArSettings& defaults) const;
};

struct GenerateRequest {
    std::vector<std::string> prompts;         // one or more non-empty prompts
    std::vector<std::vector<Image>> images;   // condition images per prompt (image-to-image); empty: text-to-image
    int64_t height = 1024;                    // pixels, a multiple of 32
    int64_t width = 1024;                     // pixels, a multiple of 32
    int64_t steps = 50;                       // denoising steps, >= 1
    double guidance = 1.5;                    // classifier-free guidance; <= 1 disables
    uint64_t seed = 0;                        // seeds both the AR sampler and the initial latents
    int64_t images_per_prompt = 1;            // images per prompt (prior tokens are shared)
    ArSettings ar;
    std::string timestep_label = "0.39";      // "0.39": the checkpoint's DiT timestep label; "0.40": diffusers >= 0.40
    int64_t max_sequence_length = 2048;       // glyph (quoted text) bytes per string, eos included
    // Custom denoising schedules, as diffusers' `timesteps=` / `sigmas=` (empty: the default, an
    // even spacing of `steps` integer timesteps from 1000 and sigma = timestep / 1000). Either
    // holds one value per step (`steps` must equal its size). timesteps: truncated to integers as
    // the reference does, each the DiT's label (minus 1) at its step, finite, in [0, 1e9];
    // sigmas: the noise levels before the resolution shift, finite, >= 0. The last sigma is
    // always followed by 0.
    std::vector<double> timesteps;
    std::vector<double> sigmas;
    // Initial latents instead of the seed's draw, as diffusers' `latents=`: finite float32 values,
    // row-major, of shape latents_shape = [prompts x images_per_prompt, C, height / s, width / s]
    // (C the DiT's in_channels and s the VAE's scale factor: 16 and 8 for GLM-Image; checked
    // against the checkpoint by Model::validate). The loop starts from them in float32, which is
    // where diffusers' first Euler step takes a caller's latents of any dtype. Empty: drawn from
    // `seed` in the pipeline dtype, as diffusers draws them from its generator.
    std::vector<float> latents;
    std::vector<int64_t> latents_shape;
    // The DiT's crop conditioning, as diffusers' `crops_coords_top_left=(top, left)`: pixels,
    // each in [0, 1e6]; (0, 0), the default, is the uncropped image the model was trained on.
    int64_t crop_top = 0;
    int64_t crop_left = 0;
    // First Block Cache, an approximation: 0 (the default) off, the reference's images. A
    // threshold T > 0: at each denoising step every CFG pass runs the DiT's first block, and where
    // the change it makes to the image tokens differs from the one at that pass's last full step by
    // at most T (relative mean absolute difference), the other blocks do not run and their change
    // at that step is reused. Higher skips more steps and moves further from the exact images;
    // ParaAttention's FBCache suggests 0.05 to 0.2 (diffusers' FirstBlockCacheConfig default 0.05).
    // GenerateResult::dit_passes_cached counts the passes it served.
    double first_block_cache = 0;
    // Glyph embeddings instead of the glyph encoder's, as diffusers' `prompt_embeds=` (the
    // conditional pass's) and `negative_prompt_embeds=` (the unconditional pass's): finite
    // float32 values, row-major, of shape [prompts, L, C], C the DiT's text_embed_dim (the glyph
    // encoder's width: 1472 for GLM-Image), L >= 1 (the two may differ); each prompt's rows serve
    // all its images_per_prompt. bf16 and fp16 values arrive exactly. With prompt_embeds the
    // prompts may be left empty where the prior tokens are given (decode_prior_tokens): the AR
    // stage needs them, the decoder then does not. Empty: computed from the prompts' quoted text
    // (the unconditional pass's: from no text), as the reference does.
    std::vector<float> prompt_embeds;
    std::vector<int64_t> prompt_embeds_shape;
    std::vector<float> negative_prompt_embeds;
    std::vector<int64_t> negative_prompt_embeds_shape;
    // What GenerateResult carries, as diffusers' output_type:
    //   kImages       8-bit RGB in GenerateResult::images (diffusers' "pil");
    //   kFloatImages  the VAE's images de-normalized to [0, 1] in GenerateResult::float_images,
    //                 before any 8-bit rounding (diffusers' "np"; its "pt" holds the same values);
    //   kLatents      the denoised latents in GenerateResult::latents (diffusers' "latent"): the
    //                 VAE does not run.
    enum class Output { kImages, kFloatImages, kLatents };
    Output output = Output::kImages;

    // InputError on any value outside the ranges above. Needs no model: the CLI and the Python
    // module call it before loading. Model::validate adds the checkpoint-dependent rules.
    void validate() const;
    std::string to_string() const;
    // How many prompts the request holds: prompts.size(), or, with none given, prompt_embeds'.
    int64_t num_prompts() const;
};

// What the autoregressive stage produces, per prompt; the decoder's input.
struct PriorTokens {
    int64_t grid_h = 0, grid_w = 0;           // main AR grid (height/32, width/32)
    std::vector<std::vector<int64_t>> ids;    // per prompt: the main grid upsampled 2x, (2*grid_h)*(2*grid_w) ids
    // Per prompt, per condition image: its VQ ids upsampled 2x (image-to-image only).
    std::vector<std::vector<std::vector<int64_t>>> condition_ids;
    // Per prompt, per condition image: (rows, columns) of its condition_ids grid (row-major), as
    // diffusers' source_image_grid_thw gives them (without its t of 1). Filled by the AR stage;
    // read by nothing (the decoder takes each grid from its image's size).
    std::vector<std::vector<std::pair<int64_t, int64_t>>> condition_grids;
    // The AR decode path that produced them ("graph", "static", "eager"; see LoadOptions::ar_decode);
    // empty for tokens the caller made. Read by nothing: it tells what ran.
    std::string ar_decode;
};

struct StageTiming {
    std::string stage;  // "ar", "decoder", ...
    double seconds = 0;
    std::string detail;  // "ar": the decode path that ran ("graph", "static", "eager"; see LoadOptions::ar_decode);
                         // "decoder": how the CFG passes ran: "joint" (one forward, on a GPU), "apart"
                         // (two, as diffusers; on the CPU) or "none" (guidance <= 1)
};

struct GenerateResult {
    std::vector<Image> images;  // prompts.size() * images_per_prompt, prompt-major (Output::kImages)
    // With Output::kLatents (else empty): float32 values, row-major, of shape
    // latents_shape = [prompts x images_per_prompt, C, height / s, width / s], prompt-major, as
    // the loop left them (before the VAE's de-normalization).
    std::vector<float> latents;
    std::vector<int64_t> latents_shape;
    // With Output::kFloatImages (else empty): float32 values in [0, 1], row-major, of shape
    // float_images_shape = [prompts x images_per_prompt, height, width, 3], prompt-major: the
    // VAE's output de-normalized in the VAE's dtype (so bf16 values where it computes in bf16).
    // images[i] would be round(255 * these).
    std::vector<float> float_images;
    std::vector<int64_t> float_images_shape;
    PriorTokens prior_tokens;
    std::vector<StageTiming> timings;
    // The denoising loop's DiT passes (each step's conditional and unconditional forward, counted
    // apart however they ran, over the steps taken: fewer where a DenoiseStepCallback stopped or
    // turned guidance off) and
    // how many of them ran the first block alone (GenerateRequest::first_block_cache; 0 when it is
    // off).
    int64_t dit_passes = 0;
    int64_t dit_passes_cached = 0;
};

// Glyph embeddings as diffusers' encode_prompt returns them (before its repeat for
// num_images_per_prompt): what GenerateRequest::prompt_embeds / negative_prompt_embeds take back.
struct PromptEmbeddings {
    // Each prompt's quoted text through the glyph encoder, left-padded with zero rows to the
    // longest prompt's: float32 values, row-major, of shape [prompts, L, C] (C the DiT's
    // text_embed_dim), the DiT's dtype's values, as the decoder uses them.
    std::vector<float> prompt_embeds;
    std::vector<int64_t> prompt_embeds_shape;
    // The unconditional pass's, from no text: [prompts, 1, C].
    std::vector<float> negative_prompt_embeds;
    std::vector<int64_t> negative_prompt_embeds_shape;
};

struct Progress {
    std::string stage;  // "ar" (tokens) or "denoise" (steps)
    int64_t step = 0;   // done so far
    int64_t total = 0;
};
using ProgressCallback = std::function<void(const Progress&)>;

// The latents after one denoising step, handed to a DenoiseStepCallback (diffusers'
// `callback_on_step_end`). The callback may change the values, not their number: the next step
// starts from them, and the VAE decodes them after the last. Setting `stop` ends the denoising
// here, as diffusers' `pipe._interrupt` does: the images are decoded from these latents.
struct DenoiseStep {
    int64_t step = 0;            // the step just taken, from 0
    int64_t total = 0;           // the schedule's steps
    double sigma = 0;            // the noise level the step started from (the shifted schedule's), diffusers' `t`
    double timestep = 0;         // the scheduler's timestep of the step (diffusers' `pipe.current_timestep`)
    std::vector<int64_t> shape;  // [prompts x images_per_prompt, C, height / s, width / s]
    std::vector<float> latents;  // float32 values, row-major, prompt-major: finite when handed back
    bool stop = false;
    // The guidance the steps after this one use: the request's, or what an earlier callback set.
    // The callback may change it, as diffusers' loop reads `pipe._guidance_scale` at every step:
    // at or below 1 the steps run the conditional pass alone ("dynamic CFG": the unconditional
    // pass's time saved), above 1 with both. Finite; above 1 only where the call started above 1
    // (without guidance there are no unconditional embeddings): InputError otherwise.
    double guidance = 0;
};
using DenoiseStepCallback = std::function<void(DenoiseStep&)>;

// Per-component facts of a loaded checkpoint.
struct ComponentInfo {
    std::string folder;       // "transformer", "vae", ...
    std::string class_name;   // class named in model_index.json
    std::string summary;      // one line from the parsed config
    std::string dtype;        // dtype the weights compute in ("BF16", "F32", ...)
    std::string device;       // where they compute ("cpu", "cuda:0")
    std::string residency;    // "resident" or "staged"
    size_t num_tensors = 0;
    long long num_parameters = 0;
    size_t zero_copy = 0;     // tensors used straight from the mapped file while resident
    size_t quantized = 0;     // Linear weights held in int8 or fp8 (LoadOptions::quantize)
    size_t fused = 0;         // q/k/v projection groups run as one matmul (fused at load)
};

// The loaded checkpoint: configs, tokenizers and weights. Immutable after load and safe to
// share between threads and sessions (the weights are read, never written; "staged"
// components are moved on and off their device under an internal lock, and only when no
// session is using them).
class Model {
  public:
    // Loads a checkpoint directory in the published diffusers layout (model_index.json and
    // one folder per component). Strict: any weight that does not fit is reported.
    static std::shared_ptr<const Model> load(const std::string& model_dir, const LoadOptions& options = {});
    ~Model();

    // The request's rules that depend on this checkpoint (condition images that fit the VQ and
    // latent grids, ...), after GenerateRequest::validate. InputError, before any large work.
    void validate(const GenerateRequest& request) const;

    const std::vector<ComponentInfo>& components() const;
    std::string summary() const;  // multi-line description of every component
    // The sampling values an ArSettings left unset resolves to (every field set), and where they
    // came from: "generation_config.json" or "transformers default", per field.
    const ArSettings& sampling_defaults() const;
    std::string sampling_defaults_source() const;

    struct Impl;
    const Impl& impl() const { return *impl_; }

  private:
    explicit Model(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Per-caller state over a shared Model: the cancel request and the per-call buffers (KV
// caches, generators). Calls on one Session run one at a time: a second call from another
// thread waits for the first (queued, not refused). Use one Session per concurrent caller.
class Session {
  public:
    explicit Session(std::shared_ptr<const Model> model);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Prompt(s) -> images: the AR stage, then the diffusion decoder. Throws InputError for bad
    // requests (before any large work), CancelledError after cancel(). `on_step_end`, where set,
    // sees (and may change or stop at) the latents after each denoising step; an InputError if it
    // hands back latents of another size or non-finite values.
    GenerateResult generate(const GenerateRequest& request, const ProgressCallback& progress = {},
                            const DenoiseStepCallback& on_step_end = {});
    // Only the AR stage.
    PriorTokens generate_prior_tokens(const GenerateRequest& request, const ProgressCallback& progress = {});
    // The glyph embeddings the decoder computes for request.prompts (and its max_sequence_length),
    // for a caller to read or change and hand back through GenerateRequest::prompt_embeds /
    // negative_prompt_embeds, as diffusers' encode_prompt. Runs the glyph encoder only. With no
    // prompts (request.prompt_embeds standing for them), only the negative's, for as many prompts.
    PromptEmbeddings encode_prompts(const GenerateRequest& request);
    // Only the diffusion decoder, from prior tokens (as diffusers' `prior_token_ids=`).
    GenerateResult decode_prior_tokens(const GenerateRequest& request, const PriorTokens& prior,
                                       const ProgressCallback& progress = {},
                                       const DenoiseStepCallback& on_step_end = {});

    // Stops this session's running call at its next step, or, when none is running, the next
    // call to start (a cancel is never lost). Thread-safe; other sessions are not affected.
    void cancel();

    // The model the calls made from now on run on (diffusers' `pipe.to(...)` and
    // `enable_model_cpu_offload()` load the checkpoint again with the new placement and hand it
    // here). Thread-safe and does not wait: a call made before (running, or queued behind one)
    // runs on the model it was made with, which is freed when the last such call ends and no other
    // session holds it. InputError on a null model.
    void replace_model(std::shared_ptr<const Model> model);

    // The model of the calls that start now. model()'s reference is valid until the next
    // replace_model(); shared_model() keeps it alive.
    const Model& model() const { return *shared_model(); }
    std::shared_ptr<const Model> shared_model() const;

  private:
    class Call;  // one running call: holds call_mutex_, owns its cancel flag (session.cpp)

    std::mutex call_mutex_;          // held for a whole call: calls on one session queue here
    mutable std::mutex state_mutex_;  // guards the three fields below
    std::shared_ptr<const Model> model_;
    std::shared_ptr<std::atomic<bool>> running_cancel_;  // the running call's flag, or null
    bool pending_cancel_ = false;                        // cancel() with no call running
};

// One Model and one Session: the whole API for a single caller.
class Pipeline {
  public:
    static std::unique_ptr<Pipeline> load(const std::string& model_dir, const LoadOptions& options = {});
    // Another pipeline over the same loaded weights (no second copy), with its own session.
    explicit Pipeline(std::shared_ptr<const Model> model);

    GenerateResult generate(const GenerateRequest& request, const ProgressCallback& progress = {},
                            const DenoiseStepCallback& on_step_end = {}) {
        return session_.generate(request, progress, on_step_end);
    }
    PriorTokens generate_prior_tokens(const GenerateRequest& request, const ProgressCallback& progress = {}) {
        return session_.generate_prior_tokens(request, progress);
    }
    PromptEmbeddings encode_prompts(const GenerateRequest& request) { return session_.encode_prompts(request); }
    GenerateResult decode_prior_tokens(const GenerateRequest& request, const PriorTokens& prior,
                                       const ProgressCallback& progress = {},
                                       const DenoiseStepCallback& on_step_end = {}) {
        return session_.decode_prior_tokens(request, prior, progress, on_step_end);
    }
    void cancel() { session_.cancel(); }
    // Session::replace_model.
    void replace_model(std::shared_ptr<const Model> model) { session_.replace_model(std::move(model)); }

    std::vector<ComponentInfo> components() const { return session_.shared_model()->components(); }
    std::string summary() const { return session_.shared_model()->summary(); }
    const Model& model() const { return session_.model(); }
    std::shared_ptr<const Model> shared_model() const { return session_.shared_model(); }
    Session& session() { return session_; }

  private:
    Session session_;
};

const char* version();

// The quoted texts of a prompt that the decoder renders through the glyph encoder, as diffusers'
// GlmImagePipeline.get_glyph_texts finds them: '...', then “...”, then "...", then 「...」 (grouped
// by quote kind). InputError on invalid UTF-8.
std::vector<std::string> glyph_texts(const std::string& prompt);

}  // namespace glmimage
