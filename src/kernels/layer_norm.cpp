#include "kernels/layer_norm.h"

#include <ATen/Version.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include "core/parallel.h"
#include "kernels/fused_switch.h"
#include "kernels/libtorch_ceil_log2.h"
#include "kernels/profile_scope.h"
#include "kernels/x86_weight_loads.h"

// Built with -ffp-contract=off (CMakeLists.txt): every product below is rounded before its sum
// unless the code asks for a fused multiply-add, as LibTorch's kernel computes it.

namespace glmimage::kernels {

namespace {

#ifdef GLMI_X86_WEIGHT_LOADS

constexpr int64_t kLanes = 8;   // LibTorch's AVX2 Vectorized<float>
constexpr int64_t kChunk = 16;  // vectors per Welford chunk (moments_utils.h's kChunkSize)
constexpr int kMaxDepth = 64;   // cascade levels: enough for any row length

// Moments of a set of values per lane: its count, mean and sum of squared deviations.
struct LaneMoments {
    int64_t count = 0;
    __m256 mean, m2;
};

// Merges `add` into `into` (Chan's formula), rounded as LibTorch's vector merge: the mean's
// product and sum apart, the deviations' sum in one fused multiply-add.
GLMI_AVX2 inline void merge(const LaneMoments& add, LaneMoments& into) {
    const int64_t n = into.count + add.count;
    const float c = n == 0 ? 0.0f : static_cast<float>(add.count) / static_cast<float>(n);
    const __m256 delta = _mm256_sub_ps(add.mean, into.mean);
    const __m256 m2_sum = _mm256_add_ps(into.m2, add.m2);
    const __m256 c_delta = _mm256_mul_ps(_mm256_set1_ps(c), delta);
    const __m256 count_delta = _mm256_mul_ps(delta, _mm256_set1_ps(static_cast<float>(into.count)));
    into.mean = _mm256_add_ps(into.mean, c_delta);
    into.m2 = _mm256_fmadd_ps(count_delta, c_delta, m2_sum);
    into.count = n;
}

// The same for one lane's moments into the row's, rounded as LibTorch's scalar merge was compiled:
// mean += c * delta fused, and m2 += m2_add + delta * delta * c * count with its last product
// fused into the inner sum.
GLMI_AVX2 inline void merge_lane(int64_t add_count, float add_mean, float add_m2, int64_t& count, float& mean,
                                 float& m2) {
    const int64_t n = count + add_count;
    const float c = n == 0 ? 0.0f : static_cast<float>(add_count) / static_cast<float>(n);
    const float delta = add_mean - mean;
    mean = std::fma(c, delta, mean);
    m2 = m2 + std::fma(delta * delta * c, static_cast<float>(count), add_m2);
    count = n;
}

// One row of n values (a multiple of kLanes): y = (x + (-mean)) * rstd.
GLMI_AVX2 void normalize_row(const float* x, float* y, int64_t n, float eps) {
    const int64_t vectors = n / kLanes, chunks = (vectors + kChunk - 1) / kChunk;
    const int depth = static_cast<int>(libtorch_ceil_log2(chunks));  // the cascade's levels
    // The reciprocals 1 / (j + 1) of Welford's update, as LibTorch's table holds them.
    static const std::array<float, kChunk> inverse = [] {
        std::array<float, kChunk> r{};
        for (int64_t j = 0; j < kChunk; ++j) r[j] = 1.0f / static_cast<float>(j + 1);
        return r;
    }();
    std::array<LaneMoments, kMaxDepth> stack;
    // Level 0 always exists (the depth is at least 1), which the compiler cannot see through the loop.
    stack[0].mean = stack[0].m2 = _mm256_setzero_ps();
    for (int i = 1; i < depth; ++i) stack[i].mean = stack[i].m2 = _mm256_setzero_ps();
    for (int64_t i = 0; i < chunks; ++i) {
        // Welford within the chunk, per lane, then merged into the cascade's first level.
        const float* xc = x + i * kChunk * kLanes;
        LaneMoments chunk;
        chunk.count = std::min(kChunk, vectors - i * kChunk);
        chunk.mean = chunk.m2 = _mm256_setzero_ps();
        for (int64_t j = 0; j < chunk.count; ++j) {
            const __m256 v = _mm256_loadu_ps(xc + j * kLanes);
            const __m256 delta = _mm256_sub_ps(v, chunk.mean);
            chunk.mean = _mm256_fmadd_ps(_mm256_set1_ps(inverse[j]), delta, chunk.mean);
            chunk.m2 = _mm256_fmadd_ps(delta, _mm256_sub_ps(v, chunk.mean), chunk.m2);
        }
        merge(chunk, stack[0]);
        // Every 2^j chunks, level j - 1 moves up into level j (a binary counter).
        for (int64_t j = 1, mask = i + 1; j < depth && (mask & 1) == 0; ++j, mask >>= 1) {
            merge(stack[j - 1], stack[j]);
            stack[j - 1] = LaneMoments{0, _mm256_setzero_ps(), _mm256_setzero_ps()};
        }
    }
    for (int i = 1; i < depth; ++i) merge(stack[i], stack[0]);
    alignas(32) float means[kLanes], m2s[kLanes];
    _mm256_store_ps(means, stack[0].mean);
    _mm256_store_ps(m2s, stack[0].m2);
    int64_t count = 0;
    float mean = 0.0f, m2 = 0.0f;
    for (int64_t l = 0; l < kLanes; ++l) merge_lane(vectors, means[l], m2s[l], count, mean, m2);
    const float rstd = 1.0f / std::sqrt(m2 / static_cast<float>(n) + eps);
    // LibTorch's (x + bias) * scale * gamma + beta (bias = -mean) with gamma 1 and beta 0, as its
    // compiler reduced it: the product by 1 dropped, the last product fused with the sum of +0.
    // So a product that underflows keeps its sign (-0), and an exact zero product is +0 (rstd 0
    // where the variance overflowed): test_kernels has both rows.
    const __m256 minus_mean = _mm256_set1_ps(-mean), scale = _mm256_set1_ps(rstd), zero = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j += kLanes)
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(_mm256_add_ps(_mm256_loadu_ps(x + j), minus_mean), scale, zero));
}

