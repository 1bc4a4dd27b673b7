#include "kernels/rotary.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "core/check.h"
#include "core/parallel.h"

// Built with -ffp-contract=off (CMakeLists.txt): a product and a sum contracted into one FMA would
// round once where LibTorch's separate mul and add round twice.

namespace glmimage::kernels {

namespace {

template <typename T>
void rotate_rows(const at::Tensor& x, const float* cos, const float* sin, int64_t skip, RotaryLayout layout, T* out) {
    const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
    const int64_t sb = x.stride(0), ss = x.stride(1), sh = x.stride(2);
    const T* base = x.data_ptr<T>();
    // Output row (b, s, h) starts at b * S*H*D + s * out_s + h * out_h.
    const bool head_major = layout == RotaryLayout::kHeadMajor;
    const int64_t out_s = head_major ? D : H * D, out_h = head_major ? S * D : D;
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / (2 * H * D * static_cast<int64_t>(sizeof(T))));
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
                for (int64_t d = 0; d < half; ++d) {
                    const float a = static_cast<float>(xr[d]) * c[d];
                    const float r = -static_cast<float>(xr[d + half]) * n[d];
                    yr[d] = static_cast<T>(a + r);
                }
                for (int64_t d = half; d < D; ++d) {
                    const float a = static_cast<float>(xr[d]) * c[d];
                    const float r = static_cast<float>(xr[d - half]) * n[d];
                    yr[d] = static_cast<T>(a + r);
                }
            }
        }
    });
}

}  // namespace

bool rotary_half_takes(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t skip) {
    const auto t = x.scalar_type();
    if (!x.is_cpu() || x.dim() != 4 || (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf)) return false;
    if (x.size(3) % 2 != 0 || x.stride(3) != 1 || skip < 0 || skip > x.size(1)) return false;
    for (const auto* tab : {&cos, &sin})
        if (!tab->is_cpu() || tab->scalar_type() != at::kFloat || !tab->is_contiguous() || tab->dim() != 2 ||
            tab->size(0) != x.size(1) - skip || tab->size(1) != x.size(3))
            return false;
    return true;
}

at::Tensor rotary_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t skip,
                       RotaryLayout layout) {
    GLMI_CHECK(rotary_half_takes(x, cos, sin, skip), "rotary_half: unsupported inputs ", x.sizes(), " ",
               x.scalar_type(), ", tables ", cos.sizes(), ", skip ", skip);
    const auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
    auto out = layout == RotaryLayout::kHeadMajor
                   ? at::empty({x.size(0), x.size(2), x.size(1), x.size(3)}, opts).transpose(1, 2)
                   : at::empty(x.sizes(), opts);
    if (out.numel() == 0) return out;
    switch (x.scalar_type()) {
        case at::kFloat:
            rotate_rows<float>(x, cos.data_ptr<float>(), sin.data_ptr<float>(), skip, layout, out.data_ptr<float>());
            break;
        case at::kBFloat16:
            rotate_rows<c10::BFloat16>(x, cos.data_ptr<float>(), sin.data_ptr<float>(), skip, layout,
                                       out.data_ptr<c10::BFloat16>());
            break;
        default:
            rotate_rows<c10::Half>(x, cos.data_ptr<float>(), sin.data_ptr<float>(), skip, layout,
                                   out.data_ptr<c10::Half>());
            break;
    }
    return out;
}

}  // namespace glmimage::kernels
