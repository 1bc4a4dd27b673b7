// The embedded tiny checkpoint (written by the reference's own save_pretrained) loads
// through the public API with zero missing or unexpected keys, in its dtype and cast.
#include <gtest/gtest.h>

#include <filesystem>

#include "glmimage/glmimage.h"
#include "io/weight_index.h"

namespace glmimage {
namespace {

namespace fs = std::filesystem;
const std::string kTiny = std::string(GLMI_MODELS_DIR) + "/tiny";

size_t tensors_in(const std::string& folder) { return io::WeightIndex::open_dir(kTiny + "/" + folder).size(); }

TEST(LoadTiny, EveryTensorBinds) {
    auto pipe = Pipeline::load(kTiny);
    ASSERT_EQ(pipe->components().size(), 4u);
    for (const auto& c : pipe->components()) {
        // Strict binding threw nothing: every expected key was found. Nothing unbound is left
        // in the file either (the T5 tied alias is the only listed exception).
        size_t in_file = tensors_in(c.folder);
        EXPECT_TRUE(c.num_tensors == in_file || (c.folder == "text_encoder" && c.num_tensors + 1 == in_file))
            << c.folder << ": bound " << c.num_tensors << " of " << in_file;
        EXPECT_EQ(c.zero_copy, c.num_tensors) << c.folder;
        EXPECT_EQ(c.dtype, "F32");
    }
    std::printf("%s", pipe->summary().c_str());
}

TEST(LoadTiny, CastsToBFloat16OnRequest) {
    LoadOptions o;
    o.dtype = "bfloat16";
    auto pipe = Pipeline::load(kTiny, o);
    for (const auto& c : pipe->components()) {
        EXPECT_EQ(c.dtype, "BF16");
        EXPECT_EQ(c.zero_copy, 0u);
    }
}

TEST(LoadTiny, BadInputsGiveClearErrors) {
    EXPECT_THROW(Pipeline::load("/nonexistent/model"), InputError);
    LoadOptions bad_dtype;
    bad_dtype.dtype = "float8";
    EXPECT_THROW(Pipeline::load(kTiny, bad_dtype), InputError);
    LoadOptions bad_device;
    bad_device.device = "tpu";
    EXPECT_THROW(Pipeline::load(kTiny, bad_device), InputError);
    // A checkpoint with one folder removed.
    auto dir = fs::temp_directory_path() / ("glmi_incomplete_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::copy(kTiny, dir, fs::copy_options::recursive);
    fs::remove_all(dir / "vae");
    try {
        Pipeline::load(dir.string());
        FAIL();
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("folder 'vae' is missing"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace glmimage
