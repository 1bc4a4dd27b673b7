// What the attention kernels' tests compare against: the same attention in float64 and LibTorch's
// SDPA, k and v repeated per query head of their group, and the check that a bf16 kernel is within
// one bf16 step of SDPA and as accurate against float64 (printed, with its max abs diffs).
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <optional>

namespace glmimage::testing {

// softmax(q k^T * scale + mask) v in float64 from the same values. mask: additive, or undefined.
inline at::Tensor exact_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& mask, double scale) {
    const int64_t group = q.size(1) / k.size(1);
    const auto kd = k.to(at::kDouble).repeat_interleave(group, 1), vd = v.to(at::kDouble).repeat_interleave(group, 1);
    auto s = at::matmul(q.to(at::kDouble), kd.transpose(-1, -2)) * scale;
    if (mask.defined()) s = s + mask.to(at::kDouble);
    return at::matmul(at::softmax(s, -1), vd);
}

inline at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                       double scale) {
    const int64_t group = q.size(1) / k.size(1);
    return at::scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                            mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt, 0.0,
                                            false, scale);
}

inline double max_abs(const at::Tensor& a, const at::Tensor& b) {
    return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// A bf16 kernel's output `got` against SDPA's (`theirs`) and float64's (`truth`): within one bf16
// step of the output's magnitude (8 significant bits) of SDPA's, no less accurate than SDPA's
// against float64 but for half a step (the weights' own bf16 rounding, which both sides share but
// sum in another order), and fewer than `max_apart` of the elements apart from SDPA's at all.
inline void expect_bf16_like_sdpa(const char* what, const at::Tensor& got, const at::Tensor& theirs,
                                  const at::Tensor& truth, double max_apart) {
    const double ours_err = max_abs(got, truth), sdpa_err = max_abs(theirs, truth);
    const double apart = (got != theirs).to(at::kDouble).mean().item<double>();
    const double step = truth.abs().max().item<double>() / 128;
    std::printf("bf16 %s: max abs error %.3g (SDPA's %.3g), %.2f %% of elements apart from SDPA by up to %.3g\n", what,
                ours_err, sdpa_err, 100 * apart, max_abs(got, theirs));
    EXPECT_LE(max_abs(got, theirs), step);
    EXPECT_LE(ours_err, sdpa_err + step / 2);
    EXPECT_LT(apart, max_apart);
}

}  // namespace glmimage::testing
