// LibTorch's result of a one-input op for every input of a 16-bit float type, written by the op
// itself once per process: for ops whose bits a loop here could not reproduce (their exp, tanh or
// erf are LibTorch's vector library's), a lookup gives the op's bits without its arithmetic.
//
// The table holds the values of LibTorch's vector loop: it is written in pieces below LibTorch's
// grain size (each piece one serial call of its loop) and a multiple of twice any vector width it
// has. Where LibTorch's op computes an element in its scalar loop instead (the last elements of a
// contiguous run that is not a multiple of twice its vector width), its value may be one step apart
// from the table's (std::exp or std::tanh against the vector library's); callers say where that
// cannot happen.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace glmimage::kernels {

enum class TabledOp { gelu, gelu_tanh, silu };

// The table of `op` for `dtype` (bfloat16 or float16), indexed by the input's bits: 65536 entries,
// written on first use (thread-safe), kept for the process.
const uint16_t* half_float_table(at::ScalarType dtype, TabledOp op);

}  // namespace glmimage::kernels
