// The safetensors header parser and its range checks (and, through a second file name, the
// shard index reader): any input is a valid file or a FormatError, never a crash.
#include "fuzz_util.h"
#include "glmimage/errors.h"
#include "io/safetensors.h"
#include "io/weight_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace glmimage;
    const std::string path = fuzz::input_file(data, size, ".safetensors");
    try {
        auto f = io::SafetensorsFile::open(path);
        volatile uint8_t sink = 0;
        for (const auto& t : f->tensors())  // every range the header claims must be readable
            if (t.end > t.begin) sink = sink + f->data(t)[0] + f->data(t)[t.end - t.begin - 1];
    } catch (const Error&) {
    }
    return 0;
}
