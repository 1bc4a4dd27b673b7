// Every JSON config reader (each component's config.json, the scheduler, the preprocessor, a
// shard index): a config or a FormatError / ConfigError / UnsupportedError, never a crash.
#include <filesystem>

#include "fuzz_util.h"
#include "glmimage/errors.h"
#include "io/weight_index.h"
#include "models/dit/config.h"
#include "models/glm_ar/config.h"
#include "models/glm_ar/preprocessor_config.h"
#include "models/t5/config.h"
#include "models/vae/config.h"
#include "schedulers/scheduler_config.h"

namespace {

template <typename F>
void expect_clean(F&& f) {
    try {
        f();
    } catch (const glmimage::Error&) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace glmimage;
    const std::string path = fuzz::input_file(data, size, ".json");
    expect_clean([&] { DiTConfig::from_file(path); });
    expect_clean([&] { VAEConfig::from_file(path); });
    expect_clean([&] { T5Config::from_file(path); });
    expect_clean([&] { GlmArConfig::from_file(path); });
    expect_clean([&] { SchedulerConfig::from_file(path); });
    expect_clean([&] { PreprocessorConfig::from_file(path); });
    // The same bytes as a shard index beside no shards.
    static const fuzz::ScratchPath scratch("glmi_fuzz_idx_" + std::to_string(getpid()), fuzz::ScratchPath::kFolder);
    const std::string& dir = scratch.path;
    std::filesystem::copy_file(path, dir + "/model.safetensors.index.json",
                               std::filesystem::copy_options::overwrite_existing);
    expect_clean([&] { io::WeightIndex::open_dir(dir); });
    return 0;
}
