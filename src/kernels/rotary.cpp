#include "kernels/rotary.h"

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

// Built with -ffp-contract=off (CMakeLists.txt): a product and a sum contracted into one FMA would
// round once where LibTorch's separate mul and add round twice.

namespace glmimage::kernels {

namespace {

// One head's row of D channels: x * cos + rotate_half(x) * sin. Built twice, as mul_add.cpp's
// row loop: for the generic target, and for AVX2 where the compiler vectorizes the same formula.
template <typename T>
[[gnu::always_inline]] inline void rope_row(const T* x, const float* cos, const float* sin, T* y, int64_t D) {
    const int64_t half = D / 2;
    for (int64_t d = 0; d < half; ++d) y[d] = fused::rope_channel(x[d], -fused::to_float(x[d + half]), cos[d], sin[d]);
    for (int64_t d = half; d < D; ++d) y[d] = fused::rope_channel(x[d], fused::to_float(x[d - half]), cos[d], sin[d]);
}

#ifdef GLMI_X86_WEIGHT_LOADS
template <typename T>
GLMI_AVX2 void rope_row_avx2(const T* x, const float* cos, const float* sin, T* y, int64_t D) {
    rope_row(x, cos, sin, y, D);  // inlined here, so compiled for AVX2
}
#endif

template <typename T>
void rotate_rows(const at::Tensor& x, const float* cos, const float* sin, int64_t skip, RotaryLayout layout, T* out) {
    const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3);
    const int64_t sb = x.stride(0), ss = x.stride(1), sh = x.stride(2);
    const T* base = fused::data<T>(x);
    // Output row (b, s, h) starts at b * S*H*D + s * out_s + h * out_h.
    const bool head_major = layout == RotaryLayout::kHeadMajor;
    const int64_t out_s = head_major ? D : H * D, out_h = head_major ? S * D : D;
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / (2 * H * D * static_cast<int64_t>(sizeof(T))));
#ifdef GLMI_X86_WEIGHT_LOADS
    const auto row = weight_loads::cpu_has_avx2_fma_f16c() ? &rope_row_avx2<T> : &rope_row<T>;
#else
    const auto row = &rope_row<T>;
#endif
    parallel_for_cpu(B * S, grain, [&](int64_t begin, int64_t end) {
        for (int64_t bs = begin; bs < end; ++bs) {
            const int64_t b = bs / S, s = bs % S;
            for (int64_t h = 0; h < H; ++h) {
                const T* xr = base + b * sb + s * ss + h * sh;
                T* yr = out + b * S * H * D + s * out_s + h * out_h;
                if (s < skip) {
                    std::copy(xr, xr + D, yr);
                    continue;
                }
                const float* c = cos + (s - skip) * D;
                const float* n = sin + (s - skip) * D;
                row(xr, c, n, yr, D);
            }
        }
    });
}

}  // namespace

bool rotary_half_takes(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t skip) {
    const auto t = x.scalar_type();
    if (!fused_kernels_run_on(x.device(), t) || x.dim() != 4 || (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf))
        return false;
    if (x.size(3) % 2 != 0 || x.stride(3) != 1 || skip < 0 || skip > x.size(1)) return false;
    for (const auto* tab : {&cos, &sin})
        if (tab->device() != x.device() || tab->scalar_type() != at::kFloat || !tab->is_contiguous() ||
            tab->dim() != 2 || tab->size(0) != x.size(1) - skip || tab->size(1) != x.size(3))
            return false;
    return true;
}

at::Tensor rotary_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t skip,
                       RotaryLayout layout) {
    GLMI_CHECK(rotary_half_takes(x, cos, sin, skip), "rotary_half: unsupported inputs ", x.sizes(), " ",
               x.scalar_type(), " on ", x.device(), ", tables ", cos.sizes(), ", skip ", skip);
    const auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
    const bool head_major = layout == RotaryLayout::kHeadMajor;
    auto out = head_major ? at::empty({x.size(0), x.size(2), x.size(1), x.size(3)}, opts).transpose(1, 2)
                          : at::empty(x.sizes(), opts);
    if (out.numel() == 0) return out;
    GLMI_KERNEL_SCOPE("glmimage::rotary_half", x, cos, sin);
    fused::dispatch(x.scalar_type(), /*with_half=*/true, [&](auto tag) {
        using T = decltype(tag);
#ifdef GLMI_WITH_CUDA_KERNELS
        if constexpr (!std::is_same_v<T, c10::Half>) {
            if (x.is_cuda()) {
                const cuda::RopeArgs a{x.size(0),   x.size(1),   x.size(2), x.size(3), x.stride(0),
                                       x.stride(1), x.stride(2), skip,      head_major};
                launch_on(x, "rope", [&](void* s) {
                    return cuda::launch_rope(fused::data<T>(x), fused::data<float>(cos), fused::data<float>(sin),
                                             fused::data<T>(out), a, s);
                });
                return;
            }
        }
#endif
        rotate_rows<T>(x, fused::data<float>(cos), fused::data<float>(sin), skip, layout, fused::data<T>(out));
    });
    return out;
}

}  // namespace glmimage::kernels
