// kernels::layer_norm against LibTorch's at::layer_norm without weight and bias: bit for bit on rows
// of many widths and scales, special values and the DiT's shapes; where its loop runs and where it
// leaves the op to LibTorch; the probe, which must tell a LibTorch kernel that rounds otherwise
// (ctest runs this file a second time with ATEN_CPU_CAPABILITY=default: LibTorch's generic kernel,
// whose multiply-adds round twice).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <ATen/Version.h>

#include <cmath>
#include <cstdio>
#include <tuple>
#include <limits>
#include <string>
#include <vector>

#include "kernels/fused_switch.h"
#include "kernels/layer_norm.h"
#include "kernels/x86_weight_loads.h"
#include "mean_ms.h"
#include "same_bits.h"

namespace glmimage {
namespace {

constexpr double kEps = 1e-5;

at::Tensor reference(const at::Tensor& x) { return at::layer_norm(x, {x.size(-1)}, {}, {}, kEps); }

using testing::same_bits;

using testing::max_abs_diff_finite;

// Where the loop must run: an x86-64 CPU with AVX2 and FMA whose LibTorch runs the AVX2 build of
// its layer norm (capability AVX2, or AVX512, under which torch 2.13 runs it too).
bool loop_expected() {
#ifdef GLMI_X86_WEIGHT_LOADS
    return kernels::weight_loads::cpu_has_avx2_fma_f16c() &&
           (at::get_cpu_capability() == "AVX2" || at::get_cpu_capability() == "AVX512");
#else
    return false;
#endif
}

// Rows of varied offset and spread: [rows, n].
at::Tensor varied_rows(int64_t rows, int64_t n) {
    return at::randn({rows, n}) * (at::rand({rows, 1}) * 10) + at::randn({rows, 1}) * 3;
}

TEST(LayerNorm, RunsWhereLibTorchRunsItsAvx2Kernels) {
    const auto x = at::randn({4, 64});
    std::printf("LibTorch CPU capability %s: the loop %s\n", at::get_cpu_capability().c_str(),
                kernels::layer_norm_by_kernel(x) ? "runs" : "does not run");
    EXPECT_EQ(kernels::layer_norm_by_kernel(x), loop_expected());
}

TEST(LayerNorm, TheProbeTellsLibTorchsKernel) {
    // With LibTorch's AVX2 kernel (under capability AVX2 or AVX512) the probe must find its bits;
    // with its generic one (ctest's second run) the products round before their sums there, and
    // the probe must see it.
    const bool has_fma =
#ifdef GLMI_X86_WEIGHT_LOADS
        kernels::weight_loads::cpu_has_avx2_fma_f16c();
#else
        false;
#endif
    const auto capability = at::get_cpu_capability();
    const bool matches = kernels::detail::layer_norm_loop_matches_libtorch();
    std::printf("capability %s: the probe %s\n", capability.c_str(), matches ? "matches" : "does not match");
    if ((capability == "AVX2" || capability == "AVX512") && has_fma) {
        EXPECT_TRUE(matches);
    }
    if (capability == "DEFAULT") {
        EXPECT_FALSE(matches);
    }
}

TEST(LayerNorm, RowsEqualLibTorchBitForBit) {
    at::manual_seed(11);
    for (int64_t n : {8, 16, 24, 64, 128, 136, 512, 1536, 2048, 4096, 13696, 16392}) {
        SCOPED_TRACE(::testing::Message() << "width " << n);
        const int64_t rows = std::max<int64_t>(64, 400000 / n);
        for (double scale : {1.0, 1e-20, 1e20}) {
            const auto x = varied_rows(rows, n) * scale;
            const auto got = kernels::layer_norm(x, kEps), want = reference(x);
            if (scale == 1.0) std::printf("width %ld, %ld rows: max abs diff %g\n", static_cast<long>(n),
                                          static_cast<long>(rows), max_abs_diff_finite(got, want));
            EXPECT_TRUE(same_bits(got, want)) << "scale " << scale;
        }
    }
}

TEST(LayerNorm, SpecialRowsEqualLibTorch) {
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    const float denormal = std::numeric_limits<float>::denorm_min();
    for (int64_t n : {8, 64, 512}) {
        SCOPED_TRACE(::testing::Message() << "width " << n);
        auto x = at::zeros({10, n});
        x[1].fill_(3.5);                                    // constant: variance 0, rstd 1 / sqrt(eps)
        x[2].normal_().mul_(1e-3).add_(1e4);                // a small spread far from 0
        x[3].normal_(), x[3][n / 2] = inf;                  // inf and NaN propagate as LibTorch's
        x[4].normal_(), x[4][0] = nan;
        x[5].fill_(denormal), x[5][0] = -denormal;          // subnormals
        x[6][0] = 100, x[6][1] = -100, x[6][2] = -denormal;  // a product that underflows: LibTorch's sign
        x[7].normal_().mul_(3e38);                          // the sums overflow
        x[0].normal_().add_(0.5).mul_(1e20);                // the variance overflows: rstd 0
        x[8].uniform_(-1, 1).sign_();                       // +-1: means and deviations exact
        x[9].normal_();
        // NaN where LibTorch's is, every other value bit for bit. Not the NaNs' sign: which of two
        // NaN operands an x86 operation passes on is the compiler's choice of operand order (an
        // ASan build at -O2 gave each NaN row here the other sign than the Release build, whose
        // NaNs matched LibTorch's), and NaN signs carry nothing.
        testing::expect_same_bits_nan_aside(kernels::layer_norm(x, kEps), reference(x),
                                            "layer_norm special rows, width " + std::to_string(n));
        testing::expect_same_bits_nan_aside(kernels::layer_norm(x, 1e-6), at::layer_norm(x, {n}, {}, {}, 1e-6),
                                            "layer_norm special rows, eps 1e-6, width " + std::to_string(n));
    }
}

TEST(LayerNorm, DiTShapesEqualLibTorch) {
    // The q/k norms per head ([B, tokens, heads, head_dim]: the small preset's and the real
    // model's), the streams' ([B, tokens, width]), the empty text's one token, no rows at all.
    at::manual_seed(12);
    for (auto shape : {std::vector<int64_t>{1, 281, 8, 64}, {2, 256, 512}, {1, 25, 512}, {1, 1, 512},
                       {1, 1050, 32, 128}, {1, 64, 4096}, {0, 512}}) {
        SCOPED_TRACE(::testing::Message() << at::IntArrayRef(shape));
        const auto x = at::randn(shape) * 2 + 0.5;
        EXPECT_EQ(kernels::layer_norm_by_kernel(x), loop_expected());
        EXPECT_TRUE(same_bits(kernels::layer_norm(x, kEps), reference(x)));
    }
}

TEST(LayerNorm, Bf16RowsEqualLibTorchBitForBit) {
    // LibTorch's mixed-type kernel: moments of the widened values in pairs of float vectors, the
    // normalization in float32, one rounding to bf16. Widths of one vector of 16 up to the DiT's
    // inner width and the real FF's, rows of every scale; the probe finds the same.
    const bool expected = loop_expected();
    const std::string probe = kernels::detail::layer_norm_bf16_probe();
    std::printf("capability %s: the bf16 probe finds %s\n", at::get_cpu_capability().c_str(), probe.c_str());
    EXPECT_EQ(probe != "none", expected);
    at::manual_seed(14);
    for (int64_t n : {16, 32, 48, 64, 128, 256, 272, 512, 2048, 4096, 13696}) {
        SCOPED_TRACE(::testing::Message() << "bf16 width " << n);
        const int64_t rows = std::max<int64_t>(64, 400000 / n);
        for (double scale : {1.0, 1e-20, 1e20}) {
            const auto x = (varied_rows(rows, n) * scale).to(at::kBFloat16);
            EXPECT_EQ(kernels::layer_norm_by_kernel(x), expected);
            const auto got = kernels::layer_norm(x, kEps), want = reference(x);
            if (scale == 1.0) std::printf("bf16 width %ld, %ld rows: max abs diff %g\n", static_cast<long>(n),
                                          static_cast<long>(rows), max_abs_diff_finite(got, want));
            EXPECT_TRUE(same_bits(got, want)) << "scale " << scale;
        }
    }
    auto special = at::randn({6, 64});
    special[1].fill_(3.5), special[2].normal_().mul_(1e-2).add_(1e3), special[3][5] = INFINITY;
    special[4][0] = NAN, special[5].uniform_(-1, 1).sign_();
    testing::expect_same_bits_nan_aside(kernels::layer_norm(special.to(at::kBFloat16), kEps),
                                        reference(special.to(at::kBFloat16)), "layer_norm bf16 special rows");
}

TEST(LayerNorm, StridedViewsAsTheDiTPassesThem) {
    // The DiT's per-head q/k norms read [B, tokens, heads, head_dim] views of the fused q/k/v
    // product's [rows, 3 x inner] rows: the loop walks them in place, the same bits as LibTorch on
    // the view (which copies it first); its output is contiguous.
    at::manual_seed(15);
    for (auto dt : {at::kFloat, at::kBFloat16}) {
        SCOPED_TRACE(c10::toString(dt));
        for (auto [tokens, heads, d] : {std::tuple<int64_t, int64_t, int64_t>{281, 8, 64}, {37, 4, 128}}) {
            const auto qkv = (at::randn({2 * tokens, 3 * heads * d}) * 3 + 1).to(dt);
            const auto k = qkv.narrow(1, heads * d, heads * d).view({2, tokens, heads, d});
            ASSERT_FALSE(k.is_contiguous());
            EXPECT_EQ(kernels::layer_norm_by_kernel(k), loop_expected());
            const auto got = kernels::layer_norm(k, kEps);
            EXPECT_TRUE(got.is_contiguous());
            EXPECT_TRUE(same_bits(got, reference(k)));
            std::printf("%s strided [2, %ld, %ld, %ld]: max abs diff %g\n", c10::toString(dt), static_cast<long>(tokens),
                        static_cast<long>(heads), static_cast<long>(d), max_abs_diff_finite(got, reference(k)));
        }
        const auto t = at::randn({64, 6}).to(dt).t();  // rows not contiguous: LibTorch's op
        EXPECT_FALSE(kernels::layer_norm_by_kernel(t));
        EXPECT_TRUE(same_bits(kernels::layer_norm(t, kEps), reference(t)));
    }
}

TEST(LayerNorm, LeavesTheRestToLibTorch) {
    at::manual_seed(13);
    const auto x = at::randn({6, 64});
    std::vector<at::Tensor> others = {x.narrow(1, 0, 40).to(at::kBFloat16), x.to(at::kDouble), x.to(at::kHalf),
                                      x.t(), at::randn({6, 12}), at::randn({6, 0}), at::randn({1, 1, 1, 1, 1, 64})};
    for (const auto& t : others) {
        SCOPED_TRACE(::testing::Message() << t.scalar_type() << " " << t.sizes() << (t.is_contiguous() ? "" : " strided"));
        EXPECT_FALSE(kernels::layer_norm_by_kernel(t));
        EXPECT_TRUE(at::equal(kernels::layer_norm(t, kEps), reference(t)));
    }
    kernels::set_fused_kernels_enabled(false);
    EXPECT_FALSE(kernels::layer_norm_by_kernel(x));
    EXPECT_TRUE(same_bits(kernels::layer_norm(x, kEps), reference(x)));
    kernels::set_fused_kernels_enabled(true);
}

TEST(LayerNorm, TimingAgainstLibTorch) {
    for (auto dt : {at::kFloat, at::kBFloat16})
        for (auto shape : {std::vector<int64_t>{1, 281, 8, 64}, {2, 256, 512}, {1, 1050, 32, 128}}) {
            const auto x = at::randn(shape).to(dt);
            std::printf("%s %s, %d threads: layer_norm %.3f ms (LibTorch's %.3f)\n",
                        c10::str(at::IntArrayRef(shape)).c_str(), c10::toString(dt), at::get_num_threads(),
                        testing::mean_ms([&] { return kernels::layer_norm(x, kEps); }, 50),
                        testing::mean_ms([&] { return reference(x); }, 50));
        }
    // The DiT's per-head k norm: a [1, 281, 8, 64] view of the fused q/k/v product's rows.
    for (auto dt : {at::kFloat, at::kBFloat16}) {
        const auto k = at::randn({281, 3 * 512}).to(dt).narrow(1, 512, 512).view({1, 281, 8, 64});
        std::printf("[1, 281, 8, 64] view of [281, 1536] %s, %d threads: layer_norm %.3f ms (LibTorch's %.3f)\n",
                    c10::toString(dt), at::get_num_threads(),
                    testing::mean_ms([&] { return kernels::layer_norm(k, kEps); }, 50),
                    testing::mean_ms([&] { return reference(k); }, 50));
    }
}

}  // namespace
}  // namespace glmimage
