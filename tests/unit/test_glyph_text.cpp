// Glyph texts and ByT5 ids: the worked examples of diffusion.md 6.2 and the tokenizer edge cases
// (special tokens and their whitespace stripping, truncation, eos already present) checked against
// values the reference produced. The full parity sweep is tests/python/test_glyph_tokens.py.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "glmimage/errors.h"
#include "tokenizers/byt5_tokenizer.h"
#include "tokenizers/glyph_text.h"

namespace glmimage {
namespace {

using Strings = std::vector<std::string>;
using Ids = std::vector<int64_t>;

TEST(GlyphText, QuoteKindsInReferenceOrder) {
    EXPECT_EQ(extract_glyph_texts("A sign that says \"OPEN\" and 'Caf\xC3\xA9'"), (Strings{"Caf\xC3\xA9", "OPEN"}));
    // “你好” and 「世界」 and "x": grouped by kind ('', “”, "", 「」), not by position.
    EXPECT_EQ(extract_glyph_texts("\xE2\x80\x9C\xE4\xBD\xA0\xE5\xA5\xBD\xE2\x80\x9D and \xE3\x80\x8C\xE4\xB8\x96"
                                  "\xE7\x95\x8C\xE3\x80\x8D and \"x\""),
              (Strings{"\xE4\xBD\xA0\xE5\xA5\xBD", "x", "\xE4\xB8\x96\xE7\x95\x8C"}));
    EXPECT_EQ(extract_glyph_texts("no quotes here"), Strings{});
    EXPECT_EQ(extract_glyph_texts(""), Strings{});
}

TEST(GlyphText, ApostrophesPairUpInOrder) {
    EXPECT_EQ(extract_glyph_texts("it's a 'Hello' sign"), Strings{"s a "});
    EXPECT_EQ(extract_glyph_texts("'a' 'b' 'unclosed"), (Strings{"a", "b"}));
    EXPECT_EQ(extract_glyph_texts("''"), Strings{""});
    EXPECT_EQ(extract_glyph_texts("\"line1\nline2\""), Strings{"line1\nline2"});
}

TEST(GlyphText, CurlyAndCornerQuotesRestartAtANestedOpener) {
    // “a“b” -> the first opener fails at the second, which matches: ["b"].
    EXPECT_EQ(extract_glyph_texts("\xE2\x80\x9C" "a" "\xE2\x80\x9C" "b" "\xE2\x80\x9D"), Strings{"b"});
    // 「x「y」」 -> ["y"]; a closer with no opener is ignored.
    EXPECT_EQ(extract_glyph_texts("\xE3\x80\x8Cx\xE3\x80\x8Cy\xE3\x80\x8D\xE3\x80\x8D"), Strings{"y"});
    EXPECT_EQ(extract_glyph_texts("\xE2\x80\x9D" "a" "\xE2\x80\x9C" "b"), Strings{});
    // Curly single quotes are not glyph quotes.
    EXPECT_EQ(extract_glyph_texts("\xE2\x80\x98no\xE2\x80\x99"), Strings{});
}

TEST(GlyphText, InvalidUtf8IsAnInputError) {
    EXPECT_THROW(extract_glyph_texts("bad \xFF byte"), InputError);
    EXPECT_THROW(extract_glyph_texts("overlong \xC0\xAF"), InputError);
    EXPECT_THROW(extract_glyph_texts("surrogate \xED\xA0\x80"), InputError);
    EXPECT_THROW(extract_glyph_texts("truncated \xE4\xBD"), InputError);
    EXPECT_THROW(extract_glyph_texts("too big \xF4\x90\x80\x80"), InputError);
}

TEST(ByT5Tokenizer, BytesPlusThreeAndEos) {
    const ByT5Tokenizer tok;
    EXPECT_EQ(tok.encode(""), Ids{1});
    EXPECT_EQ(tok.encode("abc"), (Ids{100, 101, 102, 1}));
    EXPECT_EQ(tok.encode("Caf\xC3\xA9"), (Ids{70, 100, 105, 198, 172, 1}));
}

TEST(ByT5Tokenizer, AddedTokensAndTheirStripping) {
    const ByT5Tokenizer tok;
    // Values from transformers 5.24 ByT5Tokenizer.
    EXPECT_EQ(tok.encode("a <pad> b"), (Ids{100, 0, 101, 1}));
    EXPECT_EQ(tok.encode("x\xE3\x80\x80</s>\xC2\xA0y"), (Ids{123, 1, 124, 1}));  // U+3000, U+00A0 stripped
    EXPECT_EQ(tok.encode("<extra_id_5>  z"), (Ids{264, 35, 35, 125, 1}));  // no stripping for extra ids
    EXPECT_EQ(tok.encode("a </s>"), (Ids{100, 1}));                        // eos already last: not repeated
    EXPECT_EQ(tok.encode("<pad> </s>"), (Ids{0, 1}));
    EXPECT_EQ(tok.encode("<extra_id_1> <pad>"), (Ids{260, 0, 1}));
    EXPECT_EQ(tok.encode("\x1C<pad>\xC2\x85"), (Ids{0, 1}));
    EXPECT_EQ(tok.encode("<extra_id_200>").size(), 15u);  // not a token: 14 bytes + eos
}

TEST(ByT5Tokenizer, TruncationKeepsMaxLengthMinusOneThenEos) {
    const ByT5Tokenizer tok;
    EXPECT_EQ(tok.encode("abcdef", 4), (Ids{100, 101, 102, 1}));
    EXPECT_EQ(tok.encode("ab</s>", 4), (Ids{100, 101, 1}));
    EXPECT_EQ(tok.encode("abc</s>", 4), (Ids{100, 101, 102, 1}));
    EXPECT_EQ(tok.encode("</s>abcdefgh", 4), (Ids{1, 100, 101, 1}));
    EXPECT_EQ(tok.encode("abc", 1), Ids{1});
    EXPECT_EQ(tok.encode("abc", 0), (Ids{100, 101, 102, 1}));  // 0: no truncation
    EXPECT_THROW(tok.encode("abc", -1), InputError);
}

TEST(ByT5Tokenizer, FromDirMatchesTheDefaults) {
    const auto tok = ByT5Tokenizer::from_dir(std::string(GLMI_MODELS_DIR) + "/tiny/tokenizer");
    const ByT5Tokenizer def;
    ASSERT_EQ(tok.added_tokens().size(), def.added_tokens().size());
    for (const char* s : {"a <pad> b", "<extra_id_124>x", "\"q\" </s>"}) EXPECT_EQ(tok.encode(s), def.encode(s)) << s;
    EXPECT_EQ(tok.pad_id(), 0);
    EXPECT_EQ(tok.eos_id(), 1);
    EXPECT_EQ(tok.unk_id(), 2);
}

TEST(GlyphTokens, PadPrependedIffTheCountIsEven) {
    const ByT5Tokenizer tok;
    auto g = glyph_tokens("no quotes here", tok);
    EXPECT_EQ(g.texts, Strings{""});
    EXPECT_EQ(g.n_texts, 1);
    EXPECT_EQ(g.length, 1);
    EXPECT_EQ(g.input_ids, Ids{1});
    EXPECT_EQ(g.attention_mask, Ids{1});

    g = glyph_tokens("A sign that says \"OPEN\" and 'Caf\xC3\xA9'", tok);
    EXPECT_EQ(g.n_texts, 2);
    EXPECT_EQ(g.length, 7);
    EXPECT_EQ(g.input_ids, (Ids{0, 70, 100, 105, 198, 172, 1, 0, 82, 83, 72, 81, 1, 0}));
    EXPECT_EQ(g.attention_mask, (Ids{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}));

    g = glyph_tokens("\xE2\x80\x9C\xE4\xBD\xA0\xE5\xA5\xBD\xE2\x80\x9D and \xE3\x80\x8C\xE4\xB8\x96\xE7\x95\x8C"
                     "\xE3\x80\x8D and \"x\"",
                     tok);
    EXPECT_EQ(g.n_texts, 3);
    EXPECT_EQ(g.length, 7);
    EXPECT_EQ(g.input_ids, (Ids{231, 192, 163, 232, 168, 192, 1, 123, 1, 0, 0, 0, 0, 0, 231, 187, 153, 234, 152,
                                143, 1}));
    EXPECT_EQ(g.attention_mask, (Ids{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1}));
}

TEST(GlyphTokens, TruncationAppliesPerTextBeforeThePad) {
    const ByT5Tokenizer tok;
    const auto g = glyph_tokens("'abcdefgh' 'xy'", tok, /*max_sequence_length=*/4);
    EXPECT_EQ(g.length, 5);
    EXPECT_EQ(g.input_ids, (Ids{0, 100, 101, 102, 1, 0, 123, 124, 1, 0}));
    EXPECT_EQ(g.attention_mask, (Ids{1, 1, 1, 1, 1, 1, 1, 1, 1, 0}));
    EXPECT_THROW(glyph_tokens("'a'", tok, -5), InputError);
}

}  // namespace
}  // namespace glmimage
