// kernels::cpu_bf16_attention (many query tokens, bf16, on a CPU with AVX-512 bf16 and no AMX)
// against SDPA and against the same attention computed in float64: head sizes, key and query
// counts around the tile sizes, grouped heads, strided views as the DiT passes them; what
// attention() sends it; what it refuses; its speed (printed) beside SDPA's at the small preset's DiT shape.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "attention_reference.h"
#include "kernels/attention.h"
#include "kernels/cpu_bf16_attention.h"
#include "mean_ms.h"

namespace glmimage {
namespace {

using testing::exact_attention;
using testing::max_abs;
using testing::sdpa;

struct Case {
    int64_t B, Hq, Hkv, Sq, Sk, D;
};

TEST(CpuBf16Attention, WithinAStepOfSdpaAndAsAccurate) {
    if (!kernels::cpu_has_avx512_bf16_without_amx()) GTEST_SKIP() << "no AVX-512 bf16, or AMX: attention() runs SDPA";
    at::manual_seed(31);
    // The small preset's joint passes (281 and 257 tokens, 8 heads of 64), the real DiT's heads of
    // 128, key counts that leave 1-3 vectors of 16 over the tiles of 64 or one key over, query
    // counts that leave 1-3 rows over the groups of four, grouped heads, D 32 and 256.
    for (const Case c : {Case{1, 8, 8, 281, 281, 64}, Case{2, 8, 8, 257, 257, 64}, Case{1, 4, 4, 300, 1031, 128},
                         Case{1, 2, 2, 5, 17, 32}, Case{1, 2, 2, 2, 1, 64}, Case{1, 6, 2, 67, 99, 96},
                         Case{1, 2, 1, 33, 130, 256}, Case{1, 3, 3, 130, 48, 64}}) {
        SCOPED_TRACE(::testing::Message() << "B " << c.B << " Hq " << c.Hq << " Hkv " << c.Hkv << " Sq " << c.Sq
                                          << " Sk " << c.Sk << " D " << c.D);
        const auto q = at::randn({c.B, c.Hq, c.Sq, c.D}).to(at::kBFloat16),
                   k = (at::randn({c.B, c.Hkv, c.Sk, c.D}) * 2).to(at::kBFloat16),
                   v = at::randn({c.B, c.Hkv, c.Sk, c.D}).to(at::kBFloat16);
        const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
        ASSERT_TRUE(kernels::cpu_bf16_attention_takes(q, k, v, {}, false));
        const auto got = kernels::cpu_bf16_attention(q, k, v, scale), theirs = sdpa(q, k, v, {}, scale);
        ASSERT_EQ(got.sizes(), theirs.sizes());
        const std::string what = "B" + std::to_string(c.B) + " Hq" + std::to_string(c.Hq) + " Hkv" +
                                 std::to_string(c.Hkv) + " Sq" + std::to_string(c.Sq) + " Sk" + std::to_string(c.Sk) +
                                 " D" + std::to_string(c.D);
        testing::expect_bf16_like_sdpa(what.c_str(), got, theirs, exact_attention(q, k, v, {}, scale), 0.25);
    }
}

TEST(CpuBf16Attention, StridedViewsAsTheDiTPassesThem) {
    // The DiT hands attention() [B, heads, S, D] views of its [B, S, heads, D] rows (rotary's output
    // and v's), and takes the result back through transpose(1, 2): both layouts give the same bits.
    if (!kernels::cpu_has_avx512_bf16_without_amx()) GTEST_SKIP() << "no AVX-512 bf16, or AMX: attention() runs SDPA";
    at::manual_seed(32);
    const int64_t B = 2, H = 8, S = 73, D = 64;
    const auto rows = at::randn({B, S, 3, H, D}).to(at::kBFloat16);
    const auto q = rows.select(2, 0).transpose(1, 2), k = rows.select(2, 1).transpose(1, 2),
               v = rows.select(2, 2).transpose(1, 2);
    ASSERT_FALSE(q.is_contiguous());
    EXPECT_EQ(kernels::attention_backend(q, k, v), "cpu_bf16");
    const auto strided = kernels::attention(q, k, v), dense = kernels::attention(q.contiguous(), k.contiguous(),
                                                                                v.contiguous());
    EXPECT_TRUE(at::equal(strided, dense));
    EXPECT_TRUE(strided.transpose(1, 2).is_contiguous());  // the rows the DiT reshapes, without a copy
    std::printf("strided vs dense: max abs diff %.3g\n", max_abs(strided, dense));
}

TEST(CpuBf16Attention, WhatItRefuses) {
    const auto q = at::randn({1, 2, 9, 64}).to(at::kBFloat16), k = at::randn({1, 2, 9, 64}).to(at::kBFloat16);
    EXPECT_FALSE(kernels::cpu_bf16_attention_takes(q, k, k, at::ones({1, 1, 9, 9}, at::kBool), false));  // a mask
    EXPECT_FALSE(kernels::cpu_bf16_attention_takes(q, k, k, {}, true));                                  // causal
    EXPECT_FALSE(kernels::cpu_bf16_attention_takes(q.to(at::kFloat), k.to(at::kFloat), k.to(at::kFloat), {}, false));
    EXPECT_FALSE(kernels::cpu_bf16_attention_takes(q.narrow(2, 0, 1), k, k, {}, false));  // one query: decode
    const auto q48 = at::randn({1, 2, 9, 48}).to(at::kBFloat16);
    EXPECT_FALSE(kernels::cpu_bf16_attention_takes(q48, q48, q48, {}, false));  // D not a multiple of 32
    const auto q512 = at::randn({1, 1, 9, 512}).to(at::kBFloat16);
    EXPECT_FALSE(kernels::cpu_bf16_attention_takes(q512, q512, q512, {}, false));  // the VAE's one head of 512
    const auto k3 = at::randn({1, 3, 9, 64}).to(at::kBFloat16);
    EXPECT_FALSE(kernels::cpu_bf16_attention_takes(q, k3, k3, {}, false));  // 2 query heads over 3
    EXPECT_FALSE(kernels::cpu_bf16_attention_takes(q.transpose(2, 3), k, k, {}, false));  // D not contiguous
    EXPECT_EQ(kernels::cpu_bf16_attention_takes(q, k, k, {}, false), kernels::cpu_has_avx512_bf16_without_amx());
    if (!kernels::cpu_has_avx512_bf16_without_amx()) {
        EXPECT_NE(kernels::attention_backend(q, k, k), "cpu_bf16");
    }
    EXPECT_THROW(kernels::cpu_bf16_attention(q, k, k.narrow(2, 0, 5), 0.125), std::exception);
}

TEST(CpuBf16Attention, SpeedBesideSdpaAtTheSmallPresetsStep) {
    // What the kernel is for, printed for the record (not asserted: the machines are shared).
    if (!kernels::cpu_has_avx512_bf16_without_amx()) GTEST_SKIP() << "no AVX-512 bf16, or AMX: attention() runs SDPA";
    at::manual_seed(33);
    const auto q = at::randn({1, 8, 281, 64}).to(at::kBFloat16), k = at::randn({1, 8, 281, 64}).to(at::kBFloat16),
               v = at::randn({1, 8, 281, 64}).to(at::kBFloat16);
    const double ours = testing::mean_ms([&] { kernels::cpu_bf16_attention(q, k, v, 0.125); }, 20),
                 theirs = testing::mean_ms([&] { sdpa(q, k, v, {}, 0.125); }, 20);
    const double gflop = 4.0 * 8 * 281 * 281 * 64 / 1e9;
    std::printf("[1, 8, 281, 64] bf16, %d threads: ours %.3f ms (%.0f GFLOP/s), SDPA %.3f ms (%.0f): %.2fx\n",
                at::get_num_threads(), ours, gflop / ours * 1e3, theirs, gflop / theirs * 1e3, theirs / ours);
}

}  // namespace
}  // namespace glmimage
