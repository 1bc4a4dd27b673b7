#include "kernels/mul_add.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "core/check.h"
#include "core/parallel.h"

// Built with -ffp-contract=off (CMakeLists.txt): LibTorch rounds the product before the sum.

namespace glmimage::kernels {

namespace {

// One token row of D elements: y = T(float(T(float(a) * float(g))) + float(c)).
template <typename T>
void row(const T* a, const T* g, const T* c, T* y, int64_t D) {
    for (int64_t d = 0; d < D; ++d) {
        const T p = static_cast<T>(static_cast<float>(a[d]) * static_cast<float>(g[d]));
        y[d] = static_cast<T>(static_cast<float>(p) + static_cast<float>(c[d]));
    }
}

template <typename T>
void run(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c, at::Tensor& y) {
    const int64_t B = a.size(0), S = a.size(1), D = a.size(2);
    const bool g_per_sample = g.size(0) == B && B > 1;
    const bool c_full = c.sizes() == a.sizes();
    const bool c_per_sample = !c_full && c.size(0) == B && B > 1;
    const int64_t sa0 = a.stride(0), sa1 = a.stride(1);  // a's rows may sit in a longer sequence
    const T* pa = a.data_ptr<T>();
    const T* pg = g.data_ptr<T>();
    const T* pc = c.data_ptr<T>();
    T* py = y.data_ptr<T>();
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / (3 * D * static_cast<int64_t>(sizeof(T))));
    parallel_for_cpu(B * S, grain, [&](int64_t begin, int64_t end) {
        for (int64_t bs = begin; bs < end; ++bs) {
            const int64_t b = bs / S, s = bs % S;
            const T* gv = pg + (g_per_sample ? b * D : 0);
            const T* cv = c_full ? pc + bs * D : pc + (c_per_sample ? b * D : 0);
            row(pa + b * sa0 + s * sa1, gv, cv, py + bs * D, D);
        }
    });
}

bool vector_of(const at::Tensor& v, const at::Tensor& a) {
    return v.dim() == 3 && (v.size(0) == a.size(0) || v.size(0) == 1) && v.size(1) == 1 && v.size(2) == a.size(2);
}

}  // namespace

bool mul_add_takes(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c) {
    const auto t = a.scalar_type();
    if (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf) return false;
    for (const auto* x : {&a, &g, &c})
        if (!x->is_cpu() || x->scalar_type() != t) return false;
    if (a.dim() != 3 || a.stride(2) != 1 || !g.is_contiguous() || !c.is_contiguous()) return false;
    return vector_of(g, a) && (c.sizes() == a.sizes() || vector_of(c, a));
}

at::Tensor mul_add(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c) {
    GLMI_CHECK(mul_add_takes(a, g, c), "mul_add: unsupported inputs ", a.sizes(), " ", a.scalar_type(), ", ",
               g.sizes(), " ", g.scalar_type(), ", ", c.sizes(), " ", c.scalar_type());
    auto y = at::empty(a.sizes(), a.options());
    if (y.numel() == 0) return y;
    switch (a.scalar_type()) {
        case at::kFloat: run<float>(a, g, c, y); break;
        case at::kBFloat16: run<c10::BFloat16>(a, g, c, y); break;
        default: run<c10::Half>(a, g, c, y); break;
    }
    return y;
}

}  // namespace glmimage::kernels
