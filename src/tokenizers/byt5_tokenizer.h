// ByT5Tokenizer (transformers, slow tokenizer) for the glyph encoder: UTF-8 bytes b -> b + 3, added
// tokens ("<pad>" 0, "</s>" 1, "<unk>" 2, "<extra_id_N>") matched as whole strings first, with
// their lstrip / rstrip flags eating adjacent Unicode whitespace, eos appended unless already last,
// right truncation to max_length - 1 ids before the eos. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glmimage {

struct ByT5AddedToken {
    std::string content;
    int64_t id = 0;
    bool lstrip = false;  // strips whitespace at the end of the text before it
    bool rstrip = false;  // strips whitespace at the start of the text after it
};

class ByT5Tokenizer {
  public:
    // transformers' ByT5Tokenizer() defaults: pad/eos/unk 0/1/2 (lstrip and rstrip),
    // <extra_id_0> ... <extra_id_124> = 259 ... 383 (no stripping).
    ByT5Tokenizer();
    // A saved tokenizer folder: tokenizer_config.json's added_tokens_decoder and eos/pad/unk token
    // names (defaults when the file or the table is absent). ConfigError on inconsistent files,
    // UnsupportedError on features we do not implement (single_word, nested added tokens).
    static ByT5Tokenizer from_dir(const std::string& dir);
    explicit ByT5Tokenizer(std::vector<ByT5AddedToken> added, int64_t pad_id, int64_t eos_id, int64_t unk_id);

    // tokenizer(text, max_length=max_length, truncation=True).input_ids for one string;
    // max_length 0 disables truncation (as in transformers). InputError on invalid UTF-8 or a
    // negative max_length.
    std::vector<int64_t> encode(const std::string& text, int64_t max_length = 0) const;

    int64_t pad_id() const { return pad_id_; }
    int64_t eos_id() const { return eos_id_; }
    int64_t unk_id() const { return unk_id_; }
    static constexpr int64_t kByteOffset = 3;
    const std::vector<ByT5AddedToken>& added_tokens() const { return added_; }

  private:
    std::vector<ByT5AddedToken> added_;
    int64_t pad_id_ = 0, eos_id_ = 1, unk_id_ = 2;
};

namespace detail {

// Decodes one code point of valid UTF-8 at s[i], advancing i.
char32_t next_code_point(const std::string& s, size_t& i);
// Strict UTF-8 check (as Python's decoder: no overlongs, surrogates or values above U+10FFFF).
// Throws InputError naming `what` and the byte offset.
void validate_utf8(const std::string& s, const char* what);
// Python's str.isspace() for one code point.
bool is_python_space(char32_t c);

}  // namespace detail

}  // namespace glmimage
