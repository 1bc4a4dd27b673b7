#include "kernels/mul_add.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/cuda_launch.h"
#include "kernels/fused_math_cpu.h"
#include "kernels/fused_switch.h"
#include "kernels/profile_scope.h"
#include "kernels/x86_weight_loads.h"
#ifdef GLMI_WITH_CUDA_KERNELS
#include "kernels/cuda/dit_fused_cuda.h"
#endif

// Built with -ffp-contract=off (CMakeLists.txt): LibTorch rounds the product before the sum.

namespace glmimage::kernels {

namespace {

// One row: y = a * g + c. The same loop is built twice: for the library's generic target,
// and for AVX2 where the CPU has it, where the compiler turns the per-element formula into 8-wide
// vector code (the same IEEE operations and integer rounding per lane, so the same bits).
template <typename T>
[[gnu::always_inline]] inline void mul_add_row(const T* a, const T* g, const T* c, T* y, int64_t n) {
    for (int64_t d = 0; d < n; ++d) y[d] = fused::mul_add(a[d], g[d], c[d]);
}

#ifdef GLMI_X86_WEIGHT_LOADS
template <typename T>
GLMI_AVX2 void mul_add_row_avx2(const T* a, const T* g, const T* c, T* y, int64_t n) {
    mul_add_row(a, g, c, y, n);  // inlined here, so compiled for AVX2
}
#endif

template <typename T>
void run(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c, at::Tensor y) {  // y: a handle to write through
    const int64_t B = a.size(0), S = a.size(1), D = a.size(2);
    const bool g_per_sample = g.size(0) == B && B > 1;
    const bool c_full = c.sizes() == a.sizes();
    const bool c_per_sample = !c_full && c.size(0) == B && B > 1;
    const int64_t sa0 = a.stride(0), sa1 = a.stride(1);  // a's and y's rows may sit in longer sequences
    const int64_t sy0 = y.stride(0), sy1 = y.stride(1);
    const T* pa = fused::data<T>(a);
    const T* pg = fused::data<T>(g);
    const T* pc = fused::data<T>(c);
    T* py = fused::data<T>(y);
#ifdef GLMI_WITH_CUDA_KERNELS
    if constexpr (!std::is_same_v<T, c10::Half>) {
        if (a.is_cuda()) {
            const cuda::MulAddArgs m{B, S, D, sa0, sa1, g_per_sample, c_full, c_per_sample, sy0, sy1};
            launch_on(a, "mul_add", [&](void* s) { return cuda::launch_mul_add(pa, pg, pc, py, m, s); });
            return;
        }
    }
#endif
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / (3 * D * static_cast<int64_t>(sizeof(T))));
#ifdef GLMI_X86_WEIGHT_LOADS
    const auto row = weight_loads::cpu_has_avx2_fma_f16c() ? &mul_add_row_avx2<T> : &mul_add_row<T>;
#else
    const auto row = &mul_add_row<T>;
#endif
    parallel_for_cpu(B * S, grain, [&](int64_t begin, int64_t end) {
        for (int64_t bs = begin; bs < end; ++bs) {
            const int64_t b = bs / S, s = bs % S;
            const T* av = pa + b * sa0 + s * sa1;
            const T* gv = pg + (g_per_sample ? b * D : 0);
            const T* cv = c_full ? pc + bs * D : pc + (c_per_sample ? b * D : 0);
            T* yv = py + b * sy0 + s * sy1;
            row(av, gv, cv, yv, D);
        }
    });
}

bool vector_of(const at::Tensor& v, const at::Tensor& a) {
    return v.dim() == 3 && (v.size(0) == a.size(0) || v.size(0) == 1) && v.size(1) == 1 && v.size(2) == a.size(2);
}

}  // namespace

bool mul_add_takes(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c) {
    const auto t = a.scalar_type();
    if (!fused_kernels_run_on(a.device(), t) || (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf)) return false;
    for (const auto* x : {&g, &c})
        if (x->device() != a.device() || x->scalar_type() != t) return false;
    if (a.dim() != 3 || a.stride(2) != 1 || !g.is_contiguous() || !c.is_contiguous()) return false;
    return vector_of(g, a) && (c.sizes() == a.sizes() || vector_of(c, a));
}

bool mul_add_into_takes(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c, const at::Tensor& y) {
    return mul_add_takes(a, g, c) && y.device() == a.device() && y.scalar_type() == a.scalar_type() &&
           y.sizes() == a.sizes() && y.stride(2) == 1;
}

void mul_add_into(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c, const at::Tensor& y) {
    GLMI_CHECK(mul_add_into_takes(a, g, c, y), "mul_add: unsupported inputs ", a.sizes(), " ", a.scalar_type(), " on ",
               a.device(), ", ", g.sizes(), " ", g.scalar_type(), ", ", c.sizes(), " ", c.scalar_type(), " into ",
               y.sizes(), " ", y.strides(), " ", y.scalar_type(), " on ", y.device());
    if (y.numel() == 0) return;
    GLMI_KERNEL_SCOPE("glmimage::mul_add", a, g, c);
    fused::dispatch(a.scalar_type(), /*with_half=*/true, [&](auto tag) { run<decltype(tag)>(a, g, c, y); });
}

at::Tensor mul_add(const at::Tensor& a, const at::Tensor& g, const at::Tensor& c) {
    GLMI_CHECK(mul_add_takes(a, g, c), "mul_add: unsupported inputs ", a.sizes(), " ", a.scalar_type(), " on ",
               a.device(), ", ", g.sizes(), " ", g.scalar_type(), ", ", c.sizes(), " ", c.scalar_type());
    auto y = at::empty(a.sizes(), a.options().memory_format(at::MemoryFormat::Contiguous));
    mul_add_into(a, g, c, y);
    return y;
}

}  // namespace glmimage::kernels
