// The C++ module trees built from the REAL configs (on the meta device: no memory) have
// exactly the parameter names, shapes and dtypes of models/manifests/, which
// tools/dump_manifest.py writes from the reference classes. This is how we know the real
// 36 GB checkpoint binds without having it.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/tensor_loader.h"
#include "io/weight_binder.h"
#include "models/dit/transformer.h"
#include "models/glm_ar/ar_model.h"
#include "models/t5/t5_encoder.h"
#include "models/vae/autoencoder_kl.h"

namespace glmimage {
namespace {

const std::string kReal = std::string(GLMI_SOURCE_DIR) + "/tests/data/real-configs/";
const std::string kManifests = std::string(GLMI_MODELS_DIR) + "/manifests/";
const at::TensorOptions kMetaBF16 = at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16);

void compare_with_manifest(ParamModule& module, const std::string& component, int64_t expect_params = -1) {
    std::ifstream in(kManifests + component + ".json");
    ASSERT_TRUE(in) << "missing manifest " << kManifests << component << ".json";
    auto manifest = nlohmann::json::parse(in);
    std::map<std::string, std::pair<std::vector<int64_t>, std::string>> want;
    for (const auto& t : manifest.at("tensors"))
        want[t.at("name").get<std::string>()] = {t.at("shape").get<std::vector<int64_t>>(),
                                                 t.at("dtype").get<std::string>()};
    int64_t total = 0;
    size_t mismatches = 0;
    std::set<std::string> seen;
    for (const auto& spec : io::parameter_specs(module)) {
        seen.insert(spec.name);
        int64_t n = 1;
        for (auto d : spec.shape) n *= d;
        total += n;
        auto it = want.find(spec.name);
        if (it == want.end()) {
            ADD_FAILURE() << component << ": C++ has '" << spec.name << "', the manifest does not";
            ++mismatches;
            continue;
        }
        if (it->second.first != spec.shape || it->second.second != io::scalar_type_name(spec.dtype)) {
            ADD_FAILURE() << component << ": '" << spec.name << "' manifest " << io::shape_to_string(it->second.first)
                          << " " << it->second.second << ", C++ " << io::shape_to_string(spec.shape) << " "
                          << io::scalar_type_name(spec.dtype);
            ++mismatches;
        }
    }
    for (const auto& [name, v] : want) {
        if (seen.count(name)) continue;
        ADD_FAILURE() << component << ": manifest has '" << name << "', C++ does not";
        ++mismatches;
    }
    EXPECT_EQ(mismatches, 0u);
    EXPECT_EQ(seen.size(), manifest.at("num_tensors").get<size_t>());
    EXPECT_EQ(total, manifest.at("num_parameters").get<int64_t>());
    if (expect_params >= 0) {
        EXPECT_EQ(total, expect_params);
    }
    std::printf("%s: %zu tensors, %lld parameters match the manifest\n", component.c_str(), seen.size(),
                static_cast<long long>(total));
}

TEST(Manifests, TransformerRealSize) {
    GlmImageTransformer m(DiTConfig::from_file(kReal + "transformer/config.json"), kMetaBF16);
    compare_with_manifest(m, "transformer", 6926882880LL);
    EXPECT_EQ(io::parameter_specs(m).size(), 443u);
}

TEST(Manifests, VAERealSize) {
    AutoencoderKL m(VAEConfig::from_file(kReal + "vae/config.json"), kMetaBF16);
    compare_with_manifest(m, "vae");
}

TEST(Manifests, TextEncoderRealSize) {
    T5Encoder m(T5Config::from_file(kReal + "text_encoder/config.json"), kMetaBF16);
    compare_with_manifest(m, "text_encoder");
}

TEST(Manifests, VisionLanguageEncoderRealSize) {
    GlmArModel m(GlmArConfig::from_file(kReal + "vision_language_encoder/config.json"), kMetaBF16);
    compare_with_manifest(m, "vision_language_encoder");
}

}  // namespace
}  // namespace glmimage
