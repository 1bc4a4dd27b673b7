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

#include "models/glm_ar/preprocessor_config.h"

namespace glmimage {

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
ProcessedImages preprocess_images(const std::vector<at::Tensor>& images, const PreprocessorConfig& config);

}  // namespace glmimage
