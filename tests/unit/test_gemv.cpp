// kernels::gemv against a float64 product of the same (already rounded) inputs, and against
// LibTorch's own linear (for int8 weights its _weight_int8pack_mm): every row count it takes, inner
// sizes with and without a vector tail, output counts that split across threads, with and without
// bias; and what it must refuse.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <string>

#include "kernels/cpu_products.h"
#include "kernels/gemv.h"
#include "layers/linear.h"
#include "scaled_mm_support.h"

namespace glmimage {
namespace {

bool gemv_available() {
    const auto w = at::zeros({8, 32});
    return kernels::gemv_takes(at::zeros({1, 32}), w, {});
}

struct Case {
    int64_t m, n, k;
    bool bias;
};

struct Distance {
    double max_abs;  // max |gemv - float64 product|
    double worst;    // max of |gemv - float64 product| / the bound the arithmetic allows
};

// gemv's y against the float64 product of the same (already rounded) x, w, scale and bias. The
// bound: float32 accumulation over K terms (K * 2^-24 of sum |w x|), one more float32 step for the
// scale, and for a bf16 output half a bf16 step of the result (2^-9 relative; 2^-8 taken).
Distance from_float64(const at::Tensor& got, const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale,
                      const at::Tensor& b) {
    const auto xd = x.to(at::kDouble), wd = w.to(at::kDouble);
    const auto sd = scale.defined() ? scale.to(at::kDouble) : at::ones({w.size(0)}, at::kDouble);
    auto want = at::matmul(xd, wd.t()) * sd;
    auto magnitude = at::matmul(xd.abs(), wd.abs().t()) * sd.abs();
    if (b.defined()) {
        want = want + b.to(at::kDouble);
        magnitude = magnitude + b.to(at::kDouble).abs();
    }
    const double steps = static_cast<double>(x.size(1) + (scale.defined() ? 2 : 1));
    auto bound = magnitude * (steps * std::ldexp(1.0, -24)) + 1e-30;
    if (got.scalar_type() == at::kBFloat16) bound = bound + want.abs() * std::ldexp(1.0, -8);
    const auto err = (got.to(at::kDouble) - want).abs();
    return {err.max().item<double>(), (err / bound).max().item<double>()};
}

void check(at::ScalarType dt, const Case& c) {
    at::manual_seed(c.m * 1000003 + c.n * 101 + c.k);
    const auto x = at::randn({c.m, c.k}).to(dt);
    const auto w = (at::randn({c.n, c.k}) / std::sqrt(static_cast<double>(c.k))).to(dt);
    const at::Tensor b = c.bias ? at::randn({c.n}).to(dt) : at::Tensor();
    ASSERT_TRUE(kernels::gemv_takes(x, w, b));
    const auto got = kernels::gemv(x, w, b);
    ASSERT_EQ(got.scalar_type(), dt);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{c.m, c.n}));
    const auto d = from_float64(got, x, w, {}, b);
    // And beside LibTorch's own product, as the reference computes it.
    const double vs_torch = (got.to(at::kDouble) - at::linear(x, w, b).to(at::kDouble)).abs().max().item<double>();
    std::cout << "  " << (dt == at::kFloat ? "fp32" : "bf16") << " M=" << c.m << " N=" << c.n << " K=" << c.k
              << (c.bias ? " bias" : "") << ": max abs diff " << d.max_abs << " (vs float64), " << vs_torch
              << " (vs at::linear); worst error / bound " << d.worst << "\n";
    EXPECT_LE(d.worst, 1.0);
}

TEST(Gemv, EqualsFloat64ProductWithinRounding) {
    if (!gemv_available()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU (or not x86-64): gemv is not used here";
    const std::vector<Case> cases = {
        {1, 1, 1, false},     {1, 7, 31, true},     {2, 33, 32, false},   {3, 17, 100, true},
        {4, 64, 4096, false}, {1, 1000, 4096, true}, {2, 257, 1040, true}, {4, 300, 13, false},
        {1, 4096, 1024, false},
    };
    for (auto dt : {at::kFloat, at::kBFloat16})
        for (const auto& c : cases) check(dt, c);
}

// Weight-only int8 (Linear::quantize_int8's format): y = (x w8^T) * scale + bias, bounded as above,
// and beside LibTorch's int8 product.
void check_int8(at::ScalarType dt, const Case& c) {
    at::manual_seed(c.m * 7919 + c.n * 13 + c.k);
    const auto x = at::randn({c.m, c.k}).to(dt);
    const auto w8 = at::randint(-127, 128, {c.n, c.k}, at::TensorOptions().dtype(at::kChar));
    const auto scale = (at::rand({c.n}) / (127.0 * std::sqrt(static_cast<double>(c.k)))).to(dt);
    const at::Tensor b = c.bias ? at::randn({c.n}).to(dt) : at::Tensor();
    ASSERT_TRUE(kernels::gemv_takes(x, w8, b, scale));
    const auto got = kernels::gemv(x, w8, b, scale);
    ASSERT_EQ(got.scalar_type(), dt);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{c.m, c.n}));

    const auto d = from_float64(got, x, w8, scale, b);
    std::string vs_torch = "n/a";  // LibTorch's kernel wants inner sizes of multiples of 32 (linear.cpp)
    if (c.k % 32 == 0) {
        auto theirs = at::_weight_int8pack_mm(x, w8, scale);
        if (c.bias) theirs = theirs + b;
        vs_torch = std::to_string((got.to(at::kDouble) - theirs.to(at::kDouble)).abs().max().item<double>());
    }
    std::cout << "  int8 x " << (dt == at::kFloat ? "fp32" : "bf16") << " M=" << c.m << " N=" << c.n << " K=" << c.k
              << (c.bias ? " bias" : "") << ": max abs diff " << d.max_abs << " (vs float64), " << vs_torch
              << " (vs _weight_int8pack_mm); worst error / bound " << d.worst << "\n";
    EXPECT_LE(d.worst, 1.0);
}