void run(const at::Tensor& x, at::Tensor& y, double eps) {
    const int64_t n = x.size(-1), rows = x.numel() / n;
    const float* px = x.data_ptr<float>();
    float* py = y.data_ptr<float>();
    const float e = static_cast<float>(eps);  // LibTorch's kernel takes eps as the tensor's dtype
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / (8 * n));  // 4 bytes read, 4 written
    parallel_for_cpu(rows, grain, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) normalize_row(px + r * n, py + r * n, n, e);
    });
}

bool shape_fits(const at::Tensor& x) {
    return x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() >= 1 && x.is_contiguous() &&
           x.size(-1) > 0 && x.size(-1) % kLanes == 0;
}

#endif  // GLMI_X86_WEIGHT_LOADS

}  // namespace

namespace detail {

bool layer_norm_loop_matches_libtorch() {
#ifdef GLMI_X86_WEIGHT_LOADS
    if (!weight_loads::cpu_has_avx2_fma_f16c()) return false;
    c10::InferenceMode guard;
    // Deterministic rows (the global generator stays untouched) of varied offset and scale: the
    // roundings this checks part from a wrong formula's in most such rows.
    for (int64_t n : {8, 64, 128, 512, 1536, 2048, 4096, 13696}) {
        const int64_t rows = 64;
        const auto i = at::arange(rows * n, at::kFloat).view({rows, n});
        const auto r = at::arange(rows, at::kFloat).view({rows, 1});
        const auto x = at::sin(i * 0.37 + r) * (r * 0.7 + 0.01) + at::cos(r * 1.3) * 5;
        auto y = at::empty_like(x);
        run(x, y, 1e-5);
        if (!at::equal(y, at::layer_norm(x, {n}, {}, {}, 1e-5))) return false;
    }
    return true;
#else
    return false;
#endif
}

}  // namespace detail

bool layer_norm_by_kernel(const at::Tensor& x) {
#ifdef GLMI_X86_WEIGHT_LOADS
    if (!shape_fits(x) || !fused_kernels_run_on(x.device(), x.scalar_type())) return false;
    // LibTorch picks its CPU kernels once per process (ATEN_CPU_CAPABILITY may lower the pick), so
    // one probe decides for the process.
    static const bool matches = detail::layer_norm_loop_matches_libtorch();
    return matches;
#else
    (void)x;
    return false;
#endif
}

at::Tensor layer_norm(const at::Tensor& x, double eps) {
#ifdef GLMI_X86_WEIGHT_LOADS
    if (layer_norm_by_kernel(x)) {
        GLMI_KERNEL_SCOPE("glmimage::layer_norm", x);
        auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
        run(x, y, eps);
        return y;
    }
#endif
    return at::layer_norm(x, {x.size(-1)}, {}, {}, eps);
}

}  // namespace glmimage::kernels
