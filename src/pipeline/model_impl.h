// The loaded state behind glmimage::Model (private): configs, tokenizers, the four module
// trees and where each lives. Immutable after load; per-call state lives in the Session.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <optional>

#include "glmimage/glmimage.h"
#include "models/dit/transformer.h"
#include "models/glm_ar/ar_generator.h"
#include "models/glm_ar/ar_model.h"
#include "models/glm_ar/preprocessor_config.h"
#include "models/t5/t5_encoder.h"
#include "models/vae/autoencoder_kl.h"
#include "pipeline/diffusion_decoder.h"
#include "pipeline/model_index.h"
#include "pipeline/residency.h"
#include "schedulers/flow_match_euler.h"
#include "schedulers/scheduler_config.h"
#include "tokenizers/byt5_tokenizer.h"
#include "tokenizers/prompt_processor.h"

namespace glmimage {

struct Model::Impl {
    std::string model_dir;
    LoadOptions options;
    ModelIndex index;
    SchedulerConfig scheduler_config;                  // scheduler/scheduler_config.json
    std::unique_ptr<FlowMatchEulerScheduler> scheduler;
    std::unique_ptr<ByT5Tokenizer> glyph_tokenizer;    // tokenizer/
    PreprocessorConfig preprocessor;                   // processor/preprocessor_config.json
    std::unique_ptr<PromptProcessor> processor;        // processor/: chat template, tokenizer, grids
    std::shared_ptr<GlmArModel> ar;                    // vision_language_encoder/
    std::shared_ptr<T5Encoder> text_encoder;
    std::shared_ptr<GlmImageTransformer> transformer;
    std::shared_ptr<AutoencoderKL> vae;
    std::unique_ptr<ArGenerator> ar_generator;         // over `ar`
    // One per weighted component, keyed by folder: device, dtype, staged or resident.
    std::map<std::string, std::unique_ptr<ComponentResidency>> residency;
    std::vector<ComponentInfo> infos;
    // vision_language_encoder/generation_config.json's sampling values, transformers' fallbacks
    // where it is silent (every field set), and the source of each.
    ArSettings sampling_defaults;
    std::string sampling_defaults_source;

    const ComponentResidency* home(const std::string& folder) const { return residency.at(folder).get(); }
    DiffusionDecoderModels decoder_models() const {
        DiffusionDecoderModels m{transformer.get(), text_encoder.get(), vae.get(), glyph_tokenizer.get(),
                                 scheduler.get()};
        m.transformer_home = home("transformer");
        m.text_encoder_home = home("text_encoder");
        m.vae_home = home("vae");
        return m;
    }
    // Pixels per DiT patch (VAE scale x patch size): what image sides are floored to.
    int64_t patch_cell() const { return vae->config.scale_factor() * transformer->config.patch_size; }
};

// Parses LoadOptions / ComponentPlacement dtypes ("auto" -> nullopt) and devices.
std::optional<at::ScalarType> parse_dtype_option(const std::string& dtype);
at::Device parse_device_option(const std::string& device);

// Public Image <-> uint8 tensor [H, W, 3] on the CPU (generate.cpp). Both copy.
at::Tensor image_to_tensor(const Image& img);
// InputError unless t is [H, W, 3]; cast to uint8.
Image tensor_to_image(const at::Tensor& t);

// What a stage needs from the session for one call.
struct CallContext {
    const std::atomic<bool>* cancel = nullptr;
    ProgressCallback progress;
    DenoiseStepCallback on_step_end;  // the caller's, or empty
};

// Seconds from t0 to now: the stages' timings.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The two stages of a generation (generate.cpp). `req` has passed Model::validate.
// The prior tokens carry the AR decode path that ran (PriorTokens::ar_decode). The decoder stage
// fills `result`'s images, its "decoder" timing (with how the CFG passes ran, cfg_passes) and
// its DiT pass counts.
PriorTokens run_ar_stage(const Model::Impl& m, const GenerateRequest& req, const CallContext& call);
void run_decoder_stage(const Model::Impl& m, const GenerateRequest& req, const PriorTokens& prior,
                       const CallContext& call, GenerateResult& result);
// The decoder's glyph embeddings of req.prompts (Session::encode_prompts).
PromptEmbeddings run_prompt_encoder(const Model::Impl& m, const GenerateRequest& req);

}  // namespace glmimage
