// Condition-image tokenization: the ViT vision encoder (GlmVisionModel) and the VQ
// quantizer (GlmVQModel) turn preprocessed patches into codebook ids, and the ids are
// upsampled 2x for the DiT's prior_token_image_ids. Forward code only: the modules are
// the shared tree in ar_model.h.
#pragma once

#include <ATen/ATen.h>

#include "models/glm_ar/config.h"
#include "models/glm_ar/ar_model.h"

namespace glmimage {

// pixel_values [N, 3*p*p] (any float dtype; cast to the weights' dtype), grid_thw [n, 3]
// int64 rows (1, gh, gw) with sum gh*gw == N. Returns the last hidden state [N, hidden] in the
// weights' dtype. Attention never crosses images. Bad shapes raise InputError.
at::Tensor vision_encode(const GlmVisionModel& model, const GlmVisionConfig& config, const at::Tensor& pixel_values,
                         const at::Tensor& grid_thw);

// features [N, latent] (vision output), grid_thw as above -> codebook ids [N] int64,
// row-major per image, images concatenated: quant_conv, L2-normalized features and
// codebook, nearest entry (first index on ties).
at::Tensor vq_token_ids(const GlmVQModel& vq, const at::Tensor& features, const at::Tensor& grid_thw);

// Both steps: what the AR prefill and the pipeline's prior ids start from.
at::Tensor image_token_ids(const GlmArModel& model, const at::Tensor& pixel_values, const at::Tensor& grid_thw);

// Nearest 2x upsampling of each image's ids ([gh, gw] -> [2gh, 2gw], row-major), images
// concatenated: the DiT's prior_token_image_ids; its grids are grid_thw with h, w doubled.
at::Tensor upsample_token_ids_2x(const at::Tensor& ids, const at::Tensor& grid_thw);

}  // namespace glmimage
