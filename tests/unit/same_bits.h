// Bit-for-bit comparison of a kernel's result with LibTorch's, for the kernel tests.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>

namespace glmimage::testing {

// Equal where not NaN, bit for bit (signed zeros, infinities, subnormals), and NaN at the same
// places. NaN payloads and signs are not compared: LibTorch's depend on which of its loops wrote
// the element (its bf16 vector loop writes 0xFFFF, its scalar tail c10::BFloat16's 0x7FC0), and a
// loop's own on the order the compiler gives two NaN operands.
inline void expect_same_bits_nan_aside(const at::Tensor& got, const at::Tensor& want) {
    ASSERT_EQ(got.sizes(), want.sizes());
    ASSERT_EQ(got.scalar_type(), want.scalar_type());
    const auto nan = want.isnan();
    EXPECT_TRUE(at::equal(got.isnan(), nan)) << "NaN at other places";
    const auto as_int = got.element_size() == 2 ? at::kShort : at::kInt;
    const int64_t differ = got.masked_fill(nan, 0).contiguous().view(as_int)
                               .ne(want.masked_fill(nan, 0).contiguous().view(as_int)).sum().item<int64_t>();
    EXPECT_EQ(differ, 0) << differ << " elements with other bits";
}

}  // namespace glmimage::testing
