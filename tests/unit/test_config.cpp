// Config parsing: the real GLM-Image configs parse to the published sizes; missing or
// mistyped keys give ConfigError naming the file and key. Also built with ASan + UBSan.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "glmimage/errors.h"
#include "models/dit/config.h"
#include "models/glm_ar/config.h"
#include "models/t5/config.h"
#include "models/vae/config.h"
#include "pipeline/model_index.h"
#include "st_writer.h"
#include "schedulers/scheduler_config.h"

namespace glmimage {
namespace {

namespace fs = std::filesystem;
const std::string kReal = std::string(GLMI_SOURCE_DIR) + "/tests/data/real-configs";

std::string real(const std::string& rel) { return kReal + "/" + rel; }

// Writes `j` (the real config with one edit) to a temp file and returns its path.
std::string edited(const std::string& rel, const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(real(rel));
    auto j = nlohmann::json::parse(in);
    edit(j);
    static const fs::path dir = testing::make_temp_dir("cfg");
    auto path = (dir / fs::path(rel).filename()).string();
    std::ofstream(path) << j.dump();
    return path;
}

template <typename E, typename F>
void expect_error(F&& f, const std::string& needle) {
    try {
        f();
        FAIL() << "expected an error containing '" << needle << "'";
    } catch (const E& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

TEST(Config, RealDiT) {
    auto c = DiTConfig::from_file(real("transformer/config.json"));
    EXPECT_EQ(c.num_layers, 30);
    EXPECT_EQ(c.inner_dim(), 4096);
    EXPECT_EQ(c.text_embed_dim, 1472);
    EXPECT_EQ(c.prior_vq_quantizer_codebook_size, 16384);
}

TEST(Config, RealAR) {
    auto c = GlmArConfig::from_file(real("vision_language_encoder/config.json"));
    EXPECT_EQ(c.text.num_hidden_layers, 40);
    EXPECT_EQ(c.text.head_dim, 128);
    EXPECT_EQ(c.text.rotary_dim(), 64);
    EXPECT_EQ(c.text.mrope_section, (std::array<int64_t, 3>{8, 12, 12}));
    EXPECT_EQ(c.text.vision_vocab_size, 16512);
    EXPECT_EQ(c.vision.num_positions(), 16384);
    EXPECT_EQ(c.vision.head_dim(), 96);
    EXPECT_EQ(c.vq.num_embeddings, 16384);
    EXPECT_EQ(c.image_token_id, 167855);
}

TEST(Config, RealVAE_T5_Scheduler_Index) {
    auto v = VAEConfig::from_file(real("vae/config.json"));
    EXPECT_EQ(v.layers_per_block, 3);
    EXPECT_EQ(v.scale_factor(), 8);
    EXPECT_FALSE(v.mid_block_add_attention);
    auto t = T5Config::from_file(real("text_encoder/config.json"));
    EXPECT_EQ(t.inner_dim(), 384);
    EXPECT_TRUE(t.gated);
    auto s = SchedulerConfig::from_file(real("scheduler/scheduler_config.json"));
    EXPECT_TRUE(s.use_dynamic_shifting);
    EXPECT_EQ(s.time_shift_type, "linear");
    EXPECT_DOUBLE_EQ(s.max_shift, 0.75);
    EXPECT_FALSE(s.shift_terminal.has_value());
}

TEST(Config, MissingRequiredKey) {
    expect_error<ConfigError>(
        [&] { DiTConfig::from_file(edited("transformer/config.json", [](auto& j) { j.erase("num_layers"); })); },
        "missing required key 'num_layers'");
    expect_error<ConfigError>(
        [&] {
            GlmArConfig::from_file(edited("vision_language_encoder/config.json",
                                          [](auto& j) { j["text_config"].erase("hidden_size"); }));
        },
        "text_config: missing required key 'hidden_size'");
    expect_error<ConfigError>(
        [&] { VAEConfig::from_file(edited("vae/config.json", [](auto& j) { j.erase("latents_std"); })); },
        "missing required key 'latents_std'");
    expect_error<ConfigError>(
        [&] { T5Config::from_file(edited("text_encoder/config.json", [](auto& j) { j.erase("d_model"); })); },
        "missing required key 'd_model'");
}

TEST(Config, WrongType) {
    expect_error<ConfigError>(
        [&] { DiTConfig::from_file(edited("transformer/config.json", [](auto& j) { j["num_layers"] = "30"; })); },
        "key 'num_layers': expected integer, got string");
    expect_error<ConfigError>(
        [&] { DiTConfig::from_file(edited("transformer/config.json", [](auto& j) { j["patch_size"] = 2.5; })); },
        "key 'patch_size': expected integer, got number");
    expect_error<ConfigError>(
        [&] { VAEConfig::from_file(edited("vae/config.json", [](auto& j) { j["block_out_channels"] = 3; })); },
        "expected list of integers");
    expect_error<ConfigError>(
        [&] {
            SchedulerConfig::from_file(
                edited("scheduler/scheduler_config.json", [](auto& j) { j["use_dynamic_shifting"] = 1; }));
        },
        "expected boolean, got integer");
    expect_error<ConfigError>(
        [&] {
            GlmArConfig::from_file(edited("vision_language_encoder/config.json",
                                          [](auto& j) { j["text_config"]["rope_parameters"]["mrope_section"] = {8, 12}; }));
        },
        "mrope_section");
}

TEST(Config, InconsistentValues) {
    expect_error<ConfigError>(
        [&] {
            VAEConfig::from_file(edited("vae/config.json", [](auto& j) { j["latents_mean"] = {0.0, 1.0}; }));
        },
        "latents_mean and latents_std need 16 values");
    expect_error<ConfigError>(
        [&] { DiTConfig::from_file(edited("transformer/config.json", [](auto& j) { j["num_layers"] = 0; })); },
        "positive");
    expect_error<UnsupportedError>(
        [&] { T5Config::from_file(edited("text_encoder/config.json", [](auto& j) { j["feed_forward_proj"] = "swish"; })); },
        "feed_forward_proj 'swish'");
}

TEST(Config, MalformedJson) {
    const fs::path dir = testing::make_temp_dir("cfgbad");
    std::ofstream(dir / "config.json") << "{\"num_layers\": 3,";
    expect_error<FormatError>([&] { DiTConfig::from_file((dir / "config.json").string()); }, "not valid JSON");
    std::ofstream(dir / "list.json") << "[1, 2]";
    expect_error<ConfigError>([&] { DiTConfig::from_file((dir / "list.json").string()); }, "expected a JSON object");
    expect_error<FormatError>([&] { DiTConfig::from_file((dir / "absent.json").string()); }, "cannot open");
}

TEST(ModelIndex, ChecksComponents) {
    const fs::path dir = testing::make_temp_dir("idx");
    fs::copy_file(real("model_index.json"), dir / "model_index.json");
    // Folders missing: a clear "incomplete checkpoint" error.
    expect_error<InputError>([&] { ModelIndex::load(dir.string()); }, "missing component folder(s) vision_language_encoder/, processor/");
    for (const char* f : {"vision_language_encoder", "processor", "text_encoder", "tokenizer", "transformer", "vae",
                          "scheduler"})
        fs::create_directories(dir / f);
    auto idx = ModelIndex::load(dir.string());
    EXPECT_EQ(idx.components.at("transformer").second, "GlmImageTransformer2DModel");
    expect_error<InputError>([&] { ModelIndex::load((dir / "nope").string()); }, "does not exist");
    expect_error<InputError>([&] { ModelIndex::load((dir / "vae").string()); }, "model_index.json is missing");
}

}  // namespace
}  // namespace glmimage
