#include "tokenizers/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/check.h"
#include "glmimage/errors.h"
#include "tokenizers/bpe_internal.h"
#include "tokenizers/byt5_tokenizer.h"  // detail::validate_utf8

// Reference: huggingface/tokenizers 0.23 (run by the parity tests): AddedVocabulary
// (find_matches, two passes: non-normalized then normalized tokens, leftmost-longest),
// pre_tokenizers::split / byte_level, models::bpe (merge_word with a rank-ordered queue),
// decoders::byte_level. The regex engine there is Oniguruma; here it is PCRE2, and the only
// difference that matters for these patterns, the set `\s` matches, is removed by rewriting
// `\s` / `\S` into explicit classes (see translate_regex).

namespace glmimage {

using detail::str_cat;

namespace detail {

namespace {
// bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes are
// mapped in order to U+0100.. so every byte is a visible, non-space character.
std::array<char32_t, 256> make_byte_table() {
    std::array<char32_t, 256> t{};
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) t[static_cast<size_t>(b)] = printable(b) ? static_cast<char32_t>(b) : next++;
    return t;
}
const std::array<char32_t, 256>& byte_table() {
    static const std::array<char32_t, 256> t = make_byte_table();
    return t;
}
}  // namespace

char32_t byte_to_unicode(uint8_t b) { return byte_table()[b]; }

void append_utf8(std::string& out, char32_t c) {
    if (c < 0x80) {
        out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (c >> 6)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (c >> 12)));
        out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (c >> 18)));
        out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
}

std::string utf8_lossy(const std::string& s) {
    static const char kReplacement[] = "\xEF\xBF\xBD";
    std::string out;
    out.reserve(s.size());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const auto b = static_cast<unsigned char>(s[i]);
        if (b < 0x80) {
            out.push_back(static_cast<char>(b));
            ++i;
            continue;
        }
        // Allowed range of the second byte per lead byte (Unicode table 3-7); later bytes are 80..BF.
        int need = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b == 0xE0) need = 2, lo = 0xA0;
        else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) need = 2;
        else if (b == 0xED) need = 2, hi = 0x9F;
        else if (b == 0xF0) need = 3, lo = 0x90;
        else if (b >= 0xF1 && b <= 0xF3) need = 3;
        else if (b == 0xF4) need = 3, hi = 0x8F;
        if (need == 0) {
            out += kReplacement;
            ++i;
            continue;
        }
        size_t j = i + 1;
        int k = 0;
        while (k < need && j < n) {
            const auto c = static_cast<unsigned char>(s[j]);
            const bool ok = k == 0 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
            if (!ok) break;
            ++j, ++k;
        }
        if (k == need) out.append(s, i, j - i);
        else out += kReplacement;  // one U+FFFD per maximal invalid subpart
        i = j;
    }
    return out;
}

}  // namespace detail

namespace {

using json = nlohmann::json;
using bpe_internal::decode_at;
using bpe_internal::is_white_space;
using bpe_internal::Regex;
using bpe_internal::translate_regex;
using bpe_internal::Segment;
using bpe_internal::Trie;

}  // namespace

struct BpeTokenizer::Impl {
    std::string where;
    // Model.
    std::unordered_map<std::string, int32_t> vocab;
    std::unordered_map<int64_t, std::string> vocab_r;
    std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left << 32 | right) -> (rank, merged id)
    std::array<int32_t, 256> byte_id{};                                 // vocab id of each byte's character, -1 if none
    std::optional<int32_t> unk_id;
    bool fuse_unk = false;
    bool ignore_merges = false;
    // Added tokens.
    std::vector<BpeAddedToken> added;
    std::unordered_map<std::string, int32_t> added_by_content;  // -> index in `added`
    std::unordered_map<int64_t, int32_t> added_by_id;
    Trie plain_trie, normalized_trie;
    // Pre-tokenizer: the Split steps in order (ByteLevel's mapping is applied in bpe()).
    struct Split {
        std::unique_ptr<Regex> re;
        bool removed = false;  // behavior Removed (else Isolated)
    };
    std::vector<Split> splits;
    // Decoder: character -> byte for the 256 byte characters (all below U+0144).
    std::array<int16_t, 0x144> char_byte{};
    int64_t vocab_size = 0;
    // BPE results per pre-token (byte string), as tokenizers' cache: prompts repeat words.
    mutable std::mutex cache_mu;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache;
    static constexpr size_t kCacheMaxWord = 256, kCacheMaxEntries = 200000;

    void find_added(std::string_view s, size_t base, const Trie& trie, std::vector<Segment>& out) const;
    void bpe(std::string_view piece, std::vector<int64_t>& out) const;
    void bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const;
    void encode_text(std::string_view s, std::vector<int64_t>& out) const;
};

