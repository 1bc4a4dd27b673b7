// The one 2x upsampling of a token grid: the AR stage's main grid and each condition image's
// VQ ids become the DiT's prior tokens this way (the DiT patch grid is the AR grid doubled).
#pragma once

#include <ATen/ATen.h>

namespace glmimage {

// ids [h * w] of a row-major grid -> [4 * h * w] int64, row-major: out[2r + i][2c + j] = in[r][c].
inline at::Tensor upsample_grid_2x(const at::Tensor& ids, int64_t h, int64_t w) {
    return ids.reshape({h, 1, w, 1}).expand({h, 2, w, 2}).reshape({4 * h * w}).to(at::kLong);
}

}  // namespace glmimage
