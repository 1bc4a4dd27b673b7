// kernels::cpu_decode_attention (one query token per head over a KV cache, the AR decode step on the
// CPU) against SDPA and against the same attention computed in float64: grouped heads, head sizes,
// key counts around the vector width, masks of each kind, strided caches; the eager and the static
// step's views of one cache give the same bits; what it refuses.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "attention_reference.h"
#include "kernels/attention.h"
#include "kernels/cpu_decode_attention.h"
#include "kernels/x86_weight_loads.h"
#include "mean_ms.h"

namespace glmimage {
namespace {

bool runs_here() {
#ifdef GLMI_X86_WEIGHT_LOADS
    return kernels::weight_loads::cpu_has_avx2_fma_f16c();
#else
    return false;
#endif
}

using testing::exact_attention;
using testing::max_abs;
using testing::sdpa;

struct Case {
    int64_t B, Hq, Hkv, T, D;
};

TEST(CpuDecodeAttention, Float32MatchesFloat64AndSdpa) {
    if (!runs_here()) GTEST_SKIP() << "no AVX2 + FMA: attention() runs SDPA";
    at::manual_seed(21);
    for (const Case c : {Case{1, 8, 2, 354, 64}, Case{1, 32, 2, 1031, 128}, Case{2, 4, 4, 9, 64}, Case{1, 5, 1, 1, 8},
                         Case{2, 6, 2, 17, 256}, Case{1, 2, 2, 8, 16}, Case{1, 2, 1, 7, 24}}) {
        SCOPED_TRACE(::testing::Message() << "B " << c.B << " Hq " << c.Hq << " Hkv " << c.Hkv << " T " << c.T << " D "
                                          << c.D);
        const auto q = at::randn({c.B, c.Hq, 1, c.D}), k = at::randn({c.B, c.Hkv, c.T, c.D}) * 2,
                   v = at::randn({c.B, c.Hkv, c.T, c.D});
        const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
        ASSERT_TRUE(kernels::cpu_decode_attention_takes(q, k, v, {}));
        const auto got = kernels::cpu_decode_attention(q, k, v, {}, scale);
        const auto truth = exact_attention(q, k, v, {}, scale), theirs = sdpa(q, k, v, {}, scale);
        const double ours_err = max_abs(got, truth), sdpa_err = max_abs(theirs, truth);
        std::printf("float32 B%ld Hq%ld Hkv%ld T%ld D%ld: max abs error %.3g (SDPA's %.3g), from SDPA %.3g\n",
                    static_cast<long>(c.B), static_cast<long>(c.Hq), static_cast<long>(c.Hkv), static_cast<long>(c.T),
                    static_cast<long>(c.D), ours_err, sdpa_err, max_abs(got, theirs));
        EXPECT_LE(ours_err, 2e-6);
        EXPECT_LE(ours_err, 4 * sdpa_err + 1e-7);
    }
}

TEST(CpuDecodeAttention, Bf16WithinAStepOfSdpa) {
    if (!runs_here()) GTEST_SKIP() << "no AVX2 + FMA: attention() runs SDPA";
    at::manual_seed(22);
    for (const Case c : {Case{1, 8, 2, 354, 64}, Case{1, 32, 2, 1031, 128}, Case{2, 4, 2, 40, 64}}) {
        const auto q = at::randn({c.B, c.Hq, 1, c.D}).to(at::kBFloat16),
                   k = (at::randn({c.B, c.Hkv, c.T, c.D}) * 2).to(at::kBFloat16),
                   v = at::randn({c.B, c.Hkv, c.T, c.D}).to(at::kBFloat16);
        const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
        const auto got = kernels::cpu_decode_attention(q, k, v, {}, scale), theirs = sdpa(q, k, v, {}, scale);
        const std::string what = "T" + std::to_string(c.T) + " D" + std::to_string(c.D);
        testing::expect_bf16_like_sdpa(what.c_str(), got, theirs, exact_attention(q, k, v, {}, scale), 0.2);
    }
}

TEST(CpuDecodeAttention, MasksOfEachKind) {
    if (!runs_here()) GTEST_SKIP() << "no AVX2 + FMA: attention() runs SDPA";
    at::manual_seed(23);
    const int64_t B = 2, Hq = 8, Hkv = 2, T = 37, D = 64;
    const double scale = 0.125;
    const auto q = at::randn({B, Hq, 1, D}), k = at::randn({B, Hkv, T, D}), v = at::randn({B, Hkv, T, D});
    // Per sample: the first keys padding (left-padded batch), the second sample more of them.
    auto keep = at::ones({B, 1, 1, T}, at::kBool);
    keep.index_put_({0, 0, 0, at::indexing::Slice(0, 3)}, false);
    keep.index_put_({1, 0, 0, at::indexing::Slice(0, 11)}, false);
    const auto additive = at::zeros({B, 1, 1, T}).masked_fill(keep.logical_not(), -INFINITY);
    const auto finite = at::randn({1, 1, 1, T});  // one additive row for the batch, finite values
    for (const auto& [name, mask] : std::vector<std::pair<const char*, at::Tensor>>{
             {"bool", keep}, {"additive -inf", additive}, {"additive finite", finite}}) {
        SCOPED_TRACE(name);
        const auto additive_form = mask.scalar_type() == at::kBool ? additive : mask;
        const auto got = kernels::cpu_decode_attention(q, k, v, mask, scale);
        const double err = max_abs(got, exact_attention(q, k, v, additive_form, scale));
        std::printf("mask %s: max abs error %.3g\n", name, err);
        EXPECT_LE(err, 2e-6);
    }
    // bf16 with a bf16 additive mask, as sdpa_additive_mask makes it for a bf16 decode
    const auto got16 = kernels::cpu_decode_attention(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16),
                                                     additive.to(at::kBFloat16), scale);
    EXPECT_LE(max_abs(got16, exact_attention(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), additive, scale)),
              0.02);
    // Every key masked: zeros, as SDPA gives.
    const auto none = at::zeros({B, 1, 1, T}, at::kBool);
    EXPECT_TRUE(at::equal(kernels::cpu_decode_attention(q, k, v, none, scale), at::zeros({B, Hq, 1, D})));
    EXPECT_TRUE(at::equal(sdpa(q, k, v, none, scale), at::zeros({B, Hq, 1, D})));
}

