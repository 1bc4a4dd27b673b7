// Strict binding: exact checkpoints bind without copies; every kind of mismatch is
// reported in one WeightError; casts happen on request; the mapping outlives the index.
#include <gtest/gtest.h>

#include "glmimage/errors.h"
#include "io/tensor_loader.h"
#include "io/weight_binder.h"
#include "layers/linear.h"
#include "layers/norms.h"
#include "st_writer.h"

namespace glmimage {
namespace {

using testing::f32_bytes;
using testing::make_temp_dir;
using testing::safetensors_file;
using testing::StTensor;
using testing::write_file;

// proj.weight [3, 2], proj.bias [3], norm.weight [3], norm.bias [3]
class Toy : public ParamModule {
  public:
    explicit Toy(at::TensorOptions o) : ParamModule(o) {
        proj = child("proj", std::make_shared<Linear>(2, 3, true, o));
        auto s = child("blocks", std::make_shared<ModuleScope>(o));
        norm = s->add("0", std::make_shared<LayerNorm>(3, 1e-5, o));
    }
    std::shared_ptr<Linear> proj;
    std::shared_ptr<LayerNorm> norm;
};

std::vector<StTensor> good_tensors() {
    return {{"proj.weight", "F32", {3, 2}, f32_bytes({1, 2, 3, 4, 5, 6})},
            {"proj.bias", "F32", {3}, f32_bytes({0.5f, 0, -0.5f})},
            {"blocks.0.weight", "F32", {3}, f32_bytes({1, 1, 1})},
            {"blocks.0.bias", "F32", {3}, f32_bytes({0, 0, 0})}};
}

io::WeightIndex write_and_open(const std::vector<StTensor>& tensors) {
    auto path = make_temp_dir("bind") + "/model.safetensors";
    write_file(path, safetensors_file(tensors));
    return io::WeightIndex::open_file(path);
}

TEST(WeightBinder, NamesAreCheckpointKeys) {
    Toy toy(at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
    auto specs = io::parameter_specs(toy);
    std::vector<std::string> names;
    for (const auto& s : specs) names.push_back(s.name);
    EXPECT_EQ(names, (std::vector<std::string>{"blocks.0.bias", "blocks.0.weight", "proj.bias", "proj.weight"}));
}

TEST(WeightBinder, BindsZeroCopyAndComputes) {
    auto weights = write_and_open(good_tensors());
    Toy toy(at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
    io::BindOptions opts;
    auto report = io::bind_weights("toy", toy, weights, opts);
    EXPECT_EQ(report.bound, 4u);
    EXPECT_EQ(report.zero_copy, 4u);
    EXPECT_EQ(report.num_parameters, 15);
    auto y = toy.proj->forward(at::ones({1, 2}));
    EXPECT_TRUE(at::allclose(y, at::tensor({3.5f, 7.0f, 10.5f}).view({1, 3})));
    // The module's own registry sees the same tensors as the members.
    EXPECT_TRUE(toy.named_parameters()["proj.weight"].is_same(toy.proj->weight));
}

TEST(WeightBinder, MappingOutlivesIndex) {
    Toy toy(at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
    {
        auto weights = write_and_open(good_tensors());
        io::bind_weights("toy", toy, weights, {});
    }  // index and file handles gone; tensors keep the mapping alive
    EXPECT_FLOAT_EQ(toy.proj->weight[2][1].item<float>(), 6.0f);
}

TEST(WeightBinder, ReportsEveryProblemTogether) {
    auto t = good_tensors();
    t.erase(t.begin() + 1);                                        // proj.bias missing
    t[0].shape = {2, 3};                                           // proj.weight wrong shape
    t[1] = {"blocks.0.weight", "I32", {3}, std::string(12, '\0')};  // wrong dtype
    t.push_back({"blocks.1.weight", "F32", {1}, f32_bytes({1})});  // unexpected
    auto weights = write_and_open(t);
    Toy toy(at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
    try {
        io::bind_weights("toy", toy, weights, {});
        FAIL() << "expected WeightError";
    } catch (const WeightError& e) {
        ASSERT_EQ(e.issues().size(), 4u) << e.what();
        const std::string msg = e.what();
        EXPECT_NE(msg.find("1 missing:\n    'proj.bias': expected [3], got nothing"), std::string::npos) << msg;
        EXPECT_NE(msg.find("'proj.weight': expected [3, 2], got [2, 3]"), std::string::npos) << msg;
        EXPECT_NE(msg.find("'blocks.0.weight': expected F32, got I32"), std::string::npos) << msg;
        EXPECT_NE(msg.find("1 unexpected:\n    'blocks.1.weight'"), std::string::npos) << msg;
    }
}

TEST(WeightBinder, IgnoreListSkipsNamedKeys) {
    auto t = good_tensors();
    t.push_back({"alias.weight", "F32", {1}, f32_bytes({1})});
    auto weights = write_and_open(t);
    Toy toy(at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
    io::BindOptions opts;
    opts.ignored_keys = {{"alias.weight", "tied elsewhere"}};
    auto report = io::bind_weights("toy", toy, weights, opts);
    EXPECT_EQ(report.ignored, 1u);
}

TEST(WeightBinder, CastsOnRequest) {
    auto weights = write_and_open(good_tensors());
    Toy toy(at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16));
    io::BindOptions opts;
    opts.dtype = at::kBFloat16;
    auto report = io::bind_weights("toy", toy, weights, opts);
    EXPECT_EQ(report.converted, 4u);
    EXPECT_EQ(toy.proj->weight.scalar_type(), at::kBFloat16);
    EXPECT_FLOAT_EQ(toy.proj->weight[1][1].item<float>(), 4.0f);
    EXPECT_EQ(io::dominant_float_dtype(weights), at::kFloat);
}

}  // namespace
}  // namespace glmimage
