#include "kernels/decoder_fused.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/fused_math_cpu.h"
#include "kernels/cuda_launch.h"
#include "kernels/fused_switch.h"
#include "kernels/half_float_table.h"
#include "kernels/profile_scope.h"
#include "kernels/row_sum.h"
#ifdef GLMI_WITH_CUDA_KERNELS
#include "kernels/cuda/decoder_fused_cuda.h"
#endif

// Built with -ffp-contract=off (CMakeLists.txt): LibTorch rounds each product before the sum.

namespace glmimage::kernels {

namespace {

using fused::data;

// Calls f(T{}) with T the storage type of a float32 or bfloat16 tensor.
template <typename F>
void dispatch(at::ScalarType dtype, F&& f) {
    fused::dispatch(dtype, /*with_half=*/false, std::forward<F>(f));
}

// Rows per parallel piece of a loop that streams `bytes_per_row`.
int64_t grain_for(int64_t bytes_per_row) {
    return std::max<int64_t>(1, parallel_min_piece_bytes() / std::max<int64_t>(bytes_per_row, 1));
}

void check_rows(const at::Tensor& x, const at::Tensor& weight, const char* what) {
    GLMI_CHECK(x.is_contiguous() && weight.is_contiguous() && weight.dim() == 1 && x.dim() >= 1 &&
                   x.size(-1) == weight.size(0) && x.scalar_type() == weight.scalar_type() &&
                   x.device() == weight.device(),
               what, ": x ", x.sizes(), " ", x.scalar_type(), " must be contiguous over a weight of its last size, got ",
               weight.sizes(), " ", weight.scalar_type());
}

// The float32 squares of a row of D values summed in LibTorch's order (row_sum.h), squared as they
// are read: the norms' own sums where !norm_needs_squares.
template <typename T>
float sum_of_squares(const T* row, int64_t D) {
    return libtorch_row_sum([row](int64_t d) { return fused::square(row[d]); }, D);
}

// LibTorch's vector loop gives a 16-bit float's silu the table's bits in runs of whole pairs of
// its vectors: 16 or 32 elements (AVX2, AVX-512); a multiple of 64 covers both.
constexpr int64_t kSiluTableRun = 64;

// act = up * silu(gate) row by row: silu by LibTorch's table (half_float_table.h), the product in
// float rounded once, as LibTorch's mul of two 16-bit tensors (the product of two such values is
// exact in float).
template <typename T>
void silu_mul_rows(const at::Tensor& gate_up, at::Tensor& act, int64_t I) {
    static_assert(sizeof(T) == sizeof(uint16_t), "a 16-bit float");
    const uint16_t* silu = half_float_table(gate_up.scalar_type(), TabledOp::silu);
    const T* pg = data<T>(gate_up);
    T* pa = data<T>(act);
    parallel_for_cpu(act.numel() / I, grain_for(I * 3 * sizeof(T)), [&](int64_t b, int64_t e) {
        for (int64_t row = b; row < e; ++row) {
            const T *gate = pg + row * 2 * I, *up = gate + I;
            T* out = pa + row * I;
            for (int64_t i = 0; i < I; ++i) {
                uint16_t g;
                T s;
                std::memcpy(&g, gate + i, sizeof(g));
                std::memcpy(&s, silu + g, sizeof(s));
                out[i] = fused::product(up[i], s);
            }
        }
    });
}

}  // namespace

bool decoder_fused_available(const at::Device& device, at::ScalarType dtype) {
    return (dtype == at::kFloat || dtype == at::kBFloat16) && fused_kernels_run_on(device, dtype);
}

bool silu_mul_by_table(const at::Tensor& gate_up) {
    const auto dt = gate_up.scalar_type();
    return (dt == at::kBFloat16 || dt == at::kHalf) && gate_up.device().is_cpu() && gate_up.is_contiguous() &&
           gate_up.dim() >= 1 && gate_up.size(-1) % (2 * kSiluTableRun) == 0 && gate_up.numel() > 0 &&
           fused_kernels_run_on(gate_up.device(), dt);
}

bool norm_needs_squares(const at::Tensor& x) {
    return !(x.device().is_cpu() && x.dim() >= 1 && row_sum_matches_libtorch(x.size(-1)));
}

at::Tensor squares(const at::Tensor& x) {
    GLMI_CHECK(x.is_contiguous() && x.dim() >= 1, "squares: x must be contiguous, got ", x.sizes());
    auto sq = at::empty(x.sizes(), x.options().dtype(at::kFloat));
    const int64_t n = x.numel();
    if (n == 0) return sq;
    GLMI_KERNEL_SCOPE("glmimage::squares", x);
    dispatch(x.scalar_type(), [&](auto tag) {
        using T = decltype(tag);
#ifdef GLMI_WITH_CUDA_KERNELS
        if (x.is_cuda()) {
            const int64_t D = x.size(-1);
            launch_on(x, "squares", [&](void* s) { return cuda::launch_squares(data<T>(x), data<float>(sq), n / D, D, s); });
            return;
        }
#endif
        const T* px = data<T>(x);
        float* ps = data<float>(sq);
        parallel_for_cpu(n, grain_for(sizeof(T) + sizeof(float)), [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) ps[i] = fused::square(px[i]);
        });
    });
    return sq;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& sq, const at::Tensor& weight, double eps) {
    check_rows(x, weight, "rms_norm");
    const bool own_sums = !norm_needs_squares(x);  // the CPU: x squared and summed as it is read
    GLMI_CHECK(own_sums || (sq.defined() && sq.sizes() == x.sizes() && sq.scalar_type() == at::kFloat),
               "rms_norm: squares must be float32 ", x.sizes(), ", got ", sq.defined() ? sq.sizes() : at::IntArrayRef{},
               " ", sq.defined() ? sq.scalar_type() : at::ScalarType::Undefined);
    const int64_t D = x.size(-1), rows = D ? x.numel() / D : 0;
    auto y = at::empty_like(x);
    if (x.numel() == 0) return y;
    GLMI_KERNEL_SCOPE("glmimage::rms_norm", x, weight);
    dispatch(x.scalar_type(), [&](auto tag) {
        using T = decltype(tag);
#ifdef GLMI_WITH_CUDA_KERNELS
        if (x.is_cuda()) {
            const auto mean = sq.mean(-1, /*keepdim=*/true);
            launch_on(x, "rms_scale", [&](void* s) {
                return cuda::launch_rms_scale(data<T>(x), data<float>(mean), data<T>(weight), static_cast<float>(eps),
                                              data<T>(y), rows, D, s);
            });
            return;
        }
#endif
        // The mean's bits are LibTorch's sum's (inverse_rms_from_sum): row_sum.h's loop over x's
        // squares where it matches that sum, else LibTorch's reduction of the stored squares.
        const auto sums = own_sums ? at::Tensor() : sq.sum(-1);
        const T *px = data<T>(x), *pw = data<T>(weight);
        const float* ps = own_sums ? nullptr : data<float>(sums);
        T* py = data<T>(y);
        parallel_for_cpu(rows, grain_for(D * 2 * sizeof(T)), [&](int64_t b, int64_t e) {
            for (int64_t row = b; row < e; ++row) {
                const float r = fused::inverse_rms_from_sum(own_sums ? sum_of_squares(px + row * D, D) : ps[row], D, eps);
                for (int64_t d = 0; d < D; ++d) py[row * D + d] = fused::rms_scale(px[row * D + d], r, pw[d]);
            }
        });
    });
    return y;
}

