#include "kernels/layer_norm.h"

#include <ATen/Version.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/parallel.h"
#include "kernels/fused_switch.h"
#include "kernels/libtorch_ceil_log2.h"
#include "kernels/profile_scope.h"
#include "kernels/x86_weight_loads.h"

// Built with -ffp-contract=off (CMakeLists.txt): every product below is rounded before its sum
// unless the code asks for a fused multiply-add, as LibTorch's kernel computes it.

namespace glmimage::kernels {

namespace {

// How LibTorch's bf16 kernel, as compiled, computes x * scale + bias: the probe finds out.
enum class Bf16Formula { kNone, kFusedMultiplyAdd, kMultiplyThenAdd };

#ifdef GLMI_X86_WEIGHT_LOADS

using weight_loads::load8;
using weight_loads::round_to_bf16;
using weight_loads::store16_bf16;

constexpr int64_t kLanes = 8;   // LibTorch's AVX2 Vectorized<float>
constexpr int64_t kChunk = 16;  // vectors per Welford chunk (moments_utils.h's kChunkSize)
constexpr int kMaxDepth = 64;   // cascade levels: enough for any row length
constexpr int kMaxRowDims = 4;  // leading dimensions of a strided input the loop walks itself

// Moments of a set of values per lane: its count, mean and sum of squared deviations.
struct LaneMoments {
    int64_t count;  // set where each is made: an array of them is left unset
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

// One chunk of `count` vectors at xc into `into`, as LibTorch's UpdateMomentsVec: Welford per lane
// within the chunk, then merged. float32: vectors of 8 lanes.
GLMI_AVX2 inline void add_chunk(const float* xc, int64_t count, const std::array<float, kChunk>& inverse,
                                LaneMoments& into) {
    LaneMoments chunk{};
    chunk.count = count;
    chunk.mean = chunk.m2 = _mm256_setzero_ps();
    for (int64_t j = 0; j < count; ++j) {
        const __m256 v = _mm256_loadu_ps(xc + j * kLanes);
        const __m256 delta = _mm256_sub_ps(v, chunk.mean);
        chunk.mean = _mm256_fmadd_ps(_mm256_set1_ps(inverse[j]), delta, chunk.mean);
        chunk.m2 = _mm256_fmadd_ps(delta, _mm256_sub_ps(v, chunk.mean), chunk.m2);
    }
    merge(chunk, into);
}

// bf16: LibTorch's vectors of 16 values, each widened into two float vectors with moments of their
// own through the chunk, merged one after the other.
GLMI_AVX2 inline void add_chunk(const uint16_t* xc, int64_t count, const std::array<float, kChunk>& inverse,
                                LaneMoments& into) {
    LaneMoments lo{}, hi{};
    lo.count = hi.count = count;
    lo.mean = lo.m2 = hi.mean = hi.m2 = _mm256_setzero_ps();
    for (int64_t j = 0; j < count; ++j) {
        const __m256 a = load8(xc + j * 2 * kLanes), b = load8(xc + j * 2 * kLanes + kLanes);
        const __m256 c = _mm256_set1_ps(inverse[j]);
        const __m256 da = _mm256_sub_ps(a, lo.mean), db = _mm256_sub_ps(b, hi.mean);
        lo.mean = _mm256_fmadd_ps(da, c, lo.mean);
        hi.mean = _mm256_fmadd_ps(db, c, hi.mean);
        lo.m2 = _mm256_fmadd_ps(da, _mm256_sub_ps(a, lo.mean), lo.m2);
        hi.m2 = _mm256_fmadd_ps(db, _mm256_sub_ps(b, hi.mean), hi.m2);
    }
    merge(lo, into);
    merge(hi, into);
}

// A row's mean and variance as LibTorch's RowwiseMoments: chunks of 16 vectors (of 8 floats, or of
// 16 bf16) in a binary cascade, then the 8 lanes merged in order. n is a multiple of the vector.
template <typename T>
GLMI_AVX2 void row_moments(const T* x, int64_t n, float& mean, float& variance) {
    constexpr int64_t kVector = std::is_same_v<T, float> ? kLanes : 2 * kLanes;
    const int64_t vectors = n / kVector, chunks = (vectors + kChunk - 1) / kChunk;
    const int depth = static_cast<int>(libtorch_ceil_log2(chunks));  // the cascade's levels
    // The reciprocals 1 / (j + 1) of Welford's update, as LibTorch's table holds them.
    static const std::array<float, kChunk> inverse = [] {
        std::array<float, kChunk> r{};
        for (int64_t j = 0; j < kChunk; ++j) r[j] = 1.0f / static_cast<float>(j + 1);
        return r;
    }();
    // Only the cascade's `depth` levels are set (a row of 64 values has one): zeroing all kMaxDepth
    // cost a short row a tenth of its time.
    LaneMoments stack[kMaxDepth];
    // Level 0 always exists (the depth is at least 1), which the compiler cannot see through the loop.
    stack[0] = LaneMoments{0, _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int i = 1; i < depth; ++i) stack[i] = LaneMoments{0, _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < chunks; ++i) {
        add_chunk(x + i * kChunk * kVector, std::min(kChunk, vectors - i * kChunk), inverse, stack[0]);
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
    float m2 = 0.0f;
    mean = 0.0f;
    // each lane holds n / kLanes values (for bf16 two float vectors' worth per vector)
    for (int64_t l = 0; l < kLanes; ++l) merge_lane(n / kLanes, means[l], m2s[l], count, mean, m2);
    variance = m2 / static_cast<float>(n);
}

// One float32 row of n values (a multiple of kLanes): y = (x + (-mean)) * rstd.
GLMI_AVX2 void normalize_row(const float* x, float* y, int64_t n, float eps, Bf16Formula /*unused*/) {
    float mean = 0.0f, variance = 0.0f;
    row_moments(x, n, mean, variance);
    const float rstd = 1.0f / std::sqrt(variance + eps);
    // LibTorch's (x + bias) * scale * gamma + beta (bias = -mean) with gamma 1 and beta 0, as its
    // compiler reduced it: the product by 1 dropped, the last product fused with the sum of +0.
    // So a product that underflows keeps its sign (-0), and an exact zero product is +0 (rstd 0
    // where the variance overflowed): test_kernels has both rows.
    const __m256 minus_mean = _mm256_set1_ps(-mean), scale = _mm256_set1_ps(rstd), zero = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j += kLanes)
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(_mm256_add_ps(_mm256_loadu_ps(x + j), minus_mean), scale, zero));
}

// One bf16 row of n values (a multiple of 16): LibTorch's mixed-type kernel, its moments in float
// (above), then (x * scale + bias) * 1 + 0 (scale = rstd, bias = -rstd * mean) in float32 vectors,
// rounded to bf16. Whether its compiler fused the first product with its sum is the probe's
// finding (`formula`); the product by 1 is exact and the sum of 0 only makes -0 +0 in either.
GLMI_AVX2 void normalize_row(const uint16_t* x, uint16_t* y, int64_t n, float eps, Bf16Formula formula) {
    float mean = 0.0f, variance = 0.0f;
    row_moments(x, n, mean, variance);
    const float rstd = 1.0f / std::sqrt(variance + eps);
    const __m256 scale = _mm256_set1_ps(rstd), bias = _mm256_set1_ps(-rstd * mean), zero = _mm256_setzero_ps();
    const bool fused = formula == Bf16Formula::kFusedMultiplyAdd;
    for (int64_t j = 0; j < n; j += 2 * kLanes) {
        __m256 a = load8(x + j), b = load8(x + j + kLanes);
        a = fused ? _mm256_fmadd_ps(a, scale, bias) : _mm256_add_ps(_mm256_mul_ps(a, scale), bias);
        b = fused ? _mm256_fmadd_ps(b, scale, bias) : _mm256_add_ps(_mm256_mul_ps(b, scale), bias);
        store16_bf16(y + j, round_to_bf16(_mm256_add_ps(a, zero)), round_to_bf16(_mm256_add_ps(b, zero)));
    }
}

// The rows of x: its last dimension (contiguous) for every index of the others, in order, each at
// its own offset (the DiT's per-head q/k norms read [B, tokens, heads, head_dim] views of the
// fused q/k/v product's rows, whose copy to a contiguous tensor took as long as the norm). A walk
// from row to row adds strides (a division per dimension and row cost a float32 [281 x 8, 64]
// norm a third of its time).
class RowWalk {
public:
    RowWalk(const at::Tensor& x, int64_t row) : dims_(static_cast<int>(x.dim()) - 1) {
        for (int d = dims_ - 1; d >= 0; --d) {
            sizes_[d] = x.size(d), strides_[d] = x.stride(d);
            index_[d] = row % sizes_[d], row /= sizes_[d];
            offset_ += index_[d] * strides_[d];
        }
    }
    int64_t offset() const { return offset_; }
    void next() {
        for (int d = dims_ - 1; d >= 0; --d) {
            offset_ += strides_[d];
            if (++index_[d] < sizes_[d]) return;
            offset_ -= sizes_[d] * strides_[d];
            index_[d] = 0;
        }
    }

private:
    int dims_;  // leading dimensions
    int64_t offset_ = 0;
    std::array<int64_t, kMaxRowDims> sizes_{}, strides_{}, index_{};
};

template <typename T>
void run(const at::Tensor& x, at::Tensor& y, double eps, Bf16Formula formula) {
    const int64_t n = x.size(-1), rows = x.numel() / n;
    if (rows == 0) return;  // (a walk over an empty dimension would divide by its size)
    const auto* px = static_cast<const T*>(x.data_ptr());
    auto* py = static_cast<T*>(y.data_ptr());
    const float e = static_cast<float>(eps);  // float32: the tensor's dtype; bf16: LibTorch takes it as float
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / (2 * sizeof(T) * n));  // read + write
    parallel_for_cpu(rows, grain, [&](int64_t begin, int64_t end) {
        RowWalk walk(x, begin);
        for (int64_t r = begin; r < end; ++r, walk.next())
            normalize_row(px + walk.offset(), py + r * n, n, e, formula);
    });
}

void run_any(const at::Tensor& x, at::Tensor& y, double eps, Bf16Formula formula) {
    if (x.scalar_type() == at::kFloat)
        run<float>(x, y, eps, formula);
    else
        run<uint16_t>(x, y, eps, formula);
}

bool shape_fits(const at::Tensor& x) {
    if (!x.device().is_cpu() || x.dim() < 1 || x.dim() > kMaxRowDims + 1 || x.size(-1) <= 0 || x.stride(-1) != 1)
        return false;
    const auto dt = x.scalar_type();
    return (dt == at::kFloat && x.size(-1) % kLanes == 0) || (dt == at::kBFloat16 && x.size(-1) % (2 * kLanes) == 0);
}

#endif  // GLMI_X86_WEIGHT_LOADS

}  // namespace