// tokenizers' AddedVocabulary::find_matches on s (= text[base, base + s.size())).
void BpeTokenizer::Impl::find_added(std::string_view s, size_t base, const Trie& trie, std::vector<Segment>& out) const {
    if (trie.empty()) {
        if (!s.empty()) out.push_back({base, base + s.size()});
        return;
    }
    size_t start_offset = 0, pos = 0;
    while (pos < s.size()) {
        const auto [idx, len] = trie.longest(s, pos);
        if (idx < 0) {
            ++pos;
            continue;
        }
        const BpeAddedToken& tok = added[static_cast<size_t>(idx)];
        size_t start = pos, stop = pos + len;
        if (tok.lstrip) {
            // Back over the whitespace that ends s[0, start), but never into an earlier match.
            size_t ws_start = start;
            while (ws_start > 0) {
                size_t at = ws_start - 1;
                while (at > 0 && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
                size_t k = at;
                if (!is_white_space(decode_at(s, k))) break;
                ws_start = at;
            }
            start = std::max(ws_start, start_offset);
        }
        if (tok.rstrip) {
            size_t i = stop;
            while (i < s.size()) {
                size_t k = i;
                if (!is_white_space(decode_at(s, k))) break;
                i = k;
            }
            stop = i;
        }
        if (start_offset < start) out.push_back({base + start_offset, base + start});
        out.push_back({base + start, base + stop, idx});
        start_offset = stop;
        pos += len;  // the search resumes after the match itself, as aho-corasick's iterator does
    }
    if (start_offset < s.size()) out.push_back({base + start_offset, base + s.size()});
}

void BpeTokenizer::Impl::bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const {
    if (ignore_merges) {
        std::string mapped;
        for (unsigned char b : piece) detail::append_utf8(mapped, detail::byte_to_unicode(b));
        auto it = vocab.find(mapped);
        if (it != vocab.end()) {
            out.push_back(it->second);
            return;
        }
    }
    struct Symbol {
        int32_t id, prev, next;
        bool alive;
    };
    std::vector<Symbol> sym;
    sym.reserve(piece.size());
    bool last_unk = false;
    for (unsigned char b : piece) {
        const int32_t id = byte_id[b];
        if (id >= 0) {
            sym.push_back({id, 0, 0, true});
            last_unk = false;
        } else if (unk_id) {
            if (!(fuse_unk && last_unk)) sym.push_back({*unk_id, 0, 0, true});
            last_unk = true;
        }  // no unk token: the character is dropped, as tokenizers does
    }
    const auto n = static_cast<int32_t>(sym.size());
    for (int32_t i = 0; i < n; ++i) {
        sym[static_cast<size_t>(i)].prev = i - 1;
        sym[static_cast<size_t>(i)].next = i + 1 < n ? i + 1 : -1;
    }
    struct Cand {
        int32_t rank, pos, new_id;
    };
    // Lowest rank first, then leftmost.
    auto worse = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> queue(worse);
    auto lookup = [this](int32_t l, int32_t r) -> const std::pair<int32_t, int32_t>* {
        auto it = merges.find((static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r));
        return it == merges.end() ? nullptr : &it->second;
    };
    for (int32_t i = 0; i + 1 < n; ++i)
        if (auto m = lookup(sym[static_cast<size_t>(i)].id, sym[static_cast<size_t>(i + 1)].id))
            queue.push({m->first, i, m->second});
    while (!queue.empty()) {
        const Cand top = queue.top();
        queue.pop();
        Symbol& cur = sym[static_cast<size_t>(top.pos)];
        if (!cur.alive || cur.next < 0) continue;
        const int32_t right = cur.next;
        // Stale entry: the pair at this position changed since it was queued.
        auto m = lookup(cur.id, sym[static_cast<size_t>(right)].id);
        if (!m || m->second != top.new_id) continue;
        cur.id = top.new_id;
        sym[static_cast<size_t>(right)].alive = false;
        cur.next = sym[static_cast<size_t>(right)].next;
        if (cur.next >= 0) sym[static_cast<size_t>(cur.next)].prev = top.pos;
        if (cur.prev >= 0)
            if (auto p = lookup(sym[static_cast<size_t>(cur.prev)].id, cur.id)) queue.push({p->first, cur.prev, p->second});
        if (cur.next >= 0)
            if (auto p = lookup(cur.id, sym[static_cast<size_t>(cur.next)].id)) queue.push({p->first, top.pos, p->second});
    }
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[static_cast<size_t>(i)].next) out.push_back(sym[static_cast<size_t>(i)].id);
}

