// The loaded state behind glmimage::Pipeline (private).
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <memory>
#include <optional>

#include "glmimage/glmimage.h"
#include "models/dit/transformer.h"
#include "models/glm_ar/ar_generator.h"
#include "models/glm_ar/image_processor.h"
#include "models/glm_ar/glm_image_model.h"
#include "models/t5/t5_encoder.h"
#include "models/vae/autoencoder_kl.h"
#include "pipeline/model_index.h"
#include "pipeline/decoder.h"
#include "schedulers/flow_match_euler.h"
#include "schedulers/scheduler_config.h"
#include "tokenizers/byt5_tokenizer.h"
#include "tokenizers/glm_processor.h"

namespace glmimage {

struct Pipeline::Impl {
    std::string model_dir;
    LoadOptions options;
    at::Device device = at::kCPU;
    ModelIndex index;
    SchedulerConfig scheduler;
    std::shared_ptr<GlmImageModel> ar;
    std::shared_ptr<T5Encoder> text_encoder;
    std::shared_ptr<GlmImageTransformer> transformer;
    std::shared_ptr<AutoencoderKL> vae;
    std::unique_ptr<ByT5Tokenizer> glyph_tokenizer;     // tokenizer/
    std::unique_ptr<FlowMatchEulerScheduler> sampler;  // from `scheduler`
    std::unique_ptr<GlmProcessor> processor;           // processor/: chat template, tokenizer, grids
    ImageProcessorConfig image_config;                 // processor/preprocessor_config.json
    std::unique_ptr<ArGenerator> ar_generator;         // over `ar`
    std::atomic<bool> cancel_flag{false};

    DecoderModels decoder_models() const {
        return {transformer.get(), text_encoder.get(), vae.get(), glyph_tokenizer.get(), sampler.get()};
    }
    std::vector<ComponentInfo> infos;
};

// Parses LoadOptions::dtype ("auto" -> nullopt).
std::optional<at::ScalarType> parse_dtype_option(const std::string& dtype);
at::Device parse_device_option(const std::string& device);

// Public Image <-> uint8 tensor [H, W, 3] on the CPU (generate.cpp). Both copy.
at::Tensor image_to_tensor(const Image& img);
// InputError unless t is [H, W, 3]; cast to uint8.
Image tensor_to_image(const at::Tensor& t);

// The two stages of Pipeline::generate (generate.cpp).
PriorTokens run_ar_stage(Pipeline::Impl& p, const GenerateRequest& req, const ProgressCallback& progress);
std::vector<Image> run_decoder_stage(Pipeline::Impl& p, const GenerateRequest& req, const PriorTokens& prior,
                                     const ProgressCallback& progress);

}  // namespace glmimage
