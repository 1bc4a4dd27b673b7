// kernels::widen_weight against LibTorch's own conversions, bit for bit: every bf16, int8 and
// e4m3 value through the vector loop and the scalar tail, to float32 (and int8 / e4m3 to bf16),
// with and without the per-row scale; the split across threads; the fallbacks; and the products
// that use it (kernels::widened_linear_into over several blocks; Linear's int8 product of many rows,
// equal to the widened weight's; its fp8 one beside the _scaled_mm it replaces).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <iostream>
#include <string>

#include "kernels/cpu_products.h"
#include "kernels/widen_weight.h"
#include "layers/linear.h"
#include "scaled_mm_support.h"

namespace glmimage {
namespace {

// Bitwise equality, NaN where NaN (e4m3's S.1111.111 carries no payload worth keeping).
void expect_same_values(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
    ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    const auto nan = want.isnan();
    EXPECT_TRUE(at::equal(got.isnan(), nan)) << what;
    const auto bits = got.scalar_type() == at::kFloat ? at::kInt : at::kShort;
    EXPECT_TRUE(at::equal(got.masked_fill(nan, 0).view(bits), want.masked_fill(nan, 0).view(bits))) << what;
}

// [N, K] weights in which every column holds every byte value: K = 40 runs columns 0-31 through
// the sixteen-wide loop and 32-39 through the scalar tail.
at::Tensor every_byte(int64_t K) {
    const auto r = at::arange(256, at::kInt).view({256, 1});
    const auto c = at::arange(K, at::kInt).view({1, K});
    return ((r + c * 7) % 256).to(at::kByte).contiguous();
}

TEST(WidenWeight, EveryValueExactlyAsLibTorchConverts) {
    const int64_t K = 40;
    const auto bytes = every_byte(K);
    const auto scale = at::rand({256}) * 3 + 1e-3;
    for (auto wt : {at::kChar, at::kFloat8_e4m3fn}) {
        const auto w = bytes.view(wt);
        const std::string name = wt == at::kChar ? "int8" : "e4m3";
        expect_same_values(kernels::widen_weight(w, at::kFloat), w.to(at::kFloat), name + " -> float32");
        expect_same_values(kernels::widen_weight(w, at::kBFloat16), w.to(at::kBFloat16), name + " -> bf16");
        expect_same_values(kernels::widen_weight(w, at::kFloat, scale), w.to(at::kFloat) * scale.view({-1, 1}),
                           name + " -> float32, scaled");
    }
    // Every bf16 bit pattern (infinities and NaNs included), 40 to a row.
    const auto patterns = (at::arange(2048 * K, at::kInt) % 65536).to(at::kShort).view({2048, K});
    const auto bf16 = patterns.view(at::kBFloat16);
    expect_same_values(kernels::widen_weight(bf16, at::kFloat), bf16.to(at::kFloat), "bf16 -> float32");
    const auto scale2k = at::rand({2048}) + 0.5;
    expect_same_values(kernels::widen_weight(bf16, at::kFloat, scale2k), bf16.to(at::kFloat) * scale2k.view({-1, 1}),
                       "bf16 -> float32, scaled");
}

TEST(WidenWeight, SameOnOneThreadAndTwoAndOnTheFallback) {
    // 8 MB of float32 out: split in pieces on the OpenMP team and on the pool.
    const auto w = (at::randn({1024, 2048}) * 50).to(at::kFloat8_e4m3fn);
    const auto scale = at::rand({1024});
    const int saved = at::get_num_threads();
    at::set_num_threads(1);
    const auto one = kernels::widen_weight(w, at::kFloat, scale);
    at::set_num_threads(2);
    const auto two = kernels::widen_weight(w, at::kFloat, scale);
    at::set_num_threads(saved);
    EXPECT_TRUE(at::equal(one, two));
    EXPECT_TRUE(at::equal(one, w.to(at::kFloat) * scale.view({-1, 1})));
    // A weight the kernel does not stream (not contiguous) and a dtype it does not write take LibTorch's ops.
    const auto wt = w.t();
    EXPECT_TRUE(at::equal(kernels::widen_weight(wt, at::kFloat), wt.to(at::kFloat)));
    const auto w8 = at::randint(-127, 128, {64, 48}, at::kChar);
    EXPECT_TRUE(at::equal(kernels::widen_weight(w8, at::kHalf), w8.to(at::kHalf)));
}

TEST(WidenWeight, RefusesWhatItDoesNotTake) {
    EXPECT_THROW(kernels::widen_weight(at::randn({4, 16}), at::kFloat), std::exception);  // not quantized
    const auto w8 = at::zeros({4, 16}, at::kChar);
    EXPECT_THROW(kernels::widen_weight(w8.view({64}), at::kFloat), std::exception);           // not 2-D
    EXPECT_THROW(kernels::widen_weight(w8, at::kBFloat16, at::ones({4})), std::exception);    // scaled bf16
    EXPECT_THROW(kernels::widen_weight(w8, at::kFloat, at::ones({5})), std::exception);       // wrong scale size
    EXPECT_THROW(kernels::widen_weight(w8, at::kFloat, at::ones({4}, at::kDouble)), std::exception);
    EXPECT_THROW(kernels::widen_weight(w8, at::kInt), std::exception);                          // not floating
    auto wrong_shape = at::empty({4, 15});
    EXPECT_THROW(kernels::widen_weight_into(w8, wrong_shape), std::exception);
}

// Several blocks of output features through the one buffer (the last one shorter): the same as
// LibTorch's float32 linear on the widened weight, row scale and bias, within float32 rounding.
TEST(WidenWeight, WidenedLinearOverSeveralBlocks) {
    const int64_t K = 4096, N = 2048 + 333;  // 32 MiB of float32 holds 2048 rows of 4096
    const auto x = at::randn({5, K});
    const auto w = (at::randn({N, K}) * 30).to(at::kFloat8_e4m3fn);
    const auto scale = at::rand({N}) / 64, b = at::randn({N});
    auto y = at::empty({5, N});
    kernels::widened_linear_into(x, w, scale, b, y);
    const auto want = at::linear(x, w.to(at::kFloat) * scale.view({-1, 1}), b);
    const double diff = (y - want).abs().max().item<double>(), largest = want.abs().max().item<double>();
    std::cout << "  widened_linear_into, " << N << " rows in two blocks: max abs diff " << diff << " (largest "
              << largest << ")\n";
    EXPECT_LE(diff, largest * 1e-5);
    // into bf16: each float32 result rounded once
    auto y16 = at::empty({5, N}, at::kBFloat16);
    kernels::widened_linear_into(x, w, scale, b, y16);
    EXPECT_TRUE(at::equal(y16, y.to(at::kBFloat16)));
}

// Many rows (prefill, the DiT) widen the quantized weight and run the product choke point.
TEST(WidenWeight, LinearManyRows) {
    const auto opts = at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16);
    const auto x = at::randn({3, 37, 96}).to(at::kBFloat16);
    Linear int8(96, 48, /*bias=*/true, opts);
    int8.replace_parameter("weight", at::randn({48, 96}).to(at::kBFloat16));
    int8.replace_parameter("bias", at::randn({48}).to(at::kBFloat16));
    int8.quantize_int8(at::kBFloat16);
    const auto want = (kernels::linear(x.view({-1, 96}), int8.weight.to(at::kBFloat16)) * int8.weight_scale +
                       int8.bias)
                          .view({3, 37, 48});
    EXPECT_TRUE(at::equal(int8.forward(x), want));
    // float32 inputs: the int8 values widened straight to float32 (kernels::linear takes int8),
    // beside LibTorch's linear on the whole widened weight
    Linear int8f(96, 48, /*bias=*/true, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
    int8f.replace_parameter("weight", at::randn({48, 96}));
    int8f.replace_parameter("bias", at::randn({48}));
    int8f.quantize_int8(at::kFloat);
    const auto xf32 = at::randn({3, 37, 96});
    const auto want32 = at::linear(xf32, int8f.weight.to(at::kFloat)) * int8f.weight_scale + int8f.bias;
    const double diff32 = (int8f.forward(xf32) - want32).abs().max().item<double>();
    std::cout << "  int8 Linear, float32, 111 rows: max abs diff " << diff32 << " against LibTorch's linear\n";
    EXPECT_LE(diff32, want32.abs().max().item<double>() * 1e-5);

    // Where this CPU's products of many rows take LibTorch's _scaled_mm (oneDNN's fp8 kernels, on
    // AMX) and this LibTorch's takes no per-row scales (2.11's), the load refuses fp8 (the same probe).
    if (const std::string refused = Linear::fp8_unsupported_reason(at::kCPU); !refused.empty()) {
        std::cout << "  fp8 Linear, 111 rows: the load refuses fp8 here: " << refused << "\n";
        return;
    }
    Linear fp8(96, 48, /*bias=*/false, opts);
    fp8.replace_parameter("weight", at::randn({48, 96}).to(at::kBFloat16));
    ASSERT_TRUE(fp8.quantize_fp8(at::kBFloat16));
    const auto got = fp8.forward(x).view({-1, 48});
    const auto xf = x.view({-1, 96}).to(at::kFloat);
    const auto x_scale = xf.abs().amax({1}, true).clamp_min(1e-12) / 448.0;
    const auto xq = (xf / x_scale).to(at::kFloat8_e4m3fn);
    if (const std::string no = test::cpu_scaled_mm_per_row_unavailable(); !no.empty()) {
        std::cout << "  fp8 Linear, 111 rows: no _scaled_mm to compare with here: " << no << "\n";
        return;
    }
    const auto theirs = at::_scaled_mm(xq, fp8.weight.t(), x_scale, fp8.weight_scale, std::nullopt, std::nullopt,
                                       at::kBFloat16, false);
    // The same quantized operands, widened and scaled as _scaled_mm's CPU emulation does, in a
    // float32 product of another layout: within one bf16 step of the largest output.
    const double diff = (got.to(at::kDouble) - theirs.to(at::kDouble)).abs().max().item<double>();
    const double largest = theirs.abs().max().item<double>();
    std::cout << "  fp8 Linear, 111 rows: max abs diff " << diff << " against _scaled_mm (largest output " << largest
              << ")\n";
    EXPECT_LE(diff, largest / 256);
}

}  // namespace
}  // namespace glmimage