namespace {

// Deterministic rows (the global generator stays untouched) of varied offset and scale, [64, n]:
// the roundings the probes check part from a wrong formula's in most such rows.
at::Tensor probe_rows(int64_t n) {
    const int64_t rows = 64;
    const auto i = at::arange(rows * n, at::kFloat).view({rows, n});
    const auto r = at::arange(rows, at::kFloat).view({rows, 1});
    return at::sin(i * 0.37 + r) * (r * 0.7 + 0.01) + at::cos(r * 1.3) * 5;
}

// Whether the loop gives at::layer_norm's bits on probe rows of every width here, in x's dtype.
bool loop_matches(at::ScalarType dtype, Bf16Formula formula) {
#ifdef GLMI_X86_WEIGHT_LOADS
    c10::InferenceMode guard;
    for (int64_t n : {8, 16, 64, 128, 512, 1536, 2048, 4096, 13696}) {
        if (dtype == at::kBFloat16 && n % 16 != 0) continue;
        const auto x = probe_rows(n).to(dtype);
        auto y = at::empty_like(x);
        run_any(x, y, 1e-5, formula);
        const auto want = at::layer_norm(x, {n}, {}, {}, 1e-5);
        const auto bits = dtype == at::kFloat ? at::kInt : at::kShort;
        if (!at::equal(y.view(bits), want.view(bits))) return false;
    }
    return true;
#else
    (void)dtype, (void)formula;
    return false;
#endif
}

// The probe of bf16 rows: the formula with which the loop gives LibTorch's bits, or kNone.
Bf16Formula bf16_formula() {
#ifdef GLMI_X86_WEIGHT_LOADS
    if (!weight_loads::cpu_has_avx2_fma_f16c()) return Bf16Formula::kNone;
    for (auto f : {Bf16Formula::kFusedMultiplyAdd, Bf16Formula::kMultiplyThenAdd})
        if (loop_matches(at::kBFloat16, f)) return f;
#endif
    return Bf16Formula::kNone;
}

// LibTorch picks its CPU kernels once per process (ATEN_CPU_CAPABILITY may lower the pick), so one
// probe per dtype decides for the process.
Bf16Formula process_bf16_formula() {
    static const Bf16Formula f = bf16_formula();
    return f;
}

}  // namespace

namespace detail {

bool layer_norm_loop_matches_libtorch() {
#ifdef GLMI_X86_WEIGHT_LOADS
    return weight_loads::cpu_has_avx2_fma_f16c() && loop_matches(at::kFloat, Bf16Formula::kNone);
#else
    return false;
#endif
}

const char* layer_norm_bf16_probe() {
    switch (bf16_formula()) {
        case Bf16Formula::kFusedMultiplyAdd: return "fused multiply-add";
        case Bf16Formula::kMultiplyThenAdd: return "multiply, then add";
        default: return "none";
    }
}

}  // namespace detail

bool layer_norm_by_kernel(const at::Tensor& x) {
#ifdef GLMI_X86_WEIGHT_LOADS
    if (!shape_fits(x) || !fused_kernels_run_on(x.device(), x.scalar_type())) return false;
    if (x.scalar_type() == at::kBFloat16) return process_bf16_formula() != Bf16Formula::kNone;
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
        auto y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
        run_any(x, y, eps, process_bf16_formula());
        return y;
    }
#endif
    return at::layer_norm(x, {x.size(-1)}, {}, {}, eps);
}

}  // namespace glmimage::kernels
