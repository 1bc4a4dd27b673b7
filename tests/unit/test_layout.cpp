// kernels::to_channels_last / to_channels_first against LibTorch's own layout copies: the same
// values and strides, for every element size, shapes with and without partial tiles, batches,
// inputs already in the target layout, non-contiguous inputs; and Conv2d on bf16 channels-last
// input against LibTorch's NCHW convolution (the bits the layer relies on).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cstdio>

#include "kernels/layout.h"
#include "layers/conv2d.h"
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
// NCHW either way: its result must be LibTorch's NCHW convolution's, bit for bit.
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
            const auto want = at::conv2d(x, conv.weight, conv.bias, {c.stride, c.stride}, {c.pad, c.pad});
            std::printf("Conv2d %s %lld->%lld k%lld s%lld: max abs diff %g\n", c10::toString(dt),
                        static_cast<long long>(c.in), static_cast<long long>(c.out), static_cast<long long>(c.k),
                        static_cast<long long>(c.stride),
                        (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>());
            EXPECT_TRUE(at::equal(got, want));
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
