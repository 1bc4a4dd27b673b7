// Prompt -> glyph texts -> ByT5 ids, as GlmImagePipeline does it before the T5 glyph encoder
// (diffusion.md 6.2 and 8.4). Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizers/byt5_tokenizer.h"

namespace glmimage {

// GlmImagePipeline.get_glyph_texts for one prompt: the captures of '...', then “...”, then "...",
// then 「...」 (grouped by quote kind, left to right within a kind; quotes pair up in order, an
// unclosed one is dropped; “ and 「 restart at a nested opener). No [""] fallback here.
// InputError on invalid UTF-8.
std::vector<std::string> extract_glyph_texts(const std::string& prompt);

// What _get_glyph_embeds feeds the T5 for one prompt.
struct GlyphTokens {
    std::vector<std::string> texts;       // the glyph texts; [""] when the prompt quotes nothing
    int64_t n_texts = 0;                  // N
    int64_t length = 0;                   // L, the longest id list
    std::vector<int64_t> input_ids;       // [N, L] row-major, right-padded with the pad id
    std::vector<int64_t> attention_mask;  // [N, L]: 1 on ids (the prepended pad included), 0 on padding
};

// Each text tokenized with truncation to max_sequence_length (0 = none), a pad id prepended to
// every list iff the number of texts is even, then right padding to the longest.
GlyphTokens glyph_tokens(const std::string& prompt, const ByT5Tokenizer& tokenizer,
                         int64_t max_sequence_length = 2048);
GlyphTokens tokenize_glyph_texts(std::vector<std::string> texts, const ByT5Tokenizer& tokenizer,
                                 int64_t max_sequence_length = 2048);

}  // namespace glmimage