ResidualNorm residual_rms_norm(const at::Tensor& residual, const at::Tensor& h, const at::Tensor& weight, double eps) {
    check_rows(h, weight, "residual_rms_norm");
    GLMI_CHECK(residual.sizes() == h.sizes() && residual.is_contiguous() && residual.scalar_type() == h.scalar_type() &&
                   residual.device() == h.device(),
               "residual_rms_norm: the residual ", residual.sizes(), " must match h ", h.sizes());
    const int64_t D = h.size(-1), rows = D ? h.numel() / D : 0;
    const bool own_sums = !norm_needs_squares(h);  // the CPU: h squared and summed as it is read
    ResidualNorm res{at::empty_like(h),
                     own_sums ? at::Tensor() : at::empty(h.sizes(), h.options().dtype(at::kFloat))};
    if (h.numel() == 0) return res;
    GLMI_KERNEL_SCOPE("glmimage::residual_rms_norm", residual, h, weight);
    dispatch(h.scalar_type(), [&](auto tag) {
        using T = decltype(tag);
#ifdef GLMI_WITH_CUDA_KERNELS
        if (h.is_cuda()) {
            const auto mean = squares(h).mean(-1, /*keepdim=*/true);
            launch_on(h, "residual_rms_scale", [&](void* s) {
                return cuda::launch_residual_rms_scale(data<T>(residual), data<T>(h), data<float>(mean), data<T>(weight),
                                                       static_cast<float>(eps), data<T>(res.out),
                                                       data<float>(res.out_squares), rows, D, s);
            });
            return;
        }
#endif
        // h's squares summed as they are read where row_sum.h's loop matches LibTorch's sum, else
        // stored and summed by LibTorch.
        const auto sums = own_sums ? at::Tensor() : squares(h).sum(-1);
        const T *pres = data<T>(residual), *ph = data<T>(h), *pw = data<T>(weight);
        const float* psum = own_sums ? nullptr : data<float>(sums);
        T* po = data<T>(res.out);
        float* ps = own_sums ? nullptr : data<float>(res.out_squares);
        parallel_for_cpu(rows, grain_for(D * (3 * sizeof(T) + sizeof(float))), [&](int64_t b, int64_t e) {
            for (int64_t row = b; row < e; ++row) {
                const float r =
                    fused::inverse_rms_from_sum(own_sums ? sum_of_squares(ph + row * D, D) : psum[row], D, eps);
                for (int64_t d = 0; d < D; ++d) {
                    const int64_t i = row * D + d;
                    const T y = fused::sum(pres[i], fused::rms_scale(ph[i], r, pw[d]));
                    po[i] = y;
                    if (ps) ps[i] = fused::square(y);
                }
            }
        });
    });
    return res;
}

