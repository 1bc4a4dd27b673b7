// GLM-Image condition-image preprocessing (processor/preprocessor_config.json): the GLM
// smart_resize rule, PIL-exact bicubic resampling of uint8 RGB, rescale + normalize, and
// the flat patch layout the vision encoder reads.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace glmimage {

struct ImageProcessorConfig {
    int64_t patch_size = 16;
    int64_t min_pixels = 512 * 512;    // size.shortest_edge in the reference: an AREA, sqrt taken
    int64_t max_pixels = 2048 * 2048;  // size.longest_edge, likewise
    std::array<double, 3> image_mean = {0.5, 0.5, 0.5};
    std::array<double, 3> image_std = {0.5, 0.5, 0.5};
    double rescale_factor = 1.0 / 255.0;
    bool do_rescale = true;
    bool do_normalize = true;

    // Reads a preprocessor_config.json. Only what GLM-Image uses is supported: resizing on,
    // bicubic, merge_size 1, temporal_patch_size 1 (anything else is an UnsupportedError).
    static ImageProcessorConfig from_file(const std::string& path);
};

// Target (height, width) for an input of h x w: the GLM rule (halves the input before
// rounding to the patch factor, round-half-to-even, clamps to max). InputError for a side
// below `factor` or an aspect ratio above 4.
std::pair<int64_t, int64_t> smart_resize(int64_t h, int64_t w, int64_t factor, int64_t min_pixels, int64_t max_pixels);

// Bicubic resize of a uint8 [H, W, C] image to [out_h, out_w, C], bit-exact with
// PIL's Image.resize(..., BICUBIC) (separable, 22-bit fixed-point coefficients, uint8 between passes).
at::Tensor resize_bicubic_u8(const at::Tensor& image_hwc, int64_t out_h, int64_t out_w);

// The same separable fixed-point resampler with PIL's BICUBIC or LANCZOS filter (Lanczos is
// what diffusers' VaeImageProcessor uses for the decoder's copy of a condition image).
enum class ResampleFilter { kBicubic, kLanczos };
at::Tensor resize_u8(const at::Tensor& image_hwc, int64_t out_h, int64_t out_w, ResampleFilter filter);

struct ProcessedImages {
    at::Tensor pixel_values;  // [sum gh*gw, 3*p*p] float32, rows = patches, row-major per image
    at::Tensor grid_thw;      // [num_images, 3] int64, rows (1, gh, gw)
};

// Each image: uint8 [H, W, 3] RGB (as np.asarray(PIL image)); grey [H, W] / [H, W, 1] and RGBA
// [H, W, 4] are converted like the reference (replicated; composited onto white). Bad images
// raise InputError.
ProcessedImages preprocess_images(const std::vector<at::Tensor>& images, const ImageProcessorConfig& config);

}  // namespace glmimage
