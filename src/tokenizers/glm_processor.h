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

#include "tokenizers/bpe_tokenizer.h"

namespace glmimage {

struct ImageSize {
    int64_t height = 0;
    int64_t width = 0;
};

// GLM-Image's smart_resize (transformers image_processing_glm_image.py): the size an image of
// height x width is resized to, both multiples of `factor`. Scales the short side up to
// sqrt(min_pixels) and the long side down to sqrt(max_pixels), halves the input, rounds half to
// even. InputError if a side is below `factor` or the aspect ratio exceeds 4.
ImageSize glm_smart_resize(int64_t height, int64_t width, int64_t factor = 16, int64_t min_pixels = 512 * 512,
                           int64_t max_pixels = 2048 * 2048);

struct GlmProcessorOutput {
    std::vector<std::vector<int64_t>> input_ids;       // [B][L], padded (left for GLM-Image) with the pad id
    std::vector<std::vector<int64_t>> attention_mask;  // [B][L], 0 on padding
    // Per sample: its source image grids, then its target grid(s) (t2i: main, preview; i2i: main).
    std::vector<std::array<int64_t, 3>> image_grid_thw;
    std::vector<int64_t> images_per_sample;  // sources + 2 (t2i) or + 1 (i2i), same for every sample
    std::vector<std::string> texts;          // the texts that were tokenized (after expansion)
};

class GlmProcessor {
  public:
    // A saved processor folder: tokenizer.json, tokenizer_config.json (pad / bos token, image and
    // grid tokens), preprocessor_config.json (patch / merge size, min / max pixels),
    // chat_template.jinja (the image placeholder literal). ConfigError / FormatError on bad files.
    static GlmProcessor from_dir(const std::string& dir);

    // The chat template for one user message: num_images image placeholders, then the prompt.
    std::string render(const std::string& prompt, int64_t num_images) const;

    // prompts: B >= 1 non-empty prompts; images: empty (text-to-image) or B lists of condition
    // image sizes, the same count for every sample (none anywhere = text-to-image). target_h and
    // target_w: positive multiples of 32. InputError on anything else, on a prompt containing the
    // image token, and on a condition image smart_resize rejects.
    GlmProcessorOutput process(const std::vector<std::string>& prompts, const std::vector<std::vector<ImageSize>>& images,
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
    explicit GlmProcessor(BpeTokenizer tok) : tokenizer_(std::move(tok)) {}
    BpeTokenizer tokenizer_;
    std::string bos_token_, pad_token_, image_token_, grid_bos_token_, grid_eos_token_;
    std::string image_placeholder_;  // the template's literal for one image item
    int64_t pad_id_ = 0, bos_id_ = 0, image_token_id_ = 0;
    bool pad_left_ = true;  // tokenizer_config padding_side
    int64_t patch_size_ = 16, merge_size_ = 1, min_pixels_ = 0, max_pixels_ = 0;
};

}  // namespace glmimage
