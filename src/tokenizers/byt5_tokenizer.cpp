#include "tokenizers/byt5_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/check.h"
#include "io/json_config.h"

// Reference: transformers 5.x models/byt5/tokenization_byt5.py and tokenization_python.py
// (PreTrainedTokenizer.tokenize: Trie split on added tokens, lstrip/rstrip with Python's
// str.strip, then _tokenize on the rest; prepare_for_model: truncation then eos).

namespace glmimage {

using detail::str_cat;

namespace detail {

char32_t next_code_point(const std::string& s, size_t& i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        ++i;
        return b0;
    }
    const int n = b0 >= 0xF0 ? 3 : b0 >= 0xE0 ? 2 : 1;
    char32_t c = b0 & (0x3F >> n);
    for (int k = 1; k <= n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    i += static_cast<size_t>(n) + 1;
    return c;
}

void validate_utf8(const std::string& s, const char* what) {
    size_t i = 0;
    while (i < s.size()) {
        const auto b0 = static_cast<unsigned char>(s[i]);
        int n;
        char32_t min;
        if (b0 < 0x80) {
            ++i;
            continue;
        } else if (b0 >= 0xC2 && b0 <= 0xDF) {
            n = 1, min = 0x80;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            n = 2, min = 0x800;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            n = 3, min = 0x10000;
        } else {
            throw InputError(str_cat(what, ": invalid UTF-8 at byte ", i));
        }
        if (i + static_cast<size_t>(n) >= s.size())
            throw InputError(str_cat(what, ": truncated UTF-8 sequence at byte ", i));
        char32_t c = b0 & (0x3F >> n);
        for (int k = 1; k <= n; ++k) {
            const auto b = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
            if ((b & 0xC0) != 0x80) throw InputError(str_cat(what, ": invalid UTF-8 at byte ", i));
            c = (c << 6) | (b & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            throw InputError(str_cat(what, ": invalid UTF-8 at byte ", i));
        i += static_cast<size_t>(n) + 1;
    }
}

bool is_python_space(char32_t c) {
    // Every code point for which Python's str.isspace() is true (Unicode White_Space minus
    // U+180E, plus the ASCII information separators U+001C..U+001F).
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

}  // namespace detail

namespace {

// str.lstrip() / str.rstrip() on valid UTF-8.
std::string lstrip_ws(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
        size_t j = i;
        if (!detail::is_python_space(detail::next_code_point(s, j))) break;
        i = j;
    }
    return s.substr(i);
}

std::string rstrip_ws(const std::string& s) {
    size_t end = s.size();
    while (end > 0) {
        size_t start = end - 1;  // back up to the lead byte of the last code point
        while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t j = start;
        if (!detail::is_python_space(detail::next_code_point(s, j))) break;
        end = start;
    }
    return s.substr(0, end);
}

std::vector<ByT5AddedToken> default_added_tokens() {
    std::vector<ByT5AddedToken> t = {{"<pad>", 0, true, true}, {"</s>", 1, true, true}, {"<unk>", 2, true, true}};
    for (int k = 0; k < 125; ++k) t.push_back({str_cat("<extra_id_", k, ">"), 259 + k, false, false});
    return t;
}

// A special-token entry of tokenizer_config.json: "</s>" or {"content": "</s>", ...}.
std::string token_name(const io::JsonConfig& cfg, const std::string& key, const std::string& def) {
    if (!cfg.has(key)) return def;
    const auto& v = cfg.raw().at(key);
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v.at("content").is_string())
        return v.at("content").get<std::string>();
    throw ConfigError(str_cat(cfg.where(), ": key '", key, "': expected a string or an added-token object"));
}

int64_t id_of(const std::vector<ByT5AddedToken>& added, const std::string& content, const std::string& where) {
    for (const auto& t : added)
        if (t.content == content) return t.id;
    throw ConfigError(str_cat(where, ": special token '", content, "' is not in added_tokens_decoder"));
}

}  // namespace

ByT5Tokenizer::ByT5Tokenizer() : added_(default_added_tokens()) {}

ByT5Tokenizer::ByT5Tokenizer(std::vector<ByT5AddedToken> added, int64_t pad_id, int64_t eos_id, int64_t unk_id)
    : pad_id_(pad_id), eos_id_(eos_id), unk_id_(unk_id) {
    // The Trie of transformers skips empty strings.
    for (auto& t : added)
        if (!t.content.empty()) added_.push_back(std::move(t));
    for (const auto& t : added_) detail::validate_utf8(t.content, "byt5 tokenizer: added token");
    // With no added token inside another, the Trie's split is the leftmost-longest match we do
    // (true of ByT5's set: '<' only first, '>' only last).
    for (const auto& a : added_)
        for (const auto& b : added_)
            if (&a != &b && b.content.find(a.content) != std::string::npos)
                throw UnsupportedError(str_cat("byt5 tokenizer: added token '", a.content, "' occurs inside '",
                                               b.content, "'"));
}

ByT5Tokenizer ByT5Tokenizer::from_dir(const std::string& dir) {
    const auto cfg = io::JsonConfig::load(dir + "/tokenizer_config.json");
    const std::string cls = cfg.get_string("tokenizer_class", "ByT5Tokenizer");
    if (cls != "ByT5Tokenizer")
        throw ConfigError(str_cat(cfg.where(), ": key 'tokenizer_class': expected 'ByT5Tokenizer', got '", cls, "'"));
    std::vector<ByT5AddedToken> added;
    if (!cfg.has("added_tokens_decoder")) {
        added = default_added_tokens();
    } else {
        const auto& table = cfg.raw().at("added_tokens_decoder");
        if (!table.is_object())
            throw ConfigError(str_cat(cfg.where(), ": key 'added_tokens_decoder': expected an object"));
        for (const auto& [key, v] : table.items()) {
            const auto tok = io::JsonConfig::from_json(v, str_cat(cfg.where(), ": added token ", key));
            ByT5AddedToken t;
            try {
                size_t used = 0;
                t.id = std::stoll(key, &used);
                if (used != key.size()) throw std::invalid_argument(key);
            } catch (const std::exception&) {
                throw ConfigError(str_cat(cfg.where(), ": added_tokens_decoder key '", key, "' is not an id"));
            }
            t.content = tok.get_string("content");
            t.lstrip = tok.get_bool("lstrip", false);
            t.rstrip = tok.get_bool("rstrip", false);
            if (tok.get_bool("single_word", false))
                throw UnsupportedError(str_cat(tok.where(), ": 'single_word' is not implemented"));
            added.push_back(std::move(t));
        }
    }
    const std::string where = cfg.where();
    const int64_t pad = id_of(added, token_name(cfg, "pad_token", "<pad>"), where);
    const int64_t eos = id_of(added, token_name(cfg, "eos_token", "</s>"), where);
    const int64_t unk = id_of(added, token_name(cfg, "unk_token", "<unk>"), where);
    return ByT5Tokenizer(std::move(added), pad, eos, unk);
}

std::vector<int64_t> ByT5Tokenizer::encode(const std::string& text, int64_t max_length) const {
    detail::validate_utf8(text, "byt5 tokenizer: text");
    if (max_length < 0) throw InputError(str_cat("byt5 tokenizer: max_length must be >= 0, got ", max_length));

    // 1. Split on added tokens (leftmost, longest).
    struct Piece {
        std::string text;
        const ByT5AddedToken* token = nullptr;  // null for plain text
    };
    std::vector<Piece> pieces;
    size_t seg = 0, pos = 0;
    while (pos < text.size()) {
        const ByT5AddedToken* best = nullptr;
        for (const auto& t : added_)
            if (text.compare(pos, t.content.size(), t.content) == 0 &&
                (best == nullptr || t.content.size() > best->content.size()))
                best = &t;
        if (best == nullptr) {
            ++pos;
            continue;
        }
        if (pos > seg) pieces.push_back({text.substr(seg, pos - seg), nullptr});
        pieces.push_back({best->content, best});
        pos += best->content.size();
        seg = pos;
    }
    if (text.size() > seg) pieces.push_back({text.substr(seg), nullptr});

    // 2. lstrip / rstrip of the neighbours, in place and in order, as tokenize() does.
    for (size_t i = 0; i < pieces.size(); ++i) {
        const ByT5AddedToken* t = pieces[i].token;
        if (t == nullptr) continue;
        if (t->rstrip && i + 1 < pieces.size() && !pieces[i + 1].text.empty())
            pieces[i + 1].text = lstrip_ws(pieces[i + 1].text);
        if (t->lstrip && i > 0 && !pieces[i - 1].text.empty()) pieces[i - 1].text = rstrip_ws(pieces[i - 1].text);
    }

    // 3. Ids: added tokens by id, everything else byte by byte.
    std::vector<int64_t> ids;
    for (const auto& p : pieces) {
        if (p.token != nullptr) {
            ids.push_back(p.token->id);
        } else {
            for (char c : p.text) ids.push_back(static_cast<int64_t>(static_cast<unsigned char>(c)) + kByteOffset);
        }
    }

    // 4. prepare_for_model: one special token (eos) is reserved, the ids are cut on the right,
    //    then eos is appended unless the sequence already ends with it.
    if (max_length > 0 && static_cast<int64_t>(ids.size()) + 1 > max_length)
        ids.resize(static_cast<size_t>(max_length - 1));
    if (ids.empty() || ids.back() != eos_id_) ids.push_back(eos_id_);
    return ids;
}

}  // namespace glmimage
