// LibTorch's utils::CeilLog2 (ATen/native/cpu/utils.h): ceil(log2(x)), and 1 for x <= 2, the number of
// levels of its CPU kernels' cascaded sums. One copy for the loops here that follow those cascades
// (row_sum.h: at::sum's; layer_norm.cpp: the moments of at::layer_norm).
#pragma once

#include <cstdint>

namespace glmimage::kernels {

constexpr int64_t libtorch_ceil_log2(int64_t x) {
    int64_t bits = 1;
    while ((int64_t{1} << bits) < x) ++bits;
    return bits;
}

}  // namespace glmimage::kernels
