// The --prompt-file reader: arbitrary bytes give non-blank prompts without line endings, or an
// InputError, never a crash.
#include "../../cli/prompt_file.h"
#include "fuzz_util.h"
#include "glmimage/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace glmimage;
    const std::string path = glmimage::fuzz::input_file(data, size, ".txt");
    try {
        for (const auto& p : cli::read_prompt_file(path))
            if (p.empty() || p.find('\n') != std::string::npos) __builtin_trap();
    } catch (const InputError&) {
    }
    return 0;
}
