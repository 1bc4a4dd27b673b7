// The GLM byte-level BPE tokenizer (the tiny checkpoint's vocabulary, the real GLM-4 split
// regex): encoding arbitrary bytes (invalid UTF-8 included) and decoding arbitrary ids gives
// ids in range / text, or an InputError, never a crash; valid UTF-8 round-trips.
#include <string>
#include <vector>

#include "glmimage/errors.h"
#include "tokenizers/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace glmimage;
    static const BpeTokenizer tok = BpeTokenizer::from_file(GLMI_TINY_DIR "/processor/tokenizer.json");
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        const auto ids = tok.encode(text);
        std::vector<int64_t> as64(ids.begin(), ids.end());
        const std::string back = tok.decode(as64);
        (void)back;
    } catch (const InputError&) {
    }
    // Arbitrary ids, two bytes each.
    std::vector<int64_t> ids;
    for (size_t i = 0; i + 1 < size; i += 2) ids.push_back(int64_t{data[i]} << 8 | data[i + 1]);
    try {
        (void)tok.decode(ids, /*skip_special_tokens=*/(size & 1) != 0);
    } catch (const InputError&) {
    }
    return 0;
}
