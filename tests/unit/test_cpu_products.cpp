// kernels::linear, kernels::einsum and kernels::conv2d, the CPU's product choke point: on a CPU
// where LibTorch has oneDNN bf16 kernels, LibTorch's own bf16 call, bit for bit; where it has none,
// the float32 product of the widened values rounded once (the weight widened in blocks of output
// features, which must not change a bit), and within one bf16 step of LibTorch's bf16 call (its
// loops accumulate in float32 in another order). float32 is LibTorch's call everywhere. Prints each max abs diff.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cstdio>

#include "kernels/cpu_products.h"

namespace glmimage {
namespace {

// max |got - want| / max |want| in float64: at most one bf16 step (2^-8 relative) of the largest value.
double relative_diff(const at::Tensor& got, const at::Tensor& want) {
    const auto g = got.to(at::kDouble), w = want.to(at::kDouble);
    return (g - w).abs().max().item<double>() / w.abs().max().item<double>();
}

void expect_rule(const char* what, const at::Tensor& got, const at::Tensor& libtorch_bf16,
                 const at::Tensor& widened_then_rounded) {
    const bool in_float32 = kernels::cpu_bf16_products_in_float32();
    std::printf("%s bf16 (%s): max abs diff %g against LibTorch's bf16 call, %g against the widened call\n", what,
                in_float32 ? "computed in float32 here" : "LibTorch's bf16 kernels here",
                (got.to(at::kDouble) - libtorch_bf16.to(at::kDouble)).abs().max().item<double>(),
                (got.to(at::kDouble) - widened_then_rounded.to(at::kDouble)).abs().max().item<double>());
    EXPECT_EQ(got.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(got, in_float32 ? widened_then_rounded : libtorch_bf16));
    EXPECT_LE(relative_diff(got, libtorch_bf16), 1.0 / 256);
}

TEST(CpuProducts, ComputeDtypeFollowsTheRule) {
    const bool in_float32 = kernels::cpu_bf16_products_in_float32();
    EXPECT_EQ(kernels::product_compute_dtype(at::zeros({2}, at::kBFloat16)), in_float32 ? at::kFloat : at::kBFloat16);
    EXPECT_EQ(kernels::product_compute_dtype(at::zeros({2}, at::kFloat)), at::kFloat);
    EXPECT_EQ(kernels::product_compute_dtype(at::zeros({2}, at::kHalf)), at::kHalf);
}

TEST(CpuProducts, RowBitsRuleHoldsWideAndAtItsThreshold) {
    // products_keep_row_bits probes a few shapes once per thread count and computing dtype; the
    // claim it stands for, on this CPU with that many threads: rows of kRowBitsMinRows and more
    // computed alone equal the same rows at either end of a longer call, at the DiT's widths and
    // the real model's, in float32 and in bf16 where LibTorch's bf16 kernels compute it (where bf16
    // is computed in float32, its answer is float32's). Where the probe says no, the rule's users
    // keep the reference's row counts, and nothing is claimed (the cases that part are counted, for
    // the log).
    const int threads = at::get_num_threads();
    const bool in_float32 = kernels::cpu_bf16_products_in_float32();
    for (int t : {1, threads}) {
        if (t == threads && threads == 1) break;  // checked already
        at::set_num_threads(t);
        const bool keep_float32 = kernels::products_keep_row_bits(at::kCPU, at::kFloat);
        const bool keep_bf16 = kernels::products_keep_row_bits(at::kCPU, at::kBFloat16);
        if (in_float32) {
            EXPECT_EQ(keep_bf16, keep_float32);
        }
        EXPECT_FALSE(kernels::products_keep_row_bits(at::kCPU, at::kHalf));
        EXPECT_FALSE(kernels::products_keep_row_bits(at::Device(at::kCUDA, 0), at::kFloat));
        for (auto dtype : {at::kFloat, at::kBFloat16}) {
            if (dtype == at::kBFloat16 && in_float32) break;  // float32's products, checked above
            const bool keep = dtype == at::kFloat ? keep_float32 : keep_bf16;
            at::manual_seed(5);
            int checked = 0, parted = 0;
            for (auto [k, n] : {std::pair<int64_t, int64_t>{512, 2048}, {2048, 512}, {64, 512}, {4096, 4096}})
                for (int64_t m : {int64_t{12}, int64_t{13}, int64_t{16}, int64_t{25}, int64_t{31}, int64_t{64},
                                  int64_t{257}}) {
                    SCOPED_TRACE(::testing::Message() << t << " threads, " << dtype << ", k " << k << " n " << n
                                                      << " m " << m);
                    const auto w = at::randn({n, k}).to(dtype), b = at::randn({n}).to(dtype),
                               x = at::randn({m + 300, k}).to(dtype);
                    const auto all = at::linear(x, w, b);
                    for (int64_t first : {int64_t{0}, int64_t{300}}) {
                        const bool same = at::equal(at::linear(x.narrow(0, first, m).contiguous(), w, b),
                                                    all.narrow(0, first, m));
                        if (keep) {
                            EXPECT_TRUE(same);
                        }
                        parted += !same;
                        ++checked;
                    }
                }
            std::printf("%d threads: %s products keep a row's bits from %lld rows here: %s; rows alone against "
                        "rows in a longer call: %d of %d cases parted\n",
                        t, c10::toString(dtype), static_cast<long long>(kernels::kRowBitsMinRows),
                        keep ? "yes" : "no", parted, checked);
        }
    }
    at::set_num_threads(threads);
}

TEST(CpuProducts, LinearFollowsTheRule) {
    struct Case {
        int64_t rows, in, out;
        bool bias;
    };
    // The last one's weight is 1.2x the 32 MiB widened at once: two blocks of output features.
    for (const Case& c : {Case{7, 64, 40, true}, Case{300, 512, 2048, true}, Case{33, 96, 50, false},
                          Case{16, 1024, 9830, true}}) {
        SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.in << " -> " << c.out << " bias " << c.bias);
        at::manual_seed(c.rows * 7 + c.out);
        const auto x = at::randn({1, c.rows, c.in}).to(at::kBFloat16);
        const auto w = (at::randn({c.out, c.in}) / 16).to(at::kBFloat16);
        const at::Tensor b = c.bias ? at::randn({c.out}).to(at::kBFloat16) : at::Tensor();
        const auto got = kernels::linear(x, w, b);
        EXPECT_EQ(got.sizes(), (std::vector<int64_t>{1, c.rows, c.out}));
        const auto widened =
            at::linear(x.to(at::kFloat), w.to(at::kFloat), c.bias ? b.to(at::kFloat) : at::Tensor()).to(at::kBFloat16);
        expect_rule("linear", got, at::linear(x, w, b), widened);
        const auto xf = x.to(at::kFloat), wf = w.to(at::kFloat);
        EXPECT_TRUE(at::equal(kernels::linear(xf, wf, c.bias ? b.to(at::kFloat) : at::Tensor()),
                              at::linear(xf, wf, c.bias ? b.to(at::kFloat) : at::Tensor())));
    }
}

TEST(CpuProducts, EinsumFollowsTheRule) {
    // The vision quantizer's distance product: rows of features against a transposed codebook.
    at::manual_seed(5);
    const auto z = at::randn({37, 96}).to(at::kBFloat16);
    const auto codes = at::randn({300, 96}).to(at::kBFloat16);
    const auto got = kernels::einsum("bd,dn->bn", {z, codes.transpose(0, 1)});
    EXPECT_EQ(got.sizes(), (std::vector<int64_t>{37, 300}));
    const auto widened =
        at::einsum("bd,dn->bn", {z.to(at::kFloat), codes.transpose(0, 1).to(at::kFloat)}).to(at::kBFloat16);
    expect_rule("einsum", got, at::einsum("bd,dn->bn", {z, codes.transpose(0, 1)}), widened);
    const auto zf = z.to(at::kFloat), cf = codes.to(at::kFloat).transpose(0, 1);
    EXPECT_TRUE(at::equal(kernels::einsum("bd,dn->bn", {zf, cf}), at::einsum("bd,dn->bn", {zf, cf})));
}

TEST(CpuProducts, Conv2dFollowsTheRule) {
    struct Case {
        int64_t in, out, k, stride, pad, hw;
        bool channels_last;
    };
    for (const Case& c : {Case{16, 32, 3, 1, 1, 20, false}, Case{32, 8, 1, 1, 0, 17, false},
                          Case{8, 16, 3, 2, 0, 25, false}, Case{16, 16, 3, 1, 1, 12, true}}) {
        SCOPED_TRACE(::testing::Message() << c.in << "->" << c.out << " k" << c.k << " s" << c.stride
                                          << (c.channels_last ? " NHWC" : ""));
        at::manual_seed(c.in * 31 + c.out);
        auto x = at::randn({2, c.in, c.hw, c.hw}).to(at::kBFloat16);
        if (c.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        const auto w = (at::randn({c.out, c.in, c.k, c.k}) * 0.1).to(at::kBFloat16);
        const auto b = at::randn({c.out}).to(at::kBFloat16);
        const std::vector<int64_t> stride{c.stride, c.stride}, pad{c.pad, c.pad};
        const auto got = kernels::conv2d(x, w, b, c.stride, pad);
        const auto widened = at::conv2d(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat), stride, pad);
        expect_rule("conv2d", got, at::conv2d(x, w, b, stride, pad), widened.to(at::kBFloat16));
        EXPECT_TRUE(at::equal(kernels::conv2d(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat), c.stride, pad),
                              widened));
    }
}

}  // namespace
}  // namespace glmimage
