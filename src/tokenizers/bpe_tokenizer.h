// Byte-level BPE tokenizer read from a Hugging Face `tokenizers` JSON file (tokenizer.json), as
// used by GLM-4 / GLM-Image: added tokens split off first (leftmost-longest, with their
// lstrip / rstrip / normalized flags), then the pre-tokenizer (Split with the
// file's regex, run by PCRE2; ByteLevel byte -> unicode mapping), then BPE with merge ranks.
// encode() is tokenizers' `encode(text, add_special_tokens=False)`; decode() is its `decode`
// with the ByteLevel decoder. Torch-free.
//
// Added tokens with single_word true are an UnsupportedError.
// Supported: model BPE (no dropout, no continuing_subword_prefix / end_of_word_suffix, no
// byte_fallback; unk_token / fuse_unk / ignore_merges honoured), normalizer null, pre_tokenizer
// Split (Regex or String pattern, behavior Isolated or Removed, invert false) and ByteLevel
// (add_prefix_space false), alone or in a Sequence, decoder ByteLevel. Anything else is an
// UnsupportedError naming the key. post_processor is ignored: encode never adds special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace glmimage {

struct BpeAddedToken {
    std::string content;
    int64_t id = 0;
    bool special = false;
    bool lstrip = false;       // eats the whitespace before the match
    bool rstrip = false;       // eats the whitespace after the match
    bool normalized = false;   // matched after normalization (second pass)
};

class BpeTokenizer {
  public:
    // Reads tokenizer.json. FormatError if unreadable or not JSON, ConfigError for missing or
    // mistyped keys and inconsistent contents (a merge whose result is not in the vocab),
    // UnsupportedError for model / pre-tokenizer / decoder kinds not listed above.
    static BpeTokenizer from_file(const std::string& path);
    // Same from already read text; `where` names it in messages.
    static BpeTokenizer from_json_text(const std::string& text, const std::string& where);

    BpeTokenizer(const BpeTokenizer&) = default;
    BpeTokenizer(BpeTokenizer&&) noexcept = default;
    BpeTokenizer& operator=(const BpeTokenizer&) = default;
    BpeTokenizer& operator=(BpeTokenizer&&) noexcept = default;
    ~BpeTokenizer();

    // tokenizers' encode(text, add_special_tokens=False).ids. InputError on invalid UTF-8.
    std::vector<int64_t> encode(const std::string& text) const;
    // tokenizers' decode(ids, skip_special_tokens). Invalid UTF-8 produced by a partial
    // byte sequence becomes U+FFFD (as Rust's from_utf8_lossy). InputError on an unknown id.
    std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

    // Added tokens first, then the model vocab (as tokenizers' token_to_id).
    std::optional<int64_t> token_to_id(const std::string& token) const;
    std::optional<std::string> id_to_token(int64_t id) const;
    const std::vector<BpeAddedToken>& added_tokens() const;
    // One past the largest id (model vocab and added tokens).
    int64_t vocab_size() const;

    struct Impl;

  private:
    explicit BpeTokenizer(std::shared_ptr<Impl> impl);
    // Shared and immutable after loading (apart from its internally locked BPE cache), so
    // copies are cheap and the tokenizer can be used from several threads.
    std::shared_ptr<Impl> impl_;
};

namespace detail {
// GPT-2's bytes_to_unicode(): the code point that stands for each byte in byte-level vocabs.
char32_t byte_to_unicode(uint8_t b);
// Appends the UTF-8 encoding of a code point.
void append_utf8(std::string& out, char32_t c);
// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
std::string utf8_lossy(const std::string& bytes);
}  // namespace detail

}  // namespace glmimage
