// 2-D rotary position embedding of the GLM-Image DiT (diffusers GlmImageRotaryPosEmbed +
// apply_rotary_emb(use_real_unbind_dim=-2)): image tokens only, "rotate-half" pairing of
// element d with element d + head_dim/2.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "kernels/rotary.h"

namespace glmimage {

// cos / sin tables for a grid of grid_h x grid_w patches, each [grid_h * grid_w, head_dim],
// float32, tokens row-major. Depends only on the grid size: compute once per resolution.
struct DiTRope {
    at::Tensor cos;
    at::Tensor sin;
    int64_t grid_h = 0;
    int64_t grid_w = 0;
};

// Angles for patch (r, c): [r * inv_freq, c * inv_freq] repeated twice, with
// inv_freq[j] = 1 / theta^(2j / (head_dim/2)), j < head_dim/4, evaluated in float32 as the
// reference does (bitwise identical tables).
DiTRope make_dit_rope(int64_t head_dim, int64_t grid_h, int64_t grid_w, at::Device device,
                      double theta = 10000.0);

// x: [B, S, heads, head_dim] (any float dtype); rope tables for those S tokens. The rotation runs
// in float32 and the result is cast back to x's dtype.
at::Tensor apply_dit_rope(const at::Tensor& x, const DiTRope& rope);

// x: [B, n_text + S, heads, head_dim], text tokens first: the text tokens as they are (they take no
// rotation), the S image tokens as apply_dit_rope gives them. On the CPU (and CUDA with this
// build's kernels) one fused pass (kernels::rotary_half, the same bits) that lays the result out as
// `layout` says; elsewhere contiguous as x is ordered (token-major).
at::Tensor apply_dit_rope_to_image_tokens(const at::Tensor& x, const DiTRope& rope, int64_t n_text,
                                          kernels::RotaryLayout layout);

}  // namespace glmimage
