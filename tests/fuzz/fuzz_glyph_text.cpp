// Glyph-text extraction (the quoted strings of a prompt) and ByT5 ids: arbitrary bytes give
// tokens within the length bound, or an InputError, never a crash.
#include <string>

#include "glmimage/errors.h"
#include "tokenizers/byt5_tokenizer.h"
#include "tokenizers/glyph_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace glmimage;
    static const ByT5Tokenizer tok = ByT5Tokenizer::from_dir(GLMI_TINY_DIR "/tokenizer");
    if (size == 0) return 0;
    const int64_t max_len = 1 + data[0] % 64;  // first byte: the length bound, 1..64
    const std::string prompt(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        const GlyphTokens g = glyph_tokens(prompt, tok, max_len);
        // Truncated to max_len, plus the pad id prepended when the number of texts is even.
        if (g.length > max_len + 1) __builtin_trap();
        if (g.input_ids.size() != static_cast<size_t>(g.n_texts * g.length)) __builtin_trap();
    } catch (const InputError&) {
    }
    return 0;
}