TEST(CpuDecodeAttention, EagerAndStaticViewsGiveTheSameBits) {
    // The eager step attends over the cache's written prefix; the static step (the one a CUDA
    // graph replays) over its whole capacity, the rest masked. test_ar_decode_paths holds their
    // tokens equal; here the attention alone, bit for bit, on strided cache views.
    if (!runs_here()) GTEST_SKIP() << "no AVX2 + FMA: attention() runs SDPA";
    at::manual_seed(24);
    const int64_t B = 1, Hq = 8, Hkv = 2, capacity = 96, T = 45, D = 64;
    for (auto dt : {at::kFloat, at::kBFloat16}) {
        SCOPED_TRACE(c10::toString(dt));
        const auto cache_k = at::randn({B, Hkv, capacity, D}).to(dt), cache_v = at::randn({B, Hkv, capacity, D}).to(dt);
        const auto qkv = at::randn({B, 1, 3 * Hq, D}).to(dt);
        const auto q = qkv.narrow(2, 0, Hq).transpose(1, 2);  // [B, Hq, 1, D], strided
        auto keep = at::zeros({B, 1, 1, capacity}, at::kBool);
        keep.narrow(3, 0, T).fill_(true);
        const auto eager = kernels::attention(q, cache_k.narrow(2, 0, T), cache_v.narrow(2, 0, T), {}, {0.125});
        for (const auto& mask : {keep, at::zeros({B, 1, 1, capacity}).masked_fill(keep.logical_not(), -INFINITY).to(dt)}) {
            EXPECT_EQ(kernels::attention_backend(q, cache_k, cache_v, mask, {0.125}), "cpu_decode");
            const auto full = kernels::attention(q, cache_k, cache_v, mask, {0.125});
            EXPECT_TRUE(at::equal(eager, full));
        }
    }
}