TEST(Gemv, Int8WeightsEqualFloat64ProductWithinRounding) {
    if (!gemv_available()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU (or not x86-64): gemv is not used here";
    const std::vector<Case> cases = {
        {1, 7, 31, true}, {2, 33, 32, false}, {3, 17, 100, true}, {4, 64, 4096, false}, {1, 1000, 4096, true},
        {1, 4096, 1024, false},
    };
    for (auto dt : {at::kFloat, at::kBFloat16})
        for (const auto& c : cases) check_int8(dt, c);
}

// fp8 e4m3 weights: every one of the 256 byte values decoded exactly, NaN included, by the vector
// loop and by the scalar tail (weight row r holds byte r in one column, zeros elsewhere, and is read
// with x the unit vector of that column, so y[r] is byte r's value); then products bounded as above.
TEST(Gemv, E4m3WeightsDecodeEveryValueAndMultiply) {
    if (!gemv_available()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU (or not x86-64): gemv is not used here";
    const int64_t K = 40;  // columns 0-31 through the vector loop, 32-39 through the scalar tail
    const auto values = at::arange(256, at::TensorOptions().dtype(at::kByte));
    const auto want = values.view(at::kFloat8_e4m3fn).to(at::kFloat);
    const auto ones = at::ones({256});
    for (int64_t col : {int64_t{0}, K - 1}) {
        auto bytes = at::zeros({256, K}, at::TensorOptions().dtype(at::kByte));
        bytes.select(1, col).copy_(values);
        const auto w8 = bytes.view(at::kFloat8_e4m3fn);
        auto x = at::zeros({1, K});
        x[0][col] = 1.0f;
        ASSERT_TRUE(kernels::gemv_takes(x, w8, {}, ones));
        const auto got = kernels::gemv(x, w8, {}, ones).view({256});
        const auto nan = want.isnan();
        EXPECT_EQ(nan.sum().item<int64_t>(), 2);  // S.1111.111, both signs
        EXPECT_TRUE(at::equal(got.isnan(), nan)) << "column " << col;
        EXPECT_TRUE(at::equal(got.masked_fill(nan, 0), want.masked_fill(nan, 0))) << "column " << col;
    }
    for (const Case& c : {Case{1, 1000, 4096, false}, Case{3, 17, 100, true}, Case{4, 64, 1024, false}}) {
        at::manual_seed(c.m * 31 + c.n);
        const auto x = at::randn({c.m, c.k});
        // within e4m3's range: LibTorch's conversion saturates beyond it from 2.13 on, gave NaN before
        const auto w = (at::randn({c.n, c.k}) * 100).clamp(-448, 448).to(at::kFloat8_e4m3fn);
        const auto scale = at::rand({c.n}) / 448;
        const at::Tensor b = c.bias ? at::randn({c.n}) : at::Tensor();
        const auto got = kernels::gemv(x, w, b, scale);
        const auto d = from_float64(got, x, w, scale, b);
        std::cout << "  e4m3 x fp32 M=" << c.m << " N=" << c.n << " K=" << c.k << (c.bias ? " bias" : "")
                  << ": max abs diff " << d.max_abs << " (vs float64); worst error / bound " << d.worst << "\n";
        EXPECT_LE(d.worst, 1.0);
    }
    // fp8 weights take float32 x and scales only (the caller quantizes x, Linear's fp8_matmul).
    const auto w8 = at::zeros({256, K}).to(at::kFloat8_e4m3fn);
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, K}).to(at::kBFloat16), w8, {}, ones.to(at::kBFloat16)));
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, K}), w8, {}));
}