void BpeTokenizer::Impl::bpe(std::string_view piece, std::vector<int64_t>& out) const {
    if (piece.empty()) return;
    if (piece.size() > kCacheMaxWord) {
        std::vector<int32_t> ids;
        bpe_uncached(piece, ids);
        out.insert(out.end(), ids.begin(), ids.end());
        return;
    }
    std::string key(piece);
    {
        std::lock_guard<std::mutex> lock(cache_mu);
        auto it = cache.find(key);
        if (it != cache.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    std::vector<int32_t> ids;
    bpe_uncached(piece, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() >= kCacheMaxEntries) cache.clear();  // bounded memory on adversarial input
    cache.emplace(std::move(key), std::move(ids));
}

// Pre-tokenizes raw text (between added tokens) and runs BPE on each piece.
void BpeTokenizer::Impl::encode_text(std::string_view s, std::vector<int64_t>& out) const {
    std::vector<std::pair<size_t, size_t>> pieces{{0, s.size()}}, next;
    for (const Split& sp : splits) {
        next.clear();
        for (const auto& piece : pieces) {
            // Named copies, not a structured binding: C++17 lambdas cannot capture those (clang rejects it).
            const size_t b = piece.first, e = piece.second;
            const std::string_view sub = s.substr(b, e - b);
            size_t prev = 0;
            sp.re->for_each_match(sub, [&](size_t ms, size_t me) {
                if (ms > prev) next.emplace_back(b + prev, b + ms);
                if (!sp.removed) next.emplace_back(b + ms, b + me);
                prev = me;
            });
            if (prev < sub.size()) next.emplace_back(b + prev, e);
        }
        pieces.swap(next);
    }
    for (const auto& [b, e] : pieces) bpe(s.substr(b, e - b), out);
}

BpeTokenizer::BpeTokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
    detail::validate_utf8(text, "tokenizer input");
    const Impl& m = *impl_;
    std::vector<Segment> first, segs;
    m.find_added(text, 0, m.plain_trie, first);
    // Second pass: normalized added tokens inside the remaining text (no normalizer, so the
    // text is unchanged).
    for (const Segment& sg : first) {
        if (sg.added >= 0) segs.push_back(sg);
        else m.find_added(std::string_view(text).substr(sg.begin, sg.end - sg.begin), sg.begin, m.normalized_trie, segs);
    }
    std::vector<int64_t> ids;
    ids.reserve(text.size() / 3 + 4);
    for (const Segment& sg : segs) {
        if (sg.added >= 0) ids.push_back(m.added[static_cast<size_t>(sg.added)].id);
        else m.encode_text(std::string_view(text).substr(sg.begin, sg.end - sg.begin), ids);
    }
    return ids;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
    const Impl& m = *impl_;
    std::string bytes;
    for (const int64_t id : ids) {
        const std::string* tok = nullptr;
        auto a = m.added_by_id.find(id);
        if (a != m.added_by_id.end()) {
            const BpeAddedToken& t = m.added[static_cast<size_t>(a->second)];
            if (skip_special_tokens && t.special) continue;
            tok = &t.content;
        } else {
            auto v = m.vocab_r.find(id);
            if (v == m.vocab_r.end()) throw InputError(str_cat("tokenizer decode: unknown token id ", id));
            tok = &v->second;
        }
        // ByteLevel decoder: a token made only of byte characters becomes those bytes,
        // any other token is taken as its UTF-8 text.
        std::string mapped;
        bool all_bytes = true;
        for (size_t i = 0; i < tok->size();) {
            const char32_t c = decode_at(*tok, i);
            if (c >= m.char_byte.size() || m.char_byte[c] < 0) {
                all_bytes = false;
                break;
            }
            mapped.push_back(static_cast<char>(m.char_byte[c]));
        }
        bytes += all_bytes ? mapped : *tok;
    }
    return detail::utf8_lossy(bytes);
}

std::optional<int64_t> BpeTokenizer::token_to_id(const std::string& token) const {
    auto a = impl_->added_by_content.find(token);
    if (a != impl_->added_by_content.end()) return impl_->added[static_cast<size_t>(a->second)].id;
    auto v = impl_->vocab.find(token);
    if (v != impl_->vocab.end()) return v->second;
    return std::nullopt;
}

std::optional<std::string> BpeTokenizer::id_to_token(int64_t id) const {
    auto a = impl_->added_by_id.find(id);
    if (a != impl_->added_by_id.end()) return impl_->added[static_cast<size_t>(a->second)].content;
    auto v = impl_->vocab_r.find(id);
    if (v != impl_->vocab_r.end()) return v->second;
    return std::nullopt;
}

const std::vector<BpeAddedToken>& BpeTokenizer::added_tokens() const { return impl_->added; }
int64_t BpeTokenizer::vocab_size() const { return impl_->vocab_size; }

// ---- loading --------------------------------------------------------------------------------

namespace {

// Strict typed access into tokenizer.json with messages naming the key path.
struct Reader {
    std::string where;
    const json& at(const json& obj, const std::string& path, const char* key) const {
        if (!obj.is_object()) throw ConfigError(str_cat(where, ": '", path, "' is not an object"));
        auto it = obj.find(key);
        if (it == obj.end()) throw ConfigError(str_cat(where, ": missing key '", path, ".", key, "'"));
        return *it;
    }
    [[noreturn]] void bad(const std::string& path, const char* expected, const json& v) const {
        throw ConfigError(str_cat(where, ": key '", path, "': expected ", expected, ", got ", v.type_name()));
    }
    std::string str(const json& obj, const std::string& path, const char* key) const {
        const json& v = at(obj, path, key);
        if (!v.is_string()) bad(path + "." + key, "a string", v);
        return v.get<std::string>();
    }
    bool flag(const json& obj, const std::string& path, const char* key, bool def) const {
        auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return def;
        if (!it->is_boolean()) bad(path + "." + key, "a boolean", *it);
        return it->get<bool>();
    }
    std::optional<std::string> opt_str(const json& obj, const std::string& path, const char* key) const {
        auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return std::nullopt;
        if (!it->is_string()) bad(path + "." + key, "a string or null", *it);
        return it->get<std::string>();
    }
};

void load_model(BpeTokenizer::Impl& m, const Reader& r, const json& model) {
    const std::string type = r.str(model, "model", "type");
    if (type != "BPE") throw UnsupportedError(str_cat(r.where, ": model type '", type, "' is not supported (only BPE)"));
    if (auto it = model.find("dropout"); it != model.end() && !it->is_null() && !(it->is_number() && it->get<double>() == 0.0))
        throw UnsupportedError(r.where + ": BPE dropout is not supported");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (auto v = r.opt_str(model, "model", key); v && !v->empty())
            throw UnsupportedError(str_cat(r.where, ": BPE ", key, " is not supported"));
    if (r.flag(model, "model", "byte_fallback", false)) throw UnsupportedError(r.where + ": BPE byte_fallback is not supported");
    m.fuse_unk = r.flag(model, "model", "fuse_unk", false);
    m.ignore_merges = r.flag(model, "model", "ignore_merges", false);

    const json& vocab = r.at(model, "model", "vocab");
    if (!vocab.is_object()) r.bad("model.vocab", "an object", vocab);
    for (const auto& [tok, idv] : vocab.items()) {
        if (!idv.is_number_integer() || idv.get<int64_t>() < 0 || idv.get<int64_t>() > INT32_MAX)
            throw ConfigError(str_cat(r.where, ": model.vocab['", tok, "']: expected a non-negative integer id"));
        const auto id = static_cast<int32_t>(idv.get<int64_t>());
        if (!m.vocab_r.emplace(id, tok).second) throw ConfigError(str_cat(r.where, ": model.vocab: id ", id, " is used twice"));
        m.vocab.emplace(tok, id);
        m.vocab_size = std::max<int64_t>(m.vocab_size, int64_t{id} + 1);
    }
    if (auto unk = r.opt_str(model, "model", "unk_token")) {
        auto it = m.vocab.find(*unk);
        if (it == m.vocab.end()) throw ConfigError(str_cat(r.where, ": model.unk_token '", *unk, "' is not in the vocab"));
        m.unk_id = it->second;
    }
    for (int b = 0; b < 256; ++b) {
        std::string ch;
        detail::append_utf8(ch, detail::byte_to_unicode(static_cast<uint8_t>(b)));
        auto it = m.vocab.find(ch);
        m.byte_id[static_cast<size_t>(b)] = it == m.vocab.end() ? -1 : it->second;
    }

    const json& merges = r.at(model, "model", "merges");
    if (!merges.is_array()) r.bad("model.merges", "an array", merges);
    int32_t rank = 0;
    for (const json& mg : merges) {
        std::string a, b;
        if (mg.is_string()) {  // legacy "left right"
            const auto s = mg.get<std::string>();
            const auto sp = s.find(' ');
            if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                throw ConfigError(str_cat(r.where, ": model.merges[", rank, "]: expected 'left right', got '", s, "'"));
            a = s.substr(0, sp), b = s.substr(sp + 1);
        } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
            a = mg[0].get<std::string>(), b = mg[1].get<std::string>();
        } else {
            throw ConfigError(str_cat(r.where, ": model.merges[", rank, "]: expected a pair of strings"));
        }
        auto ia = m.vocab.find(a), ib = m.vocab.find(b), iab = m.vocab.find(a + b);
        if (ia == m.vocab.end() || ib == m.vocab.end() || iab == m.vocab.end())
            throw ConfigError(str_cat(r.where, ": model.merges[", rank, "] ('", a, "', '", b, "'): token not in the vocab"));
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) | static_cast<uint32_t>(ib->second);
        m.merges[key] = {rank, iab->second};  // a repeated pair keeps its last rank, as tokenizers' map does
        ++rank;
    }
}

