// Internals of bpe_tokenizer.cpp: the PCRE2 wrapper, the added-token trie, UTF-8 helpers.
// Included only by bpe_tokenizer.cpp (kept apart to keep files short).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/check.h"
#include "glmimage/errors.h"

namespace glmimage::bpe_internal {

using detail::str_cat;

// Rust's char::is_whitespace (Unicode White_Space), used by added tokens' lstrip / rstrip.
inline bool is_white_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

// Oniguruma's `\s` under Unicode is exactly White_Space; PCRE2's (with UCP) also takes U+180E.
// Written as class contents so it can go inside or outside brackets.
constexpr const char* kSpaceClass = "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}"
                                    "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

// Rewrites `\s` / `\S` of an Oniguruma pattern into explicit classes for PCRE2. Other escapes
// pass through unchanged (both engines agree on \p{..}, (?i:..), lookaheads, quantifiers).
inline std::string translate_regex(const std::string& pat, const std::string& where) {
    std::string out;
    bool in_class = false;
    for (size_t i = 0; i < pat.size(); ++i) {
        const char c = pat[i];
        if (c == '\\' && i + 1 < pat.size()) {
            const char e = pat[i + 1];
            if (e == 's') {
                out += in_class ? std::string(kSpaceClass) : str_cat("[", kSpaceClass, "]");
            } else if (e == 'S') {
                if (in_class)
                    throw UnsupportedError(where + ": pre_tokenizer regex: \\S inside a character class is not supported");
                out += str_cat("[^", kSpaceClass, "]");
            } else {
                out += c;
                out += e;
            }
            ++i;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            out += c;
            // A ']' right after '[' or '[^' is a literal, not the end of the class.
            if (i + 1 < pat.size() && pat[i + 1] == '^') out += pat[++i];
            if (i + 1 < pat.size() && pat[i + 1] == ']') out += pat[++i];
            continue;
        }
        if (in_class && c == ']') in_class = false;
        out += c;
    }
    return out;
}

// A compiled PCRE2 pattern (JIT when available). Immutable; match data is per call.
class Regex {
  public:
    Regex(const std::string& pattern, bool literal, const std::string& where) {
        int err = 0;
        PCRE2_SIZE off = 0;
        uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u);
        code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err, &off, nullptr);
        if (!code_) {
            PCRE2_UCHAR buf[256];
            pcre2_get_error_message(err, buf, sizeof(buf));
            throw ConfigError(str_cat(where, ": pre_tokenizer regex does not compile at offset ", off, ": ",
                                      reinterpret_cast<const char*>(buf)));
        }
        pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // failure only means the slower interpreter
    }
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;
    ~Regex() { pcre2_code_free(code_); }

    // Calls fn(start, end) for every non-empty match in s (already validated UTF-8), left to right.
    template <typename Fn>
    void for_each_match(std::string_view s, Fn&& fn) const {
        struct Data {
            pcre2_match_data* md;
            ~Data() { pcre2_match_data_free(md); }
        } data{pcre2_match_data_create_from_pattern(code_, nullptr)};
        if (!data.md) throw Error("tokenizer: out of memory for regex match data");
        const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
        size_t off = 0;
        while (off <= s.size()) {
            const int rc = pcre2_match(code_, subject, s.size(), off, PCRE2_NO_UTF_CHECK, data.md, nullptr);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR buf[256];
                pcre2_get_error_message(rc, buf, sizeof(buf));
                throw Error(str_cat("tokenizer: regex match failed: ", reinterpret_cast<const char*>(buf)));
            }
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.md);
            if (ov[1] == ov[0]) {  // empty match: no piece; step one character
                if (ov[0] >= s.size()) break;
                size_t next = ov[0] + 1;
                while (next < s.size() && (static_cast<unsigned char>(s[next]) & 0xC0) == 0x80) ++next;
                off = next;
                continue;
            }
            fn(static_cast<size_t>(ov[0]), static_cast<size_t>(ov[1]));
            off = ov[1];
        }
    }

  private:
    pcre2_code* code_ = nullptr;
};

// Byte trie over added-token contents, for leftmost-longest matching.
class Trie {
  public:
    void insert(const std::string& s, int32_t value) {
        int32_t node = 0;
        for (unsigned char b : s) {
            const uint64_t key = (static_cast<uint64_t>(node) << 8) | b;
            auto it = edges_.find(key);
            if (it == edges_.end()) {
                values_.push_back(-1);
                it = edges_.emplace(key, static_cast<int32_t>(values_.size() - 1)).first;
            }
            node = it->second;
        }
        values_[static_cast<size_t>(node)] = value;
    }
    bool empty() const { return values_.size() == 1; }
    // Longest entry starting at s[pos]: (value, length) or (-1, 0).
    std::pair<int32_t, size_t> longest(std::string_view s, size_t pos) const {
        int32_t node = 0, best = -1;
        size_t best_len = 0;
        for (size_t i = pos; i < s.size(); ++i) {
            auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[i]));
            if (it == edges_.end()) break;
            node = it->second;
            if (values_[static_cast<size_t>(node)] >= 0) best = values_[static_cast<size_t>(node)], best_len = i + 1 - pos;
        }
        return {best, best_len};
    }

  private:
    std::unordered_map<uint64_t, int32_t> edges_;
    std::vector<int32_t> values_ = {-1};  // node 0 is the root
};

// One code point of valid UTF-8 at s[i], advancing i.
inline char32_t decode_at(std::string_view s, size_t& i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) return ++i, b0;
    const int n = b0 >= 0xF0 ? 3 : b0 >= 0xE0 ? 2 : 1;
    char32_t c = b0 & (0x3F >> n);
    for (int k = 1; k <= n && i + static_cast<size_t>(k) < s.size(); ++k)
        c = (c << 6) | (static_cast<unsigned char>(s[i + static_cast<size_t>(k)]) & 0x3F);
    i += static_cast<size_t>(n) + 1;
    return c;
}


// A piece of the input: raw text (token < 0) or an added token's index.
struct Segment {
    size_t begin, end;
    int32_t added = -1;
};

}  // namespace glmimage::bpe_internal