TEST(Gemv, SameResultOnOneThreadAndTwo) {
    if (!gemv_available()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU";
    const auto x = at::randn({2, 1024}).to(at::kBFloat16);
    const auto w = at::randn({8192, 1024}).to(at::kBFloat16);  // 16 MB: split in two on the OpenMP team and on the pool
    const int saved = at::get_num_threads();
    at::set_num_threads(1);
    const auto one = kernels::gemv(x, w, {});
    at::set_num_threads(2);
    const auto two = kernels::gemv(x, w, {});
    at::set_num_threads(saved);
    // Each output is one thread's sum in a fixed order: the split changes nothing.
    EXPECT_TRUE(at::equal(one, two));
}

TEST(Gemv, RefusesWhatItDoesNotTake) {
    const auto w = at::randn({16, 64});
    EXPECT_FALSE(kernels::gemv_takes(at::randn({kernels::kGemvMaxRows + 1, 64}), w, {}));  // too many rows
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}).to(at::kBFloat16), w, {}));         // mixed dtypes
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}).to(at::kHalf), w.to(at::kHalf), {}));
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 16}), at::randn({64, 16}).t(), {}));      // not contiguous
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 63}), w, {}));                             // wrong inner size
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}), w, at::randn({15})));                // wrong bias
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}), w, at::randn({16}).to(at::kBFloat16)));
    EXPECT_FALSE(kernels::gemv_takes(at::randn({0, 64}), w, {}));
    const auto w8 = at::zeros({16, 64}, at::TensorOptions().dtype(at::kChar));
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}), w8, {}));                           // int8 without scales
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}), w, {}, at::ones({16})));             // scales without int8
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}), w8, {}, at::ones({15})));            // wrong scale size
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}), w8, {}, at::ones({16}).to(at::kBFloat16)));
    EXPECT_FALSE(kernels::gemv_takes(at::randn({1, 64}).to(at::kHalf), w8, {}, at::ones({16}).to(at::kHalf)));
    EXPECT_THROW(kernels::gemv(at::randn({1, 63}), w, {}), std::exception);
}

// Linear takes the kernel only when asked (the AR decode's layers), for any leading shape.
TEST(Gemv, LinearUsesItForFewRows) {
    if (!gemv_available()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU";
    Linear lin(96, 40, /*bias=*/true, at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16));
    lin.replace_parameter("weight", at::randn({40, 96}).to(at::kBFloat16));
    lin.replace_parameter("bias", at::randn({40}).to(at::kBFloat16));
    const auto x = at::randn({1, 1, 96}).to(at::kBFloat16);
    lin.few_rows_gemv = true;
    const auto got = lin.forward(x);
    EXPECT_EQ(got.sizes(), (std::vector<int64_t>{1, 1, 40}));
    EXPECT_TRUE(at::equal(got.view({1, 40}), kernels::gemv(x.view({1, 96}), lin.weight, lin.bias)));
    // Many rows keep the product choke point (LibTorch's matmul, or its float32 one: cpu_products.h).
    const auto xs = at::randn({2, 5, 96}).to(at::kBFloat16);
    EXPECT_TRUE(at::equal(lin.forward(xs), kernels::linear(xs, lin.weight, lin.bias)));
    // Quantized to fp8, a few rows run gemv on x quantized per row as the scaled matmul would be.
    // (sizes of multiples of 16, the fp8 rule)
    Linear fp8(96, 48, /*bias=*/false, at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16));
    fp8.replace_parameter("weight", at::randn({48, 96}).to(at::kBFloat16));
    ASSERT_TRUE(fp8.quantize_fp8(at::kBFloat16));
    fp8.few_rows_gemv = true;
    const auto xf = x.view({1, 96}).to(at::kFloat);
    const auto x_scale = xf.abs().amax({1}, true).clamp_min(1e-12) / 448.0;
    const auto xq = (xf / x_scale).to(at::kFloat8_e4m3fn).to(at::kFloat);
    const auto want = (kernels::gemv(xq, fp8.weight, {}, fp8.weight_scale.view({-1})) * x_scale).to(at::kBFloat16);
    const auto got_fp8 = fp8.forward(x).view({1, 48});
    EXPECT_TRUE(at::equal(got_fp8, want));
    // Beside the scaled matmul it replaces (the same quantized operands, summed in another order):
    // within one bf16 step of the largest output.
    const std::string no_fp8 = test::cpu_scaled_mm_per_row_unavailable();
    if (!no_fp8.empty()) std::cout << "  fp8 Linear: no _scaled_mm to compare with here: " << no_fp8 << "\n";
    if (no_fp8.empty()) {
        const auto theirs = at::_scaled_mm(xq.to(at::kFloat8_e4m3fn), fp8.weight.t(), x_scale, fp8.weight_scale,
                                           std::nullopt, std::nullopt, at::kBFloat16, false);
        const double diff = (got_fp8.to(at::kDouble) - theirs.to(at::kDouble)).abs().max().item<double>();
        std::cout << "  fp8 Linear, one row: max abs diff " << diff << " against _scaled_mm (largest output "
                  << theirs.abs().max().item<double>() << ")\n";
        EXPECT_LE(diff, theirs.abs().max().item<double>() / 256);
    }
    // Quantized to int8, a few rows read the int8 weight with its scales.
    lin.quantize_int8(at::kBFloat16);
    ASSERT_EQ(lin.weight.scalar_type(), at::kChar);
    EXPECT_TRUE(at::equal(lin.forward(x).view({1, 40}), kernels::gemv(x.view({1, 96}), lin.weight, lin.bias,
                                                                      lin.weight_scale)));
}

}  // namespace
}  // namespace glmimage
