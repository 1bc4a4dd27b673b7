#include "tokenizers/glyph_text.h"

#include <algorithm>
#include <utility>

#include "core/check.h"

// Reference: diffusers 0.39 pipeline_glm_image.py, get_glyph_texts and _get_glyph_embeds.

namespace glmimage {

using detail::str_cat;

namespace {

struct CodePoint {
    char32_t c;
    size_t begin, end;  // byte range in the prompt
};

// re.findall(open + "([^" + stops + "]*)" + close, text): from each opener, the capture runs to the
// first stop character; it is a match when that character is the closer, otherwise the search
// restarts at that character (another opener: every stop is an opener or the closer).
void find_quoted(const std::string& text, const std::vector<CodePoint>& cps, char32_t open, char32_t close,
                 std::vector<std::string>& out) {
    size_t i = 0;
    while (i < cps.size()) {
        if (cps[i].c != open) {
            ++i;
            continue;
        }
        size_t j = i + 1;
        while (j < cps.size() && cps[j].c != open && cps[j].c != close) ++j;
        if (j == cps.size()) return;
        if (cps[j].c == close) {
            out.push_back(text.substr(cps[i].end, cps[j].begin - cps[i].end));
            i = j + 1;
        } else {
            i = j;
        }
    }
}

}  // namespace

std::vector<std::string> extract_glyph_texts(const std::string& prompt) {
    detail::validate_utf8(prompt, "glyph text: prompt");
    std::vector<CodePoint> cps;
    for (size_t i = 0; i < prompt.size();) {
        const size_t begin = i;
        const char32_t c = detail::next_code_point(prompt, i);
        cps.push_back({c, begin, i});
    }
    std::vector<std::string> out;
    find_quoted(prompt, cps, U'\'', U'\'', out);        // '([^']*)'
    find_quoted(prompt, cps, U'\u201C', U'\u201D', out);  // \u201c([^\u201c\u201d]*)\u201d
    find_quoted(prompt, cps, U'"', U'"', out);          // "([^"]*)"
    find_quoted(prompt, cps, U'\u300C', U'\u300D', out);  // 「([^「」]*)」
    return out;
}

GlyphTokens tokenize_glyph_texts(std::vector<std::string> texts, const ByT5Tokenizer& tokenizer,
                                 int64_t max_sequence_length) {
    if (max_sequence_length < 0)
        throw InputError(str_cat("glyph text: max_sequence_length must be >= 0, got ", max_sequence_length));
    GlyphTokens g;
    g.texts = std::move(texts);
    if (g.texts.empty()) g.texts.push_back("");
    g.n_texts = static_cast<int64_t>(g.texts.size());

    // [pad_token_id] * ((len(input_ids) + 1) % 2) + ids: one pad in front of every list iff the
    // number of texts is even.
    const bool prepend = g.texts.size() % 2 == 0;
    std::vector<std::vector<int64_t>> rows;
    for (const auto& t : g.texts) {
        std::vector<int64_t> ids;
        if (prepend) ids.push_back(tokenizer.pad_id());
        const auto enc = tokenizer.encode(t, max_sequence_length);
        ids.insert(ids.end(), enc.begin(), enc.end());
        g.length = std::max(g.length, static_cast<int64_t>(ids.size()));
        rows.push_back(std::move(ids));
    }
    g.input_ids.assign(static_cast<size_t>(g.n_texts * g.length), tokenizer.pad_id());
    g.attention_mask.assign(static_cast<size_t>(g.n_texts * g.length), 0);
    for (size_t r = 0; r < rows.size(); ++r) {
        const size_t base = r * static_cast<size_t>(g.length);
        std::copy(rows[r].begin(), rows[r].end(), g.input_ids.begin() + static_cast<std::ptrdiff_t>(base));
        std::fill_n(g.attention_mask.begin() + static_cast<std::ptrdiff_t>(base), rows[r].size(), int64_t{1});
    }
    return g;
}

GlyphTokens glyph_tokens(const std::string& prompt, const ByT5Tokenizer& tokenizer, int64_t max_sequence_length) {
    return tokenize_glyph_texts(extract_glyph_texts(prompt), tokenizer, max_sequence_length);
}

}  // namespace glmimage
