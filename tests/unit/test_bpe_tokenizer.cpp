// The GLM byte-level BPE tokenizer and the GLM-Image processor text side, torch-free. Parity with
// `tokenizers` / transformers is in tests/python/test_{tokenizer,processor}_parity.py; here:
// round trips, the grid suffix, utf8_lossy, smart_resize's worked examples, clear errors on bad
// input and malformed files, and random corruption of tokenizer.json (no crash; also run under
// ASan + UBSan).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "glmimage/errors.h"
#include "tokenizers/bpe_tokenizer.h"
#include "tokenizers/prompt_processor.h"

namespace glmimage {
namespace {

const std::string kProcessor = std::string(GLMI_MODELS_DIR) + "/tiny/processor";
const std::string kTokenizerJson = kProcessor + "/tokenizer.json";

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

const BpeTokenizer& tok() {
    static const BpeTokenizer t = BpeTokenizer::from_file(kTokenizerJson);
    return t;
}

int64_t id(const std::string& token) {
    auto v = tok().token_to_id(token);
    EXPECT_TRUE(v.has_value()) << token;
    return v.value_or(-1);
}

template <typename E, typename F>
void expect_error(F&& f, const std::string& needle) {
    try {
        f();
        ADD_FAILURE() << "no exception, expected one containing '" << needle << "'";
    } catch (const E& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

TEST(BpeTokenizer, RoundTripsText) {
    const std::vector<std::string> texts = {
        "", " ", "Hello world", "It'S he'LL   \t\n\r\n  x", "12345678901234567890", "我爱北京天安门，今天天气很好。",
        "\xF0\x9F\x98\x80\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9", "e\xCC\x81", std::string("a\0b", 3),
        "<|image|><sop>32 32<eop><|dit_token_64|>", "<|dit_token_6<|dit_token_64|>", "\xE1\xA0\x8E \xC2\x85 \xE3\x80\x80"};
    for (const auto& s : texts) {
        const auto ids = tok().encode(s);
        EXPECT_EQ(tok().decode(ids), s) << s;
    }
}

TEST(BpeTokenizer, AddedTokensAndDigitSplit) {
    // The grid suffix of a 1024x1024 text-to-image prompt: a space before a number is its own token.
    const std::vector<int64_t> want = {id("<sop>"), id("32"), id("\xC4\xA0"), id("32"), id("<eop>"), id("<|dit_token_64|>")};
    EXPECT_EQ(tok().encode("<sop>32 32<eop><|dit_token_64|>"), want);
    // Leftmost-longest: <|dit_token_64|> wins over nothing shorter; an unknown one is plain text.
    EXPECT_EQ(tok().encode("<|dit_token_64|>").size(), 1u);
    EXPECT_GT(tok().encode("<|dit_token_999|>").size(), 1u);
    // Digits group by at most three.
    for (const auto t : tok().encode("1234567")) EXPECT_LE(tok().decode({t}).size(), 3u);
    EXPECT_EQ(tok().decode(tok().encode("<|image|>x"), /*skip_special_tokens=*/true), "x");
}

TEST(BpeTokenizer, BadInputIsInputError) {
    expect_error<InputError>([] { tok().encode("ab\xFF"); }, "UTF-8");
    expect_error<InputError>([] { tok().encode("ab\xE4\xB8"); }, "UTF-8");
    expect_error<InputError>([] { tok().encode("\xED\xA0\x80"); }, "UTF-8");  // a surrogate
    expect_error<InputError>([] { tok().decode({tok().vocab_size() + 3}); }, "unknown token id");
    expect_error<InputError>([] { tok().decode({-1}); }, "unknown token id");
}

TEST(BpeTokenizer, Utf8Lossy) {
    const std::string r = "\xEF\xBF\xBD";
    EXPECT_EQ(detail::utf8_lossy("abc"), "abc");
    EXPECT_EQ(detail::utf8_lossy("\xE4\xB8"), r);                      // truncated: one U+FFFD
    EXPECT_EQ(detail::utf8_lossy("\xF0\x9F\x98" "a"), r + "a");
    EXPECT_EQ(detail::utf8_lossy("\xED\xA0\x80"), r + r + r);          // surrogate: three
    EXPECT_EQ(detail::utf8_lossy("\xC0\xAF"), r + r);                  // overlong
    EXPECT_EQ(detail::utf8_lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
}

TEST(BpeTokenizer, LongInputsAreFast) {
    // Whitespace runs drive the split regex's backtracking; a long prompt must stay linear.
    std::string words;
    for (int i = 0; i < 20000; ++i) words += (i % 7 == 0) ? "海报 " : (i % 5 == 0) ? "12345 " : "poster text ";
    const std::vector<std::string> inputs = {std::string(200000, ' ') + "x", std::string(200000, '\n'),
                                             std::string(200000, 'a'), words};
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& s : inputs) EXPECT_EQ(tok().decode(tok().encode(s)), s);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(secs, 10.0);  // generous: sanitizer builds are slow; the release build takes ~0.05 s
}

TEST(BpeTokenizer, MalformedFilesGiveClearErrors) {
    const auto base = nlohmann::json::parse(read_file(kTokenizerJson));
    auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
        auto j = base;
        edit(j);
        return j.dump();
    };
    auto load = [](const std::string& text) { return [text] { BpeTokenizer::from_json_text(text, "tok.json"); }; };
    expect_error<FormatError>(load("{nope"), "not valid JSON");
    expect_error<FormatError>([] { BpeTokenizer::from_file("/nonexistent/tokenizer.json"); }, "cannot read");
    expect_error<ConfigError>(load("3"), "top level");
    expect_error<UnsupportedError>(load(with([](auto& j) { j["model"]["type"] = "Unigram"; })), "model type");
    expect_error<ConfigError>(load(with([](auto& j) { j["model"].erase("merges"); })), "model.merges");
    expect_error<ConfigError>(load(with([](auto& j) { j["model"]["merges"][0] = {"x", "qq"}; })), "not in the vocab");
    expect_error<ConfigError>(load(with([](auto& j) { j["model"]["merges"][0] = "nospace"; })), "left right");
    expect_error<ConfigError>(load(with([](auto& j) { j["model"]["vocab"]["!"] = -4; })), "integer id");
    expect_error<UnsupportedError>(load(with([](auto& j) { j["normalizer"] = {{"type", "NFKC"}}; })), "normalizer");
    expect_error<UnsupportedError>(load(with([](auto& j) { j["decoder"] = nullptr; })), "decoder");
    expect_error<UnsupportedError>(load(with([](auto& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; })), "Metaspace");
    expect_error<ConfigError>(
        load(with([](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "[a-"}}; })), "compile");
    expect_error<ConfigError>(load(with([](auto& j) { j["added_tokens"][3]["id"] = 900; })), "tokenizers assigns");
    expect_error<ConfigError>(load(with([](auto& j) { j["added_tokens"][3]["lstrip"] = "yes"; })), "boolean");
}

TEST(BpeTokenizer, RandomCorruptionNeverCrashes) {
    const std::string good = read_file(kTokenizerJson);
    std::mt19937 rng(1234);
    int loaded = 0, rejected = 0;
    for (int trial = 0; trial < 60; ++trial) {
        std::string text = good;
        if (trial % 3 == 0) {
            text.resize(std::uniform_int_distribution<size_t>(0, text.size())(rng));
        } else {
            for (int k = 0; k < 4; ++k)
                text[std::uniform_int_distribution<size_t>(0, text.size() - 1)(rng)] =
                    static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
        }
        try {
            const auto t = BpeTokenizer::from_json_text(text, "corrupt.json");
            (void)t.decode(t.encode("A poster: \"GLM\" 你好 <sop>1 2<eop>"));
            ++loaded;
        } catch (const Error&) {
            ++rejected;  // any glmimage error is fine; a crash or UB is not
        }
    }
    EXPECT_GT(rejected, 0);
    EXPECT_EQ(loaded + rejected, 60);
}

TEST(GlmSmartResize, WorkedExamples) {
    auto eq = [](ImageSize s, int64_t h, int64_t w) {
        EXPECT_EQ(s.height, h);
        EXPECT_EQ(s.width, w);
    };
    eq(smart_resize(1024, 1024), 512, 512);  // halved
    eq(smart_resize(1300, 700), 656, 352);   // 650/16 = 40.6 -> 41, 350/16 = 21.9 -> 22
    eq(smart_resize(512, 768), 256, 384);
    eq(smart_resize(16, 16), 256, 256);      // scaled up to the 512 short side, then halved
    expect_error<InputError>([] { smart_resize(15, 100); }, "smaller than");
    expect_error<InputError>([] { smart_resize(100, 401); }, "aspect ratio");
}

TEST(PromptProcessor, TextToImageAndImageToImage) {
    const auto p = PromptProcessor::from_dir(kProcessor, PreprocessorConfig::from_file(kProcessor + "/preprocessor_config.json"));
    const auto out = p.process({"a cat", "a much longer prompt about a dog"}, {}, 1024, 1024);
    ASSERT_EQ(out.input_ids.size(), 2u);
    ASSERT_EQ(out.input_ids[0].size(), out.input_ids[1].size());
    EXPECT_EQ(out.input_ids[0][0], p.pad_id());  // left padding
    EXPECT_EQ(out.attention_mask[0][0], 0);
    EXPECT_EQ(out.input_ids[0].back(), p.bos_id());
    EXPECT_EQ(out.image_grid_thw.size(), 4u);
    EXPECT_EQ(out.image_grid_thw[1], (std::array<int64_t, 3>{1, 16, 16}));
    EXPECT_EQ(out.images_per_sample, (std::vector<int64_t>{2, 2}));

    const auto i2i = p.process({"make it blue"}, {{{1300, 700}}}, 1152, 768);
    EXPECT_EQ(i2i.image_grid_thw, (std::vector<std::array<int64_t, 3>>{{1, 41, 22}, {1, 36, 24}}));
    int64_t images = 0;
    for (auto t : i2i.input_ids[0]) images += t == p.image_token_id();
    EXPECT_EQ(images, 41 * 22);
    EXPECT_EQ(i2i.images_per_sample, (std::vector<int64_t>{2}));
}

TEST(PromptProcessor, BadInputIsInputError) {
    const auto p = PromptProcessor::from_dir(kProcessor, PreprocessorConfig::from_file(kProcessor + "/preprocessor_config.json"));
    expect_error<InputError>([&] { p.process({"x"}, {}, 1000, 1024); }, "multiples of 32");
    expect_error<InputError>([&] { p.process({"x"}, {}, 1024, 0); }, "multiples of 32");
    expect_error<InputError>([&] { p.process({""}, {}, 1024, 1024); }, "empty");
    expect_error<InputError>([&] { p.process({}, {}, 1024, 1024); }, "no prompt");
    expect_error<InputError>([&] { p.process({"a", "b"}, {{{512, 512}}, {}}, 1024, 1024); }, "same number");
    expect_error<InputError>([&] { p.process({"<|image|>"}, {}, 1024, 1024); }, "image token");
    expect_error<InputError>([&] { p.process({"x"}, {{{8, 512}}}, 1024, 1024); }, "smaller than");
    expect_error<FormatError>([] { PromptProcessor::from_dir(std::string(GLMI_MODELS_DIR) + "/tiny/vae", PreprocessorConfig{}); }, "cannot read");
}

}  // namespace
}  // namespace glmimage
