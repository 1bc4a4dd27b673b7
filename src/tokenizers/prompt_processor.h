// The text side of transformers' GlmImageProcessor as the diffusers GlmImagePipeline calls it
// (processor.apply_chat_template(messages, tokenize=True, padding=B > 1, target_h, target_w)):
// chat template (condition images first, then the prompt), each <|image|> expanded to its
// source image's grid, the target grid suffix, tokenization, left padding. Source images
// matter only by their size (GLM smart_resize). Torch-free.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "models/glm_ar/preprocessor_config.h"
#include "tokenizers/bpe_tokenizer.h"

namespace glmimage {

struct PromptProcessorOutput {
    std::vector<std::vector<int64_t>> input_ids;       // [B][L], padded (left for GLM-Image) with the pad id
    std::vector<std::vector<int64_t>> attention_mask;  // [B][L], 0 on padding
    // Per sample: its source image grids, then its target grid(s) (t2i: main, preview; i2i: main).
    std::vector<std::array<int64_t, 3>> image_grid_thw;
    std::vector<int64_t> images_per_sample;  // sources + 2 (t2i) or + 1 (i2i), same for every sample
    std::vector<std::string> texts;          // the texts that were tokenized (after expansion)
};

class PromptProcessor {
  public:
    // A saved processor folder: tokenizer.json, tokenizer_config.json (pad / bos token, image and
    // grid tokens), chat_template.jinja (the image placeholder literal); the folder's
    // preprocessor_config.json comes parsed (patch / merge size, min / max pixels).
    // ConfigError / FormatError on bad files.
    static PromptProcessor from_dir(const std::string& dir, const PreprocessorConfig& preprocessor);

    // The chat template for one user message: num_images image placeholders, then the prompt.
    std::string render(const std::string& prompt, int64_t num_images) const;

    // prompts: B >= 1 non-empty prompts; images: empty (text-to-image) or B lists of condition
    // image sizes, the same count for every sample (none anywhere = text-to-image). target_h and
    // target_w: positive multiples of 32. InputError on anything else, on a prompt containing the
    // image token, and on a condition image smart_resize rejects.
    PromptProcessorOutput process(const std::vector<std::string>& prompts, const std::vector<std::vector<ImageSize>>& images,
                               int64_t target_h, int64_t target_w) const;

    // [1, h / patch, w / patch] of a condition image of this size.
    std::array<int64_t, 3> source_grid(ImageSize image) const;
    // th, tw, preview ph, pw for a target size (factor 32; preview about 16 x 16 tokens).
    static std::array<int64_t, 4> target_grid(int64_t target_h, int64_t target_w);

    const BpeTokenizer& tokenizer() const { return tokenizer_; }
    int64_t pad_id() const { return pad_id_; }
    int64_t bos_id() const { return bos_id_; }
    int64_t image_token_id() const { return image_token_id_; }

  private:
    explicit PromptProcessor(BpeTokenizer tok) : tokenizer_(std::move(tok)) {}
    BpeTokenizer tokenizer_;
    std::string bos_token_, pad_token_, image_token_, grid_bos_token_, grid_eos_token_;
    std::string image_placeholder_;  // the template's literal for one image item
    int64_t pad_id_ = 0, bos_id_ = 0, image_token_id_ = 0;
    bool pad_left_ = true;  // tokenizer_config padding_side
    PreprocessorConfig preprocessor_;
};

}  // namespace glmimage
