// kernels::row_sums / libtorch_row_sum against LibTorch's x.sum(-1): the lane width the probe finds,
// bit for bit over every width to 300 and the decoder's widths at several scales, sums of squares
// computed on the fly against pow(2).sum(-1), special values, and where LibTorch's op is kept.
// ctest runs this file a second time with ATEN_CPU_CAPABILITY=default (LibTorch's generic kernels,
// whose float vectors also have 8 lanes).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <vector>

#include "kernels/fused_math_cpu.h"
#include "kernels/row_sum.h"
#include "mean_ms.h"
#include "same_bits.h"

namespace glmimage {
namespace {

using testing::same_bits;

// [rows, n] of varied magnitude within and between rows: the order of additions shows in most sums.
at::Tensor varied_rows(int64_t rows, int64_t n, double scale) {
    return at::randn({rows, n}) * at::exp(at::randn({rows, n}) * 2) * scale + at::randn({rows, 1}) * scale;
}

// The lane widths LibTorch's float32 sum may run with here; empty where not known.
std::vector<int> expected_lanes() {
    const auto capability = at::get_cpu_capability();
    // Under AVX512 LibTorch runs a kernel's AVX2 build unless the kernel registers an AVX-512 one:
    // its sum ran with 8 lanes on a 2-core Xeon (torch 2.13); either width is its own.
    if (capability == "AVX512") return {8, 16};
#if defined(__x86_64__)
    if (capability == "AVX2" || capability == "DEFAULT") return {8};
#endif
    return {};  // not known here: the test only prints what the probe found
}

TEST(RowSum, TheProbeFindsLibTorchsLaneWidth) {
    const int lanes = kernels::detail::libtorch_sum_lanes();
    std::printf("LibTorch CPU capability %s: the probe found %d lanes\n", at::get_cpu_capability().c_str(), lanes);
    const auto expected = expected_lanes();
    if (!expected.empty()) {
        EXPECT_NE(std::find(expected.begin(), expected.end(), lanes), expected.end()) << lanes << " lanes";
    }
}

TEST(RowSum, RowsEqualLibTorchBitForBit) {
    if (kernels::detail::libtorch_sum_lanes() == 0) GTEST_SKIP() << "the probe found no lane width here";
    at::manual_seed(0);
    for (double scale : {1e-3, 1.0, 1e4}) {
        for (int64_t n = 1; n <= 300; ++n) {
            const auto x = varied_rows(5, n, scale);
            ASSERT_TRUE(same_bits(kernels::row_sums(x), x.sum(-1))) << "n " << n << " scale " << scale;
        }
        for (int64_t n : {511, 512, 513, 1024, 1536, 2048, 4095, 4096, 4097, 8192, 13696, 16385, 32767}) {
            const auto x = varied_rows(3, n, scale);
            const auto got = kernels::row_sums(x), want = x.sum(-1);
            ASSERT_TRUE(same_bits(got, want))
                << "n " << n << " scale " << scale << ": max abs diff "
                << (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
        }
    }
    // The decoder's shapes: one token and a prefill, [batch, tokens, hidden].
    for (const auto& shape : {std::vector<int64_t>{1, 1, 512}, {2, 33, 512}, {1, 1, 4096}, {1, 33, 4096}}) {
        const auto x = at::randn(shape) * 3;
        EXPECT_TRUE(same_bits(kernels::row_sums(x), x.sum(-1))) << x.sizes();
    }
}

TEST(RowSum, SquaresOnTheFlyEqualPowSum) {
    // The RMSNorm's use: the squares of bf16 or float values, summed without being stored.
    if (kernels::detail::libtorch_sum_lanes() == 0) GTEST_SKIP() << "the probe found no lane width here";
    at::manual_seed(1);
    for (int64_t n : {64, 512, 1536, 4096}) {
        const auto x = varied_rows(4, n, 2.0);
        for (const auto dtype : {at::kFloat, at::kBFloat16}) {
            const auto xd = x.to(dtype).contiguous();
            const auto want = xd.to(at::kFloat).pow(2).sum(-1);
            for (int64_t row = 0; row < 4; ++row) {
                float got = 0;
                if (dtype == at::kFloat) {
                    const float* p = xd.const_data_ptr<float>() + row * n;
                    got = kernels::libtorch_row_sum([p](int64_t k) { return kernels::fused::square(p[k]); }, n);
                } else {
                    const auto* p = reinterpret_cast<const kernels::fused::bf16_t*>(xd.const_data_ptr()) + row * n;
                    got = kernels::libtorch_row_sum([p](int64_t k) { return kernels::fused::square(p[k]); }, n);
                }
                const float w = want[row].item<float>();
                EXPECT_EQ(std::memcmp(&got, &w, sizeof(float)), 0)
                    << "n " << n << " " << dtype << " row " << row << ": " << got << " against " << w;
            }
        }
    }
}

TEST(RowSum, SpecialValues) {
    if (kernels::detail::libtorch_sum_lanes() == 0) GTEST_SKIP() << "the probe found no lane width here";
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    auto x = at::randn({6, 100});
    x[0].fill_(-0.0f);                        // a sum of negative zeros is +0 (the output starts at zero)
    x[1][37] = inf;                           // inf
    x[2][3] = inf, x[2][90] = -inf;           // NaN
    x[3][50] = nan;                           // NaN
    x[4].fill_(std::numeric_limits<float>::max());  // overflows to inf
    x[5].fill_(std::numeric_limits<float>::denorm_min());
    const auto got = kernels::row_sums(x), want = x.sum(-1);
    for (int64_t row = 0; row < 6; ++row) {
        const float g = got[row].item<float>(), w = want[row].item<float>();
        if (std::isnan(w)) {
            EXPECT_TRUE(std::isnan(g)) << "row " << row;  // which NaN payload is LibTorch's compiler's choice
        } else {
            EXPECT_EQ(std::memcmp(&g, &w, sizeof(float)), 0) << "row " << row << ": " << g << " against " << w;
        }
    }
}

TEST(RowSum, KeepsLibTorchsOpElsewhere) {
    EXPECT_FALSE(kernels::row_sum_matches_libtorch(0));
    EXPECT_FALSE(kernels::row_sum_matches_libtorch(32768));  // LibTorch splits such a row between threads
    const bool found = kernels::detail::libtorch_sum_lanes() != 0;
    EXPECT_EQ(kernels::row_sum_matches_libtorch(1), found);
    EXPECT_EQ(kernels::row_sum_matches_libtorch(32767), found);
    // Each below takes LibTorch's op: a loop that read them as contiguous float32 rows would give
    // other values or throw.
    const auto d = at::randn({3, 40}, at::kDouble);
    EXPECT_TRUE(at::equal(kernels::row_sums(d), d.sum(-1)));
    const auto strided = at::randn({40, 3}).t();
    EXPECT_TRUE(same_bits(kernels::row_sums(strided), strided.sum(-1)));
    const auto empty = at::randn({3, 0});
    EXPECT_TRUE(at::equal(kernels::row_sums(empty), empty.sum(-1)));
    const auto single = at::randn({1, 40000});
    EXPECT_TRUE(same_bits(kernels::row_sums(single), single.sum(-1)));
}

TEST(RowSum, TimingAgainstLibTorch) {
    for (const auto& shape : {std::vector<int64_t>{1, 1, 512}, {1, 1, 4096}, {1, 33, 4096}}) {
        const auto x = at::randn(shape);
        const double ours = testing::mean_ms([&] { (void)kernels::row_sums(x); }, 200);
        const double theirs = testing::mean_ms([&] { (void)x.sum(-1); }, 200);
        std::printf("row sums of [%lld, %lld, %lld], %d threads: %.4f ms, x.sum(-1) %.4f ms\n",
                    static_cast<long long>(shape[0]), static_cast<long long>(shape[1]),
                    static_cast<long long>(shape[2]), at::get_num_threads(), ours, theirs);
    }
}

}  // namespace
}  // namespace glmimage
