// The decoded image to pixels, as diffusers' VaeImageProcessor.postprocess does it for
// GLM-Image (do_normalize: the VAE outputs [-1, 1]).
#pragma once

#include <ATen/ATen.h>

namespace glmimage {

// clamp(x * 0.5 + 0.5, 0, 1) in the dtype of x (the VAE dtype: bf16 rounding is part of the
// result), still NCHW: the pipeline's output_type "pt".
at::Tensor denormalize_image(const at::Tensor& images);

// (B, C, H, W) VAE output -> (B, H, W, C) float32 in [0, 1] on the CPU (a permuted view, not laid
// out: .contiguous() where the layout matters): denormalize_image in the input dtype, then float32
// (output_type "np"). Throws InputError unless images is a 4-D floating tensor.
at::Tensor postprocess_to_float(const at::Tensor& images);

// postprocess_to_float, then * 255, round half to even, uint8 (output_type "pil").
at::Tensor postprocess_to_uint8(const at::Tensor& images);

}  // namespace glmimage