TEST(CpuDecodeAttention, RefusesWhatItDoesNotRun) {
    const auto q = at::randn({1, 8, 1, 64}), k = at::randn({1, 2, 10, 64});
    EXPECT_EQ(kernels::cpu_decode_attention_takes(q, k, k, {}), runs_here());
    EXPECT_FALSE(kernels::cpu_decode_attention_takes(at::randn({1, 8, 2, 64}), k, k, {}));  // two query tokens
    EXPECT_FALSE(kernels::cpu_decode_attention_takes(at::randn({1, 8, 1, 12}), at::randn({1, 2, 10, 12}),
                                                     at::randn({1, 2, 10, 12}), {}));  // head size
    EXPECT_FALSE(kernels::cpu_decode_attention_takes(q.to(at::kHalf), k.to(at::kHalf), k.to(at::kHalf), {}));
    EXPECT_FALSE(kernels::cpu_decode_attention_takes(q, k.to(at::kBFloat16), k, {}));  // mixed dtypes
    EXPECT_FALSE(kernels::cpu_decode_attention_takes(q, at::randn({1, 2, 64, 10}).transpose(2, 3), k, {}));
    EXPECT_FALSE(kernels::cpu_decode_attention_takes(at::randn({1, 6, 1, 64}), at::randn({1, 4, 10, 64}),
                                                     at::randn({1, 4, 10, 64}), {}));  // 6 heads over 4
    EXPECT_FALSE(kernels::cpu_decode_attention_takes(q, k, k, at::ones({1, 8, 1, 10}, at::kBool)));  // per head
    EXPECT_FALSE(kernels::cpu_decode_attention_takes(q, k, k, at::ones({1, 1, 1, 10}, at::kDouble)));
    EXPECT_THROW(kernels::cpu_decode_attention(at::randn({1, 8, 2, 64}), k, k, {}, 0.125), std::exception);
    // attention() keeps SDPA for the real model's 16 query heads of 128 per KV head
    EXPECT_EQ(kernels::attention_backend(at::randn({1, 32, 1, 128}), at::randn({1, 2, 10, 128}), at::randn({1, 2, 10, 128})),
              "flash_attention");
    EXPECT_EQ(kernels::attention_backend(q, k, k), runs_here() ? "cpu_decode" : "flash_attention");
    // causal attention of one query over many keys is not what this loop computes: SDPA runs it
    kernels::AttentionOptions causal;
    causal.causal = true;
    EXPECT_NE(kernels::attention_backend(q, k.repeat_interleave(4, 1), k.repeat_interleave(4, 1), {}, causal),
              "cpu_decode");
}

TEST(CpuDecodeAttention, TimingAgainstSdpa) {
    if (!runs_here()) GTEST_SKIP() << "no AVX2 + FMA";
    for (const Case c : {Case{1, 8, 2, 354, 64}, Case{1, 32, 2, 4400, 128}})
        for (auto dt : {at::kBFloat16, at::kFloat}) {
            const auto q = at::randn({c.B, c.Hq, 1, c.D}).to(dt), k = at::randn({c.B, c.Hkv, c.T, c.D}).to(dt);
            const auto qg = q.reshape({c.B, c.Hkv, c.Hq / c.Hkv, c.D});  // SDPA's call in the grouped decode
            std::printf("%s Hq %ld over %ld, T %ld, D %ld, %d threads: %.1f us (SDPA %.1f us)\n", c10::toString(dt),
                        static_cast<long>(c.Hq), static_cast<long>(c.Hkv), static_cast<long>(c.T),
                        static_cast<long>(c.D), at::get_num_threads(),
                        1e3 * testing::mean_ms([&] { return kernels::cpu_decode_attention(q, k, k, {}, 0.125); }, 200),
                        1e3 * testing::mean_ms([&] { return at::scaled_dot_product_attention(qg, k, k); }, 200));
        }
}

}  // namespace
}  // namespace glmimage
