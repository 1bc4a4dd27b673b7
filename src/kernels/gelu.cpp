#include "kernels/gelu.h"

#include <algorithm>
#include <cstdint>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/fused_switch.h"
#include "kernels/half_float_table.h"
#include "kernels/profile_scope.h"

namespace glmimage::kernels {

bool gelu_by_table(const at::Tensor& x) {
    const auto dt = x.scalar_type();
    return (dt == at::kBFloat16 || dt == at::kHalf) && x.device().is_cpu() && x.is_contiguous() &&
           fused_kernels_run_on(x.device(), dt);
}

at::Tensor gelu(const at::Tensor& x, std::string_view approximate) {
    GLMI_CHECK(approximate == "none" || approximate == "tanh", "gelu: approximate must be 'none' or 'tanh', got '",
               std::string(approximate), "'");
    if (!gelu_by_table(x)) return at::gelu(x, approximate);
    GLMI_KERNEL_SCOPE("glmimage::gelu", x);
    const uint16_t* t = half_float_table(x.scalar_type(), approximate == "tanh" ? TabledOp::gelu_tanh : TabledOp::gelu);
    auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
    const auto* in = static_cast<const uint16_t*>(x.data_ptr());
    auto* out = static_cast<uint16_t*>(y.data_ptr());
    // 2 bytes read and 2 written per element.
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / 4);
    parallel_for_cpu(x.numel(), grain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) out[i] = t[in[i]];
    });
    return y;
}

}  // namespace glmimage::kernels