at::Tensor rotary_qkv_to_cache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                               const at::Tensor& sin, int64_t head_dim, const at::Tensor& slot, int64_t slot0,
                               at::Tensor& cache_k, at::Tensor& cache_v) {
    const int64_t D = head_dim;
    GLMI_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && D > 0 && q.size(2) % D == 0 && k.size(2) % D == 0 &&
                   v.sizes() == k.sizes() && q.size(0) == k.size(0) && q.size(1) == k.size(1),
               "rotary_qkv_to_cache: q, k, v must be [B, S, heads * ", D, "], got ", q.sizes(), ", ", k.sizes(), ", ",
               v.sizes());
    const int64_t B = q.size(0), S = q.size(1), hq = q.size(2) / D, hkv = k.size(2) / D;
    for (const auto* t : {&q, &k, &v})
        GLMI_CHECK(t->stride(2) == 1 && t->stride(0) == S * t->stride(1) && t->scalar_type() == q.scalar_type() &&
                       t->device() == q.device(),
                   "rotary_qkv_to_cache: q, k, v must have contiguous rows, one token after the other");
    const int64_t q_row = q.stride(1), k_row = k.stride(1), v_row = v.stride(1);
    const int64_t rd = cos.size(-1);
    GLMI_CHECK(cos.dim() == 3 && cos.size(0) == B && cos.size(1) == S && rd % 2 == 0 && rd <= D &&
                   sin.sizes() == cos.sizes() && sin.strides() == cos.strides() && cos.stride(2) == 1 &&
                   cos.scalar_type() == q.scalar_type() && cos.device() == q.device(),
               "rotary_qkv_to_cache: cos/sin must be [B, S, even rd <= head_dim] in q's dtype, got ", cos.sizes());
    for (const auto* c : {&cache_k, &cache_v})
        GLMI_CHECK(c->dim() == 4 && c->is_contiguous() && c->size(0) == B && c->size(1) == hkv && c->size(3) == D &&
                       c->scalar_type() == q.scalar_type() && c->device() == q.device(),
                   "rotary_qkv_to_cache: the caches must be contiguous [B, ", hkv, ", capacity, ", D, "], got ",
                   c->sizes());
    const int64_t cap = cache_k.size(2);
    GLMI_CHECK(cache_v.size(2) == cap, "rotary_qkv_to_cache: the key and value caches differ in capacity");
    if (slot.defined())
        GLMI_CHECK(slot.numel() == 1 && slot.scalar_type() == at::kLong && slot.device() == q.device() && S == 1,
                   "rotary_qkv_to_cache: a slot tensor is one long on the cache's device, for one token");
    else
        GLMI_CHECK(slot0 >= 0 && slot0 + S <= cap, "rotary_qkv_to_cache: slots [", slot0, ", ", slot0 + S,
                   ") exceed the capacity ", cap);
    auto q_out = at::empty({B, hq, S, D}, q.options());
    if (q_out.numel() == 0) return q_out;
    GLMI_KERNEL_SCOPE("glmimage::rotary_qkv_to_cache", q, k, v);
    dispatch(q.scalar_type(), [&](auto tag) {
        using T = decltype(tag);
        const T *pq = data<T>(q), *pk = data<T>(k), *pv = data<T>(v), *pc = data<T>(cos), *ps = data<T>(sin);
        T *po = data<T>(q_out), *pck = data<T>(cache_k), *pcv = data<T>(cache_v);
#ifdef GLMI_WITH_CUDA_KERNELS
        if (q.is_cuda()) {
            const cuda::RotaryQkvArgs a{B, S, hq, hkv, D, rd, cap, q_row, k_row, v_row, cos.stride(0), cos.stride(1),
                                        slot.defined() ? slot.data_ptr<int64_t>() : nullptr, slot0};
            launch_on(q, "rotary_qkv",
                      [&](void* s) { return cuda::launch_rotary_qkv(pq, pk, pv, pc, ps, po, pck, pcv, a, s); });
            return;
        }
#endif
        const int64_t base = slot.defined() ? slot.item<int64_t>() : slot0;
        GLMI_CHECK(base >= 0 && base + S <= cap, "rotary_qkv_to_cache: slot ", base, " outside the capacity ", cap);
        const int64_t half = rd / 2, heads = hq + 2 * hkv, cs_b = cos.stride(0), cs_s = cos.stride(1);
        parallel_for_cpu(B * S * heads, grain_for(D * 2 * sizeof(T)), [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
                const int64_t head = i % heads, s = (i / heads) % S, b = i / heads / S;
                const int64_t token = b * S + s;
                if (head >= hq + hkv) {
                    const int64_t h = head - hq - hkv;
                    const T* x = pv + token * v_row + h * D;
                    std::copy(x, x + D, pcv + ((b * hkv + h) * cap + base + s) * D);
                    continue;
                }
                const bool is_q = head < hq;
                const int64_t h = is_q ? head : head - hq;
                const T* x = is_q ? pq + token * q_row + h * D : pk + token * k_row + h * D;
                T* y = is_q ? po + ((b * hq + h) * S + s) * D : pck + ((b * hkv + h) * cap + base + s) * D;
                const T* c = pc + b * cs_b + s * cs_s;
                const T* sn = ps + b * cs_b + s * cs_s;
                for (int64_t d = 0; d < half; ++d) y[d] = fused::rotary(x[d], fused::negate(x[d + half]), c[d], sn[d]);
                for (int64_t d = half; d < rd; ++d) y[d] = fused::rotary(x[d], x[d - half], c[d], sn[d]);
                std::copy(x + rd, x + D, y + rd);
            }
        });
    });
    return q_out;
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
    GLMI_CHECK(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0, "silu_mul: gate_up must be [..., 2I], got ",
               gate_up.sizes());
    const int64_t I = gate_up.size(-1) / 2;
