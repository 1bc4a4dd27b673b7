// kernels::mul_add against LibTorch's a * g + c: bit for bit, for float32, bfloat16 and float16,
// with g per sample or shared, c a full tensor or a vector, a a slice of a longer sequence; and
// what it must refuse.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "kernels/mul_add.h"
#include "mean_ms.h"
#include "same_bits.h"

namespace glmimage {
namespace {

TEST(MulAdd, EqualsLibTorchOps) {
    for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
        for (int64_t B : {1, 2}) {
            for (bool c_full : {true, false}) {
                for (bool g_shared : {false, true}) {
                    SCOPED_TRACE(::testing::Message() << dt << " B " << B << " c_full " << c_full << " g_shared " << g_shared);
                    const int64_t S = 37, D = 96;
                    at::manual_seed(B * 10 + c_full * 2 + g_shared);
                    // a as the DiT passes it: its rows a slice of a longer sequence (text first).
                    const auto a = (at::randn({B, S + 5, D}) * 3).to(dt).slice(1, 5);
                    const auto g = (at::randn({g_shared ? 1 : B, 1, D}) + 1).to(dt);
                    const auto c = (c_full ? at::randn({B, S, D}) * 5 : at::randn({B, 1, D})).to(dt);
                    ASSERT_TRUE(kernels::mul_add_takes(a, g, c));
                    const auto got = kernels::mul_add(a, g, c);
                    const auto want = a * g + c;
                    const double diff = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
                    if (B == 2 && c_full && !g_shared)
                        std::printf("mul_add %s: max abs diff %g\n", c10::toString(dt), diff);
                    EXPECT_EQ(got.sizes(), want.sizes());
                    EXPECT_TRUE(at::equal(got, want));
                }
            }
        }
    }
}

// Every bf16 bit pattern as a (NaNs, infinities, subnormals, both zeros) and as c, at row widths
// that are not multiples of the vector loop's width (its tail), in each dtype: LibTorch's bits from
// whichever build of the row loop this CPU runs (the AVX2 one where it has AVX2, else the generic).
TEST(MulAdd, EveryBf16PatternAtRaggedWidths) {
    const auto patterns = at::arange(0, 65536, at::kInt).to(at::kShort).view(at::kBFloat16);
    for (auto dt : {at::kBFloat16, at::kFloat, at::kHalf}) {
        for (int64_t D : {1, 7, 9, 17, 33, 100, 4096}) {
            SCOPED_TRACE(::testing::Message() << dt << " D " << D);
            const int64_t S = (65536 + D - 1) / D;
            at::manual_seed(D);
            // a: the patterns in order (the first repeated to fill the last row); c: shuffled
            const auto a = at::cat({patterns, patterns.narrow(0, 0, S * D - 65536)}).to(dt).view({1, S, D});
            const auto c = a.flatten().index_select(0, at::randperm(S * D)).view({1, S, D});
            auto g = (at::randn({1, 1, D}) * 2).to(dt);
            const float specials[] = {INFINITY, NAN, 0.0f, -0.0f, 1e-40f, -3.0f};
            for (int64_t i = 0; i < std::min<int64_t>(D, 6); ++i) g.index_put_({0, 0, i}, specials[i]);
            testing::expect_same_bits_nan_aside(kernels::mul_add(a, g, c), a * g + c,
                                                std::string("mul_add every bf16 pattern, ") + c10::toString(dt) +
                                                    ", D " + std::to_string(D));
        }
    }
}

TEST(MulAdd, IntoRowsOfALongerSequence) {
    for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
        SCOPED_TRACE(::testing::Message() << dt);
        const int64_t B = 2, S = 37, D = 96, L = 5;
        at::manual_seed(7);
        const auto a = (at::randn({B, S, D}) * 3).to(dt), g = (at::randn({B, 1, D}) + 1).to(dt);
        const auto c = (at::randn({B, S, D}) * 5).to(dt);
        // y: the image rows of [text; image] samples, as the DiT fills its attention input
        const auto buffer = at::full({B, L + S, D}, 42.0, dt);
        const auto y = buffer.slice(1, L);
        ASSERT_TRUE(kernels::mul_add_into_takes(a, g, c, y));
        kernels::mul_add_into(a, g, c, y);
        const auto want = a * g + c;
        const double diff = (y.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
        std::printf("mul_add_into %s: max abs diff %g\n", c10::toString(dt), diff);
        EXPECT_TRUE(at::equal(y, want));
        EXPECT_TRUE(at::equal(buffer.slice(1, 0, L), at::full({B, L, D}, 42.0, dt))) << "wrote outside y's rows";
    }
    const auto a = at::randn({2, 5, 8}), g = at::randn({2, 1, 8}), c = at::randn({2, 5, 8});
    EXPECT_FALSE(kernels::mul_add_into_takes(a, g, c, at::empty({2, 8, 5}).transpose(1, 2)));  // y's rows strided
    EXPECT_FALSE(kernels::mul_add_into_takes(a, g, c, at::empty({2, 6, 8})));                  // another shape
    EXPECT_FALSE(kernels::mul_add_into_takes(a, g, c, at::empty({2, 5, 8}, at::kBFloat16)));   // another dtype
    EXPECT_THROW(kernels::mul_add_into(a, g, c, at::empty({2, 6, 8})), std::exception);
}

TEST(MulAdd, RefusesWhatItDoesNotRun) {
    const auto a = at::randn({2, 5, 8}), g = at::randn({2, 1, 8}), c = at::randn({2, 5, 8});
    EXPECT_TRUE(kernels::mul_add_takes(a, g, c));
    EXPECT_TRUE(kernels::mul_add_takes(at::randn({2, 7, 8}).slice(1, 2), g, c));               // rows of a longer a
    EXPECT_FALSE(kernels::mul_add_takes(at::randn({2, 8, 5}).transpose(1, 2), g, c));         // a's rows strided
    EXPECT_FALSE(kernels::mul_add_takes(a, g, c.transpose(0, 1).contiguous().transpose(0, 1)));  // strided c
    EXPECT_FALSE(kernels::mul_add_takes(a, g.to(at::kBFloat16), c));                            // mixed dtypes
    EXPECT_FALSE(kernels::mul_add_takes(a, at::randn({2, 5, 8}), c));                           // g not a vector
    EXPECT_FALSE(kernels::mul_add_takes(a, g, at::randn({2, 5, 1})));                           // c neither
    EXPECT_FALSE(kernels::mul_add_takes(a.to(at::kDouble), g.to(at::kDouble), c.to(at::kDouble)));
    EXPECT_THROW(kernels::mul_add(a, at::randn({3, 1, 8}), c), std::exception);
}

// Not a pass/fail check (timings on a shared machine): the figures for the record, at the DiT's
// real width and 1024x1024 (4096 image tokens).
TEST(MulAdd, TimingAgainstLibTorch) {
    const auto a = at::randn({1, 4096, 4096}).to(at::kBFloat16), c = at::randn({1, 4096, 4096}).to(at::kBFloat16);
    const auto g = at::randn({1, 1, 4096}).to(at::kBFloat16);
    std::printf("bf16 [1, 4096, 4096], %d threads: mul_add %.1f ms (LibTorch a * g + c %.1f)\n", at::get_num_threads(),
                testing::mean_ms([&] { return kernels::mul_add(a, g, c); }), testing::mean_ms([&] { return a * g + c; }));
}

}  // namespace
}  // namespace glmimage
