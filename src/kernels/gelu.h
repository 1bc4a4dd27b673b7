// GELU (exact, or its tanh form) as LibTorch's at::gelu computes it, faster for 16-bit floats on
// the CPU.
//
// A bf16 or float16 GELU has 65536 possible inputs, and LibTorch computes each one in float32 and
// rounds it back, the same way wherever the element sits (its vector loop; see below). So the
// result of every input is looked up in a table that LibTorch's own at::gelu wrote once per
// process, per dtype and form (half_float_table.h): the bits of the op, without its arithmetic.
// Profile-led: in the DiT's feed-forward the tanh form took 7.9 ms of a 140 ms small-preset bf16
// step on a 2-core AVX2 EPYC (LibTorch's vectorized tanh runs at about 0.3 G elements/s a core
// there); a table lookup is a load per element.
//
// The one place LibTorch itself is not per-value: its scalar loop (std::tanh, std::erf) computes
// the last few elements of each thread's piece when a piece is not a multiple of twice its vector
// width, and can round those one bf16 step apart from its vector loop (or, for the tanh form below
// x = -4, where 1 + tanh cancels, give a value of about 1e-7 where the vector loop gives -0). The
// table holds the vector loop's values (it is written in pieces that are whole vectors), so in such
// positions ours and LibTorch's may differ by that much. The DiT's and the vision encoder's
// feed-forwards, whose pieces are whole vectors, give LibTorch's bits (test_kernels checks every
// input and those shapes).
#pragma once

#include <ATen/ATen.h>
#include <string_view>

namespace glmimage::kernels {

// Whether gelu() looks x up (and the fused kernels' switch of fused_switch.h is on): a contiguous
// bf16 or float16 tensor on the CPU.
bool gelu_by_table(const at::Tensor& x);

// at::gelu(x, approximate) with approximate "none" or "tanh": by table where gelu_by_table(x),
// LibTorch's op otherwise.
at::Tensor gelu(const at::Tensor& x, std::string_view approximate = "none");

}  // namespace glmimage::kernels