#ifdef GLMI_WITH_CUDA_KERNELS
    if (gate_up.is_cuda() && gate_up.is_contiguous() && decoder_fused_available(gate_up.device(), gate_up.scalar_type())) {
        GLMI_KERNEL_SCOPE("glmimage::silu_mul", gate_up);
        auto sizes = gate_up.sizes().vec();
        sizes.back() = I;
        auto act = at::empty(sizes, gate_up.options());
        if (act.numel() == 0) return act;
        dispatch(gate_up.scalar_type(), [&](auto tag) {
            using T = decltype(tag);
            launch_on(gate_up, "silu_mul",
                      [&](void* s) { return cuda::launch_silu_mul(data<T>(gate_up), data<T>(act), act.numel() / I, I, s); });
        });
        return act;
    }
#endif
    if (silu_mul_by_table(gate_up)) {
        GLMI_KERNEL_SCOPE("glmimage::silu_mul", gate_up);
        auto sizes = gate_up.sizes().vec();
        sizes.back() = I;
        auto act = at::empty(sizes, gate_up.options());
        if (gate_up.scalar_type() == at::kBFloat16)
            silu_mul_rows<fused::bf16_t>(gate_up, act, I);
        else
            silu_mul_rows<c10::Half>(gate_up, act, I);
        return act;
    }
    return gate_up.narrow(-1, I, I) * at::silu(gate_up.narrow(-1, 0, I));
}

}  // namespace glmimage::kernels
