// processor/preprocessor_config.json, parsed once, and the GLM smart_resize rule that both the
// prompt processor (token grid sizes) and the vision preprocessing (pixel sizes) apply. Torch-free.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace glmimage {

struct ImageSize {
    int64_t height = 0;
    int64_t width = 0;
};

struct PreprocessorConfig {
    int64_t patch_size = 16;
    int64_t merge_size = 1;
    int64_t min_pixels = 512 * 512;    // size.shortest_edge in the reference: an AREA, sqrt taken
    int64_t max_pixels = 2048 * 2048;  // size.longest_edge, likewise
    std::array<double, 3> image_mean = {0.5, 0.5, 0.5};
    std::array<double, 3> image_std = {0.5, 0.5, 0.5};
    double rescale_factor = 1.0 / 255.0;
    bool do_rescale = true;
    bool do_normalize = true;

    // Reads a preprocessor_config.json. Only what GLM-Image uses is supported: resizing on,
    // bicubic, merge_size 1, temporal_patch_size 1 (anything else is an UnsupportedError).
    static PreprocessorConfig from_file(const std::string& path);

    // The size a condition image of this size is resized to (smart_resize with the patch factor).
    ImageSize resized(ImageSize image) const;
};

// GLM-Image's smart_resize (transformers image_processing_glm_image.py): the size an image of
// height x width is resized to, both multiples of `factor`. Scales the short side up to
// sqrt(min_pixels) and the long side down to sqrt(max_pixels), halves the input, rounds half to
// even. InputError if a side is below `factor` or the aspect ratio exceeds 4.
ImageSize smart_resize(int64_t height, int64_t width, int64_t factor = 16, int64_t min_pixels = 512 * 512,
                       int64_t max_pixels = 2048 * 2048);

}  // namespace glmimage
