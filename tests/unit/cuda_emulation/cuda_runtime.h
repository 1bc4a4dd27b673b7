// A stand-in for CUDA's runtime header that lets this library's kernels
// (src/kernels/cuda/*_kernels.cuh) compile as plain C++ and run on the CPU, one thread of the grid
// after the other (tests/unit/test_cuda_emulated.cpp): what a machine without a GPU can check of
// them is their indexing (rows, strides, slots, layouts, the grid-stride loops). The device's own
// arithmetic (rsqrtf, expf, the _rn intrinsics) is checked on a GPU by tests/python/test_fused_kernels.py.
#pragma once

#include <cmath>
#include <cstdint>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace glmi_emulation {
inline thread_local dim3 block_idx, thread_idx, grid_dim, block_dim;
}  // namespace glmi_emulation

#define blockIdx ::glmi_emulation::block_idx
#define threadIdx ::glmi_emulation::thread_idx
#define gridDim ::glmi_emulation::grid_dim
#define blockDim ::glmi_emulation::block_dim

using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return ""; }

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }  // as LibTorch's CPU rsqrt
inline float __fdiv_rn(float a, float b) { return a / b; }