void load_added(BpeTokenizer::Impl& m, const Reader& r, const json& list) {
    if (list.is_null()) return;
    if (!list.is_array()) r.bad("added_tokens", "an array", list);
    const auto model_size = static_cast<int64_t>(m.vocab.size());
    int64_t max_added = -1;
    for (size_t i = 0; i < list.size(); ++i) {
        const json& t = list[i];
        const std::string path = str_cat("added_tokens[", i, "]");
        BpeAddedToken tok;
        tok.content = r.str(t, path, "content");
        const json& idv = r.at(t, path, "id");
        if (!idv.is_number_integer() || idv.get<int64_t>() < 0) r.bad(path + ".id", "a non-negative integer", idv);
        tok.id = idv.get<int64_t>();
        tok.special = r.flag(t, path, "special", false);
        tok.lstrip = r.flag(t, path, "lstrip", false);
        tok.rstrip = r.flag(t, path, "rstrip", false);
        tok.normalized = r.flag(t, path, "normalized", !tok.special);
        if (r.flag(t, path, "single_word", false))
            throw UnsupportedError(str_cat(r.where, ": ", path, ": single_word added tokens are not supported"));
        if (tok.content.empty()) throw ConfigError(str_cat(r.where, ": ", path, ": empty content"));
        if (m.added_by_content.count(tok.content))
            throw ConfigError(str_cat(r.where, ": ", path, ": '", tok.content, "' is listed twice"));
        // tokenizers ignores the stored id: a token already in the vocab keeps that id, a new one
        // gets the next free id. A file that disagrees with that is inconsistent.
        int64_t expect;
        if (auto v = m.vocab.find(tok.content); v != m.vocab.end()) expect = v->second;
        else expect = max_added < 0 ? model_size : (max_added >= model_size ? max_added + 1 : model_size);
        if (tok.id != expect)
            throw ConfigError(str_cat(r.where, ": ", path, " '", tok.content, "': id ", tok.id, " but tokenizers assigns ", expect));
        max_added = std::max(max_added, tok.id);
        if (m.added_by_id.count(tok.id)) throw ConfigError(str_cat(r.where, ": ", path, ": id ", tok.id, " is used twice"));
        const auto idx = static_cast<int32_t>(m.added.size());
        m.added_by_content.emplace(tok.content, idx);
        m.added_by_id.emplace(tok.id, idx);
        (tok.normalized ? m.normalized_trie : m.plain_trie).insert(tok.content, idx);
        m.vocab_size = std::max(m.vocab_size, tok.id + 1);
        m.added.push_back(std::move(tok));
    }
}

