// Bit-for-bit comparisons of a kernel's result with LibTorch's, for the kernel tests.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <string>

namespace glmimage::testing {

// The integer type of a floating dtype's width, to compare bits (at::equal calls every NaN unequal).
inline at::ScalarType bits_type(const at::Tensor& t) { return t.element_size() == 2 ? at::kShort : at::kInt; }

// The same bits everywhere, NaN payloads and signed zeros included.
inline bool same_bits(const at::Tensor& a, const at::Tensor& b) {
    return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
           at::equal(a.contiguous().view(bits_type(a)), b.contiguous().view(bits_type(b)));
}

// The largest |a - b| over the elements finite in both (0 for empty tensors): what the kernel tests
// print beside their bit comparisons.
inline double max_abs_diff_finite(const at::Tensor& a, const at::Tensor& b) {
    if (a.numel() == 0) return 0.0;
    const auto finite = a.isfinite() & b.isfinite();
    return (a.to(at::kDouble) - b.to(at::kDouble)).masked_fill(~finite, 0).abs().max().item<double>();
}

// Equal where not NaN, bit for bit (signed zeros, infinities, subnormals), and NaN at the same
// places; prints `label`'s max abs diff over the values finite on both sides. NaN payloads and signs
// are not compared: LibTorch's depend on which of its loops wrote the element (its bf16 vector loop
// writes 0xFFFF, its scalar tail c10::BFloat16's 0x7FC0), and a loop's own on the order the
// compiler gives two NaN operands.
inline void expect_same_bits_nan_aside(const at::Tensor& got, const at::Tensor& want, const std::string& label) {
    ASSERT_EQ(got.sizes(), want.sizes());
    ASSERT_EQ(got.scalar_type(), want.scalar_type());
    const auto nan = want.isnan();
    std::printf("%s: max abs diff %g (finite values)\n", label.c_str(), max_abs_diff_finite(got, want));
    EXPECT_TRUE(at::equal(got.isnan(), nan)) << "NaN at other places";
    const int64_t differ = got.masked_fill(nan, 0).contiguous().view(bits_type(got))
                               .ne(want.masked_fill(nan, 0).contiguous().view(bits_type(want))).sum().item<int64_t>();
    EXPECT_EQ(differ, 0) << differ << " elements with other bits";
}

}  // namespace glmimage::testing
