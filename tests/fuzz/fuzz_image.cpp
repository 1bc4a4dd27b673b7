// The condition-image reader of the CLI (stb_image PNG / JPEG, dimensions bounded before
// decoding): an RGB image of the declared size, or an InputError, never a crash.
#include "../../cli/png_writer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace glmimage;
    const std::string path = fuzz::input_file(data, size, ".img");
    try {
        const Image img = cli::read_image(path);
        if (img.rgb.size() != static_cast<size_t>(img.height * img.width * 3)) __builtin_trap();
    } catch (const InputError&) {
    }
    return 0;
}