// GPT-2's split pattern, used by a ByteLevel pre-tokenizer with use_regex true.
constexpr const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void load_pre_tokenizer(BpeTokenizer::Impl& m, const Reader& r, const json& pt) {
    if (pt.is_null()) throw UnsupportedError(r.where + ": a null pre_tokenizer is not supported (byte-level BPE needs ByteLevel)");
    std::vector<std::pair<const json*, std::string>> steps;
    const std::string type = r.str(pt, "pre_tokenizer", "type");
    if (type == "Sequence") {
        const json& list = r.at(pt, "pre_tokenizer", "pretokenizers");
        if (!list.is_array()) r.bad("pre_tokenizer.pretokenizers", "an array", list);
        for (size_t i = 0; i < list.size(); ++i) steps.emplace_back(&list[i], str_cat("pre_tokenizer.pretokenizers[", i, "]"));
    } else {
        steps.emplace_back(&pt, "pre_tokenizer");
    }
    bool byte_level = false;
    for (const auto& [step, path] : steps) {
        const std::string t = r.str(*step, path, "type");
        if (t == "Split") {
            const json& pat = r.at(*step, path, "pattern");
            const std::string behavior = r.str(*step, path, "behavior");
            if (behavior != "Isolated" && behavior != "Removed")
                throw UnsupportedError(str_cat(r.where, ": ", path, ": Split behavior '", behavior, "' is not supported"));
            if (r.flag(*step, path, "invert", false)) throw UnsupportedError(str_cat(r.where, ": ", path, ": inverted Split is not supported"));
            BpeTokenizer::Impl::Split sp;
            sp.removed = behavior == "Removed";
            if (pat.is_object() && pat.contains("Regex")) sp.re = std::make_unique<Regex>(translate_regex(r.str(pat, path + ".pattern", "Regex"), r.where), false, r.where);
            else if (pat.is_object() && pat.contains("String")) sp.re = std::make_unique<Regex>(r.str(pat, path + ".pattern", "String"), true, r.where);
            else throw ConfigError(str_cat(r.where, ": ", path, ".pattern: expected {\"Regex\": ...} or {\"String\": ...}"));
            if (byte_level) throw UnsupportedError(str_cat(r.where, ": ", path, ": a Split after ByteLevel is not supported"));
            m.splits.push_back(std::move(sp));
        } else if (t == "ByteLevel") {
            if (byte_level) throw UnsupportedError(str_cat(r.where, ": ", path, ": ByteLevel twice"));
            if (r.flag(*step, path, "add_prefix_space", true))
                throw UnsupportedError(str_cat(r.where, ": ", path, ": ByteLevel add_prefix_space is not supported"));
            if (r.flag(*step, path, "use_regex", true))
                m.splits.push_back({std::make_unique<Regex>(translate_regex(kGpt2Regex, r.where), false, r.where), false});
            byte_level = true;
        } else {
            throw UnsupportedError(str_cat(r.where, ": ", path, ": pre-tokenizer '", t, "' is not supported"));
        }
    }
    if (!byte_level) throw UnsupportedError(r.where + ": pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)");
}

}  // namespace

