// kernels::rotary_half against the LibTorch op sequence the DiT used before it (and the reference
// uses): bit for bit, for float32, bfloat16 and float16, with and without text tokens before the
// image ones, on strided inputs (a slice of the fused q/k/v output); and what it must refuse.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cstdio>

#include "kernels/rotary.h"
#include "mean_ms.h"
#include "same_bits.h"

namespace glmimage {
namespace {

at::Tensor reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t skip) {
    const auto img = x.slice(1, skip);
    const int64_t half = x.size(3) / 2;
    const auto c = cos.unsqueeze(0).unsqueeze(2), s = sin.unsqueeze(0).unsqueeze(2);
    const auto rotated = at::cat({-img.slice(3, half), img.slice(3, 0, half)}, -1);
    const auto roped = (img.to(at::kFloat) * c + rotated.to(at::kFloat) * s).to(x.scalar_type());
    return at::cat({x.slice(1, 0, skip), roped}, 1);
}

TEST(Rotary, EqualsLibTorchOps) {
    for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
        for (int64_t skip : {0, 3, 17}) {
            for (auto layout : {kernels::RotaryLayout::kTokenMajor, kernels::RotaryLayout::kHeadMajor}) {
                const bool head_major = layout == kernels::RotaryLayout::kHeadMajor;
                SCOPED_TRACE(::testing::Message() << dt << " skip " << skip << (head_major ? " head-major" : ""));
                const int64_t B = 2, S = 17 + 40, H = 3, D = 64;
                at::manual_seed(skip + 7);
                // A slice of a wider last-but-one layout, as q is of the fused q/k/v projection.
                const auto wide = (at::randn({B, S, 3 * H * D}) * 4).to(dt);
                const auto x = wide.narrow(2, H * D, H * D).view({B, S, H, D});
                const auto angles = at::randn({S - skip, D}) * 3;
                const auto cos = angles.cos(), sin = angles.sin();
                ASSERT_TRUE(kernels::rotary_half_takes(x, cos, sin, skip));
                const auto got = kernels::rotary_half(x, cos, sin, skip, layout);
                const auto want = reference(x, cos, sin, skip);
                EXPECT_TRUE(head_major ? got.transpose(1, 2).is_contiguous() : got.is_contiguous());
                EXPECT_EQ(got.sizes(), x.sizes());
                EXPECT_EQ(got.scalar_type(), dt);
                const double diff = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
                std::printf("rotary_half %s skip %lld%s: max abs diff %g\n", c10::toString(dt),
                            static_cast<long long>(skip), head_major ? " head-major" : "", diff);
                EXPECT_TRUE(at::equal(got, want));
            }
        }
    }
}

// Every bf16 bit pattern as x (NaNs, infinities, subnormals, both zeros), at head widths whose
// halves are not multiples of the vector loop's width (its tail), in each dtype: the op sequence's
// bits (NaN at the same places) from whichever build of the row loop this CPU runs (the AVX2 one
// where it has AVX2, else the generic).
TEST(Rotary, EveryBf16PatternAtRaggedWidths) {
    const auto patterns = at::arange(0, 65536, at::kInt).to(at::kShort).view(at::kBFloat16);
    for (auto dt : {at::kBFloat16, at::kFloat, at::kHalf}) {
        for (int64_t D : {2, 6, 18, 34, 128}) {
            SCOPED_TRACE(::testing::Message() << dt << " D " << D);
            const int64_t H = 3, skip = 2, rows = (65536 + H * D - 1) / (H * D), S = rows + skip;
            const auto x = at::cat({patterns, patterns.narrow(0, 0, S * H * D - 65536)}).to(dt).view({1, S, H, D});
            at::manual_seed(D);
            const auto angles = at::randn({S - skip, D}) * 3;
            const auto cos = angles.cos(), sin = angles.sin();
            const auto got = kernels::rotary_half(x, cos, sin, skip, kernels::RotaryLayout::kTokenMajor);
            const auto want = reference(x, cos, sin, skip);
            testing::expect_same_bits_nan_aside(got, want, std::string("rotary_half every bf16 pattern, ") + c10::toString(dt) +
                                                                  ", D " + std::to_string(D));
        }
    }
}

TEST(Rotary, RefusesWhatItDoesNotRun) {
    const auto x = at::randn({1, 5, 2, 8});
    const auto t = at::randn({5, 8});
    EXPECT_TRUE(kernels::rotary_half_takes(x, t, t, 0));
    EXPECT_FALSE(kernels::rotary_half_takes(x, t, t, 1));                        // table rows != S - skip
    EXPECT_FALSE(kernels::rotary_half_takes(x.to(at::kDouble), t, t, 0));        // dtype
    EXPECT_FALSE(kernels::rotary_half_takes(x.transpose(2, 3), t.t(), t.t(), 0));  // last dim strided
    EXPECT_FALSE(kernels::rotary_half_takes(x, t.to(at::kBFloat16), t, 0));      // tables not float32
    EXPECT_FALSE(kernels::rotary_half_takes(x.narrow(3, 0, 7), t.narrow(1, 0, 7).contiguous(),
                                            t.narrow(1, 0, 7).contiguous(), 0));  // odd D
    EXPECT_THROW(kernels::rotary_half(x, t, t, 2), std::exception);
}

// Not a pass/fail check: the figures for the record, at the DiT's real heads and 1024x1024
// (10 text tokens, then 4096 image tokens).
TEST(Rotary, TimingAgainstLibTorch) {
    const auto q = at::randn({1, 4106, 32, 128}).to(at::kBFloat16);
    const auto angles = at::randn({4096, 128});
    const auto cos = angles.cos(), sin = angles.sin();
    std::printf("bf16 [1, 4106, 32, 128], %d threads: rotary_half %.1f ms (LibTorch ops %.1f)\n",
                at::get_num_threads(), testing::mean_ms([&] { return kernels::rotary_half(q, cos, sin, 10); }),
                testing::mean_ms([&] { return reference(q, cos, sin, 10); }));
}

// Why the DiT asks for the head-major layout: LibTorch's CPU flash attention gives the same bits
// from either layout and runs faster from contiguous [B, heads, S, D] q and k. Figures for the
// record at the DiT's real heads and 1024x1024; the equality is asserted.
TEST(Rotary, HeadMajorFeedsAttentionTheSameBits) {
    at::manual_seed(3);
    const auto q = at::randn({1, 4106, 32, 128}).to(at::kBFloat16), k = at::randn({1, 4106, 32, 128}).to(at::kBFloat16);
    const auto v = at::randn({1, 4106, 32, 128}).to(at::kBFloat16).transpose(1, 2);
    const auto angles = at::randn({4096, 128});
    const auto cos = angles.cos(), sin = angles.sin();
    auto attend = [&](kernels::RotaryLayout layout) {
        return at::scaled_dot_product_attention(kernels::rotary_half(q, cos, sin, 10, layout).transpose(1, 2),
                                                kernels::rotary_half(k, cos, sin, 10, layout).transpose(1, 2), v);
    };
    EXPECT_TRUE(at::equal(attend(kernels::RotaryLayout::kTokenMajor), attend(kernels::RotaryLayout::kHeadMajor)));
    std::printf("bf16 rotary + SDPA [1, 32, 4106, 128], %d threads: token-major %.1f ms, head-major %.1f ms\n",
                at::get_num_threads(), testing::mean_ms([&] { return attend(kernels::RotaryLayout::kTokenMajor); }, 2),
                testing::mean_ms([&] { return attend(kernels::RotaryLayout::kHeadMajor); }, 2));
}

}  // namespace
}  // namespace glmimage
