// The sum of a float32 row as LibTorch's CPU sum computes it, without its dispatch.
//
// Profile-led: the AR decoder's RMSNorms take their mean from LibTorch's sum (transformers'
// `pow(2).mean(-1)`, whose bits the fused norms keep), and at the decode step each is one row:
// LibTorch's profiler counted 26 `aten::sum` calls a token at about 3 us each, 17 % of the ATen
// time of a small-preset bf16 decode on a 2-core AVX2 EPYC, for 512 additions a call.
//
// The bits: LibTorch's sum of a contiguous row of at least one vector (ATen/native/cpu/
// SumKernel.cpp) adds whole vectors of W lanes, four side by side, in a cascade: each group of
// 2^p four-vector chunks (p = max(4, ceil(log2(chunks)) / 4)) goes into a first level, which is
// carried into the next one, up to four levels; the levels are added together, then the vectors left
// over go into the first of the four, the four are added in order, and the lanes are added in order
// after the elements past the last whole vector (summed from zero). A row shorter than a vector is
// the same cascade with one lane. Additions only, so where they happen in registers does not change
// a bit. W is LibTorch's float vector width (8 for its default and AVX2 kernels, 16 for AVX-512):
// it is not guessed, a probe at first use tries both against at::sum and keeps the one that matches
// (none: the callers keep LibTorch's op). A row of 32768 floats or more is not taken: LibTorch splits
// a single such row between its threads.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "kernels/libtorch_ceil_log2.h"

namespace glmimage::kernels {

namespace detail {

// The cascade over `vectors` vectors of L lanes, the i-th float given by `load(i)`: into `out`, the
// lanes of LibTorch's first partial sum once the other three are added into it.
template <int L, typename Load>
void libtorch_cascade_vectors(const Load& load, int64_t vectors, float (&out)[L]) {
    constexpr int kLevels = 4, kSideBySide = 4;
    const int64_t chunks = vectors / kSideBySide;
    const int64_t power = std::max<int64_t>(4, libtorch_ceil_log2(chunks) / kLevels);
    const int64_t step = int64_t{1} << power, mask = step - 1;

    float acc[kLevels][kSideBySide][L] = {};
    const auto add_chunk = [&](int64_t c) {
        for (int k = 0; k < kSideBySide; ++k)
            for (int l = 0; l < L; ++l) acc[0][k][l] += load((c * kSideBySide + k) * L + l);
    };
    int64_t c = 0;
    while (c + step <= chunks) {
        for (int64_t j = 0; j < step; ++j, ++c) add_chunk(c);
        for (int level = 1; level < kLevels; ++level) {
            for (int k = 0; k < kSideBySide; ++k)
                for (int l = 0; l < L; ++l) {
                    acc[level][k][l] += acc[level - 1][k][l];
                    acc[level - 1][k][l] = 0.0f;
                }
            if ((c & (mask << (level * power))) != 0) break;
        }
    }
    for (; c < chunks; ++c) add_chunk(c);
    for (int level = 1; level < kLevels; ++level)
        for (int k = 0; k < kSideBySide; ++k)
            for (int l = 0; l < L; ++l) acc[0][k][l] += acc[level][k][l];
    for (int64_t v = chunks * kSideBySide; v < vectors; ++v)
        for (int l = 0; l < L; ++l) acc[0][0][l] += load(v * L + l);
    for (int k = 1; k < kSideBySide; ++k)
        for (int l = 0; l < L; ++l) acc[0][0][l] += acc[0][k][l];
    for (int l = 0; l < L; ++l) out[l] = acc[0][0][l];
}

// The sum of the header's comment with W lanes; `load(i)` gives the row's i-th float.
template <int W, typename Load>
float libtorch_cascade_sum(const Load& load, int64_t n) {
    if (n < W) {  // a row shorter than a vector: the cascade over single floats
        float one[1];
        libtorch_cascade_vectors<1>(load, n, one);
        return 0.0f + one[0];  // the output starts at zero
    }
    const int64_t vectors = n / W;
    float lanes[W];
    libtorch_cascade_vectors<W>(load, vectors, lanes);
    float total = 0.0f;
    for (int64_t i = vectors * W; i < n; ++i) total += load(i);
    for (int l = 0; l < W; ++l) total += lanes[l];
    return 0.0f + total;
}

// LibTorch's float vector width as the probe found it: 8 or 16, 0 where neither gives at::sum's bits.
int libtorch_sum_lanes();

}  // namespace detail

// Whether libtorch_row_sum() gives at::sum's bits for rows of n floats on this CPU: the probe found
// LibTorch's lane width and n < 32768. Not the fused kernels' switch: callers check theirs.
bool row_sum_matches_libtorch(int64_t n);

// x.sum(-1) of one contiguous row of n floats, `load(i)` giving its i-th value (a stored float, or
// one computed on the fly, as a square): only where row_sum_matches_libtorch(n).
template <typename Load>
float libtorch_row_sum(const Load& load, int64_t n) {
    return detail::libtorch_sum_lanes() == 16 ? detail::libtorch_cascade_sum<16>(load, n)
                                              : detail::libtorch_cascade_sum<8>(load, n);
}

// x.sum(-1) of a float32 tensor: by the loop for a contiguous CPU tensor whose rows it matches,
// LibTorch's op otherwise (the research hook and the tests' entry).
at::Tensor row_sums(const at::Tensor& x);

}  // namespace glmimage::kernels
