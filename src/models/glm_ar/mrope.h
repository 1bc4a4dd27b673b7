// GLM-Image 3-D rotary positions (MRoPE): the prefill position ids and the decode table
// that transformers' GlmArModel.get_rope_index builds, and the cos/sin tables with the
// chunked mrope_section selection of GlmImageTextRotaryEmbedding.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "models/glm_ar/config.h"

namespace glmimage {

using GridThw = std::array<int64_t, 3>;  // (t, h, w) of one image grid, in tokens

// Splits a flat grid list (source grids then target grids, sample after sample) by
// images_per_sample. Empty images_per_sample: every sample gets the whole list, the
// reference's fallback (right for batch 1).
std::vector<std::vector<GridThw>> split_grids(const std::vector<GridThw>& grids,
                                              const std::vector<int64_t>& images_per_sample, int64_t batch);

struct MropePositions {
    at::Tensor prefill;  // [3, B, L] int64; left-padding slots hold 1 as in the reference
    at::Tensor decode;   // [B, 3, D] int64: entry k is the position of the k-th generated token
    // Per sample: number of complete images (end markers) in its valid prompt; the grids
    // after them are the ones the model generates.
    std::vector<int64_t> complete_images;
};

// input_ids [B, L] (placeholders may already be replaced by VQ ids), attention_mask [B, L]
// (undefined: all valid). Throws InputError when a prompt image does not span exactly
// h*w tokens or a sample has no grids.
MropePositions build_mrope_positions(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                     const std::vector<std::vector<GridThw>>& grids_per_sample,
                                     int64_t image_start_id, int64_t image_end_id);

// cos/sin tables for [3, B, S] position ids: computed in fp32 like the reference, then cast.
class MropeRotary {
  public:
    explicit MropeRotary(const GlmTextConfig& config);
    // Returns cos, sin of shape [B, S, rotary_dim] in `dtype`.
    std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& position_ids, at::ScalarType dtype) const;
    int64_t rotary_dim() const { return 2 * inv_freq_.size(0); }

  private:
    at::Tensor inv_freq_;  // [rotary_dim / 2] fp32
    std::array<int64_t, 3> section_;
};

}  // namespace glmimage
