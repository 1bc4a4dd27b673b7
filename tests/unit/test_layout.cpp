// kernels::to_channels_last / to_channels_first against LibTorch's own layout copies: the same
// values and strides, for every element size, shapes with and without partial tiles, batches,
// inputs already in the target layout, non-contiguous inputs; and Conv2d on bf16 channels-last
// input against the NCHW convolution (the bits the layer relies on), and in bands of rows against
// the whole convolution, each as kernels::conv2d computes it (LibTorch's call, in float32 for bf16
// on a CPU without bf16 kernels); the convolution and GroupNorm in place on a handed-over input.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cstdio>
#include <functional>
#include <string>
#include <utility>

#include "core/cpu_block_cache.h"
#include "kernels/cpu_products.h"
#include "kernels/layout.h"
#include "layers/conv2d.h"
#include "layers/norms.h"
#include "mean_ms.h"

namespace glmimage {
namespace {

at::Tensor sample(at::IntArrayRef sizes, at::ScalarType dt) {
    int64_t n = 1;
    for (auto s : sizes) n *= s;
    const auto ramp = at::arange(n, at::kLong).view(sizes);
    return at::isFloatingType(dt) ? at::sin(ramp.to(at::kDouble) * 0.37).to(dt) : (ramp % 251).to(dt);
}

void expect_same(const at::Tensor& got, const at::Tensor& want, at::MemoryFormat fmt) {
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_EQ(got.scalar_type(), want.scalar_type());
    EXPECT_TRUE(got.is_contiguous(fmt));
    EXPECT_TRUE(at::equal(got, want));
}

TEST(Layout, MatchesLibTorchCopies) {
    const std::vector<std::vector<int64_t>> shapes = {
        {1, 512, 16, 16}, {2, 33, 7, 9}, {1, 3, 64, 65}, {3, 128, 1, 40}, {1, 16, 32, 32}, {1, 1, 5, 5}};
    for (auto dt : {at::kBFloat16, at::kHalf, at::kFloat, at::kDouble, at::kByte}) {
        for (const auto& s : shapes) {
            SCOPED_TRACE(::testing::Message() << dt << " " << at::IntArrayRef(s));
            const auto x = sample(s, dt);
            const auto cl = kernels::to_channels_last(x);
            expect_same(cl, x.contiguous(at::MemoryFormat::ChannelsLast), at::MemoryFormat::ChannelsLast);
            expect_same(kernels::to_channels_first(cl), x, at::MemoryFormat::Contiguous);
            // Already there: returned as is.
            EXPECT_TRUE(kernels::to_channels_last(cl).is_same(cl));
            EXPECT_TRUE(kernels::to_channels_first(x).is_same(x));
            // Neither layout (a slice of a wider tensor): still the values.
            const auto wide = sample({s[0], s[1] + 2, s[2], s[3]}, dt).narrow(1, 1, s[1]);
            expect_same(kernels::to_channels_last(wide), wide.contiguous(at::MemoryFormat::ChannelsLast),
                        at::MemoryFormat::ChannelsLast);
            expect_same(kernels::to_channels_first(wide.contiguous(at::MemoryFormat::ChannelsLast).narrow(2, 0, 1)),
                        wide.narrow(2, 0, 1).contiguous(), at::MemoryFormat::Contiguous);
        }
    }
}

// The layer takes channels-last input where LibTorch gives the same bits that way, and returns
// NCHW either way: its result must be the NCHW convolution's as kernels::conv2d computes it
// (LibTorch's, in float32 for bf16 on a CPU without bf16 kernels: test_cpu_products.cpp), bit for bit.
TEST(Layout, Conv2dEqualsLibTorchNchw) {
    struct Case {
        int64_t in, out, k, stride, pad, hw;
    };
    for (auto dt : {at::kBFloat16, at::kFloat}) {
        for (const Case& c : {Case{16, 64, 3, 1, 1, 20}, Case{64, 64, 3, 1, 1, 33}, Case{64, 32, 1, 1, 0, 17},
                              Case{32, 3, 3, 1, 1, 24}, Case{32, 32, 3, 2, 0, 25}}) {
            SCOPED_TRACE(::testing::Message() << dt << " " << c.in << "->" << c.out << " k" << c.k << " s" << c.stride);
            Conv2d conv(c.in, c.out, c.k, c.stride, c.pad, at::TensorOptions().device(at::kMeta).dtype(dt));
            at::manual_seed(c.in * 31 + c.out);
            conv.replace_parameter("weight", (at::randn({c.out, c.in, c.k, c.k}) * 0.1).to(dt));
            conv.replace_parameter("bias", at::randn({c.out}).to(dt));
            const auto x = at::randn({2, c.in, c.hw, c.hw}).to(dt);
            const auto got = conv.forward(x);
            EXPECT_TRUE(got.is_contiguous());
            const auto want = kernels::conv2d(x, conv.weight, conv.bias, c.stride, {c.pad, c.pad});
            std::printf("Conv2d %s %lld->%lld k%lld s%lld: max abs diff %g\n", c10::toString(dt),
                        static_cast<long long>(c.in), static_cast<long long>(c.out), static_cast<long long>(c.k),
                        static_cast<long long>(c.stride),
                        (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>());
            EXPECT_TRUE(at::equal(got, want));
        }
    }
}

// run()'s result and the most bytes of the CPU block cache's blocks in use at once while it ran
// (counted from the start of a peak bound; blocks of 1 MiB and more).
std::pair<at::Tensor, size_t> held_at_once(const std::function<at::Tensor()>& run) {
    CpuBlockCacheScope scope;
    CpuBlockCachePeakBound bound;
    const size_t before = cpu_block_cache_stats().in_use_bytes;
    auto y = run();
    return {y, cpu_block_cache_stats().peak_in_use_bytes - before};
}

// What held at once, as shares of x's size, when a layer ran on a copy of x handed over and on one
// its caller kept.
struct HeldShares {
    double handed_over, kept;
};

// forward (a layer's, taking its input by value) run on a copy of x handed over with std::move and
// on one the caller keeps, each copy made inside the count. Checked whichever way it ran: both
// outputs equal `want`; the handed-over copy's memory became the output exactly where `in_place`;
// the kept copy is left unchanged and is not the output. Prints the max abs diff and the shares.
HeldShares run_handed_over_and_kept(const std::string& what, const at::Tensor& x, bool in_place,
                                    const std::function<at::Tensor(at::Tensor)>& forward, const at::Tensor& want) {
    const auto [handed_over, handed_over_bytes] = held_at_once([&] {
        auto input = x.clone();
        const void* memory = input.data_ptr();
        auto y = forward(std::move(input));
        EXPECT_EQ(y.data_ptr() == memory, in_place) << "written into the handed-over input: " << !in_place;
        return y;
    });
    const auto [kept, kept_bytes] = held_at_once([&] {
        const auto input = x.clone();
        auto y = forward(input);
        EXPECT_NE(y.data_ptr(), input.data_ptr()) << "written into an input the caller still holds";
        EXPECT_TRUE(at::equal(input, x)) << "the caller's input was changed";
        return y;
    });
    const double x_bytes = static_cast<double>(x.numel() * x.element_size());
    const HeldShares shares{handed_over_bytes / x_bytes, kept_bytes / x_bytes};
    std::printf("%s handed over (%s): max abs diff %g, held at once %.2f of the input's size (%.2f where the "
                "caller keeps the input)\n",
                what.c_str(), in_place ? "in place" : "not in place on this CPU",
                (handed_over.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>(), shares.handed_over,
                shares.kept);
    EXPECT_TRUE(at::equal(handed_over, want));
    EXPECT_TRUE(at::equal(kept, want));
    return shares;
}

// A convolution whose NCHW input passes 128 MiB runs in bands of output rows where that gives the
// whole's bits: the same values as the whole convolution, holding less at once (counted by the CPU
// block cache: LibTorch's whole call also holds its copy of the input in oneDNN's layout, and in
// float32 the widened input).
TEST(Layout, Conv2dInRowBandsEqualsLibTorchWholeAndHoldsLess) {
    struct Case {
        at::ScalarType dt;
        int64_t out, k, pad, height, width;
    };
    for (const Case& c : {Case{at::kBFloat16, 8, 3, 1, 1031, 2048}, Case{at::kBFloat16, 8, 1, 0, 1024, 2048},
                          Case{at::kFloat, 8, 3, 1, 1024, 1024}}) {
        SCOPED_TRACE(::testing::Message() << c.dt << " k" << c.k << " " << c.height << "x" << c.width);
        const int64_t in = 32;  // 128 MiB of input and more
        Conv2d conv(in, c.out, c.k, 1, c.pad, at::TensorOptions().device(at::kMeta).dtype(c.dt));
        at::manual_seed(c.k * 7 + c.height);
        conv.replace_parameter("weight", (at::randn({c.out, in, c.k, c.k}) * 0.1).to(c.dt));
        conv.replace_parameter("bias", at::randn({c.out}).to(c.dt));
        const auto x = at::randn({1, in, c.height, c.width}).to(c.dt);
        const auto [got, ours] = held_at_once([&] { return conv.forward(x); });
        const auto [want, whole] = held_at_once([&] {
            return kernels::conv2d(x, conv.weight, conv.bias, 1, {c.pad, c.pad});
        });
        const double mib = 1 << 20;
        std::printf("Conv2d %s k%lld %lldx%lld: %s, max abs diff %g, held at once %.0f MiB against %.0f whole\n",
                    c10::toString(c.dt), static_cast<long long>(c.k), static_cast<long long>(c.height),
                    static_cast<long long>(c.width), conv.runs_in_row_bands(x) ? "in row bands" : "whole",
                    (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>(), ours / mib, whole / mib);
        EXPECT_TRUE(got.is_contiguous());
        EXPECT_TRUE(at::equal(got, want));
        if (conv.runs_in_row_bands(x)) EXPECT_LT(ours, whole);
        else EXPECT_LE(ours, whole);
    }
}

// Handed its input (nothing else referencing it), a banded convolution with as many output channels
// as input writes its output into the input's rows: the same values as the whole convolution,
// holding the input and a few bands, where the input kept by the caller costs a second tensor of its
// size. Each run makes its own copy of the input inside the count.
TEST(Layout, Conv2dInRowBandsWritesAHandedOverInputInPlace) {
    for (const auto dt : {at::kBFloat16, at::kFloat}) {
        SCOPED_TRACE(::testing::Message() << dt);
        const int64_t ch = 32, height = dt == at::kFloat ? 1024 : 1031, width = 2048 / (dt == at::kFloat ? 2 : 1);
        Conv2d conv(ch, ch, 3, 1, 1, at::TensorOptions().device(at::kMeta).dtype(dt));
        at::manual_seed(11);
        conv.replace_parameter("weight", (at::randn({ch, ch, 3, 3}) * 0.1).to(dt));
        conv.replace_parameter("bias", at::randn({ch}).to(dt));
        const auto x = at::randn({1, ch, height, width}).to(dt);
        // Where this CPU's bit checks send the convolution another way (NHWC input on a CPU with
        // AMX, or whole), it is not done in place: then only its values are checked.
        const bool banded = conv.runs_in_row_bands(x);
        const auto held = run_handed_over_and_kept(
            std::string("Conv2d ") + c10::toString(dt) + " " + std::to_string(height) + "x" + std::to_string(width), x,
            banded, [&](at::Tensor t) { return conv.forward(std::move(t)); },
            kernels::conv2d(x, conv.weight, conv.bias, 1, {1, 1}));
        if (!banded) continue;
        EXPECT_LT(held.handed_over, 1.4);  // and about four bands of 8 MiB (1/16 of it each here)
        EXPECT_GT(held.kept, 1.9);
    }
}

// A large CPU input handed over to GroupNorm is normalized in place, a few groups at a time: the
// same values as LibTorch's group norm, with no second tensor of the input's size; an input the
// caller keeps, or one under a view that is handed over, is left as it was.
TEST(Layout, GroupNormWorksInPlaceOnAHandedOverInput) {
    for (const auto dt : {at::kBFloat16, at::kFloat}) {
        for (const int64_t batch : {1, 2}) {
            SCOPED_TRACE(::testing::Message() << dt << " batch " << batch);
            const int64_t ch = 64, groups = 32, side = dt == at::kFloat ? 768 : 1024;  // 128 MiB and more
            GroupNorm norm(groups, ch, 1e-6, at::TensorOptions().device(at::kMeta).dtype(dt));
            at::manual_seed(12 + batch);
            norm.replace_parameter("weight", at::randn({ch}).to(dt));
            norm.replace_parameter("bias", at::randn({ch}).to(dt));
            const auto x = (at::randn({batch, ch, side, side}) * 3 + 1).to(dt);
            const auto want = at::group_norm(x, groups, norm.weight, norm.bias, 1e-6);
            // Where this CPU's bit check finds other bits in groups, only the values are checked.
            const bool in_groups = norm.works_in_place_on(x);
            const auto held = run_handed_over_and_kept(
                std::string("GroupNorm ") + c10::toString(dt) + " batch " + std::to_string(batch) + " " +
                    std::to_string(side) + "x" + std::to_string(side),
                x, in_groups, [&](at::Tensor t) { return norm.forward(std::move(t)); }, want);
            // a view handed over (as the VAE's attention hands its group norm) is no sole owner
            const auto input = x.clone();
            const auto through_view = norm.forward(input.view({batch, ch, side * side}));
            EXPECT_TRUE(at::equal(input, x)) << "the input under a handed-over view was changed";
            EXPECT_TRUE(at::equal(through_view.view_as(want), want));
            if (!in_groups) continue;
            EXPECT_LT(held.handed_over, 1.25);
            EXPECT_GT(held.kept, 1.9);
        }
    }
}

// Not a pass/fail check (timings on a shared machine): the figures for the record.
TEST(Layout, TimingAgainstLibTorch) {
    const auto x = sample({1, 512, 256, 256}, at::kBFloat16);
    auto ms = [](auto&& f) { return testing::mean_ms(f, 3); };
    const auto cl = x.contiguous(at::MemoryFormat::ChannelsLast);
    std::printf("bf16 [1, 512, 256, 256], %d threads: to channels-last %.1f ms (LibTorch %.1f), back %.1f ms "
                "(LibTorch %.1f)\n",
                at::get_num_threads(), ms([&] { return kernels::to_channels_last(x); }),
                ms([&] { return x.contiguous(at::MemoryFormat::ChannelsLast); }),
                ms([&] { return kernels::to_channels_first(cl); }), ms([&] { return cl.contiguous(); }));
    std::printf("for scale, a new tensor of that size filled %.1f ms, cloned %.1f ms\n", ms([&] { return at::empty_like(x).fill_(1); }), ms([&] { return x.clone(); }));
}

}  // namespace
}  // namespace glmimage