BpeTokenizer BpeTokenizer::from_json_text(const std::string& text, const std::string& where) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        throw FormatError(str_cat(where, ": not valid JSON: ", e.what()));
    }
    if (!j.is_object()) throw ConfigError(where + ": top level is not an object");
    auto m = std::make_shared<Impl>();
    m->where = where;
    const Reader r{where};
    load_model(*m, r, r.at(j, "", "model"));
    if (auto it = j.find("normalizer"); it != j.end() && !it->is_null())
        throw UnsupportedError(where + ": a normalizer is not supported");
    load_added(*m, r, j.value("added_tokens", json()));
    load_pre_tokenizer(*m, r, r.at(j, "", "pre_tokenizer"));
    const json& dec = r.at(j, "", "decoder");
    if (dec.is_null() || r.str(dec, "decoder", "type") != "ByteLevel")
        throw UnsupportedError(where + ": only the ByteLevel decoder is supported");
    m->char_byte.fill(-1);
    for (int b = 0; b < 256; ++b) m->char_byte[detail::byte_to_unicode(static_cast<uint8_t>(b))] = static_cast<int16_t>(b);
    return BpeTokenizer(std::move(m));
}

BpeTokenizer BpeTokenizer::from_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw FormatError("cannot read tokenizer file '" + path + "'");
    std::ostringstream ss;
    ss << f.rdbuf();
    return from_json_text(ss.str(), path);
}

}  // namespace glmimage
