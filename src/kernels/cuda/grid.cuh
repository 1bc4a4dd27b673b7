// The launch shape of this library's elementwise CUDA kernels: rows x cols elements, blocks over
// rows (x, grid-stride) and over chunks of a row (y), threads along the row, so that each thread
// finds its element with no 64-bit division per element (a division per row at most), and a single
// row (the decode step's 4,096 elements) still spreads over several blocks.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace glmimage::kernels::cuda {

struct RowGrid {
    dim3 blocks;
    unsigned threads;
};

inline RowGrid row_grid(int64_t rows, int64_t cols) {
    const unsigned threads = cols >= 256 ? 256u : (cols >= 128 ? 128u : 64u);
    int64_t chunks = (cols + threads - 1) / threads;
    chunks = chunks < 1 ? 1 : (chunks > 16 ? 16 : chunks);
    const int64_t row_blocks = rows < 1 ? 1 : (rows > (1 << 20) ? (1 << 20) : rows);
    return {dim3(static_cast<unsigned>(row_blocks), static_cast<unsigned>(chunks)), threads};
}

inline const char* launched() {
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace glmimage::kernels::cuda

// for (row r of this block) for (column c of this thread) { ... }
#define GLMI_FOR_ROWS(r, rows) for (int64_t r = blockIdx.x; r < (rows); r += gridDim.x)
#define GLMI_FOR_COLS(c, cols)                                                             \
    for (int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; c < (cols); \
         c += static_cast<int64_t>(gridDim.y) * blockDim.x)
