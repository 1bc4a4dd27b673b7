#include "kernels/gelu.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/fused_switch.h"

namespace glmimage::kernels {

namespace {

constexpr int64_t kInputs = 65536;  // every bit pattern of a 16-bit float

// LibTorch's at::gelu of every bit pattern of `dtype`, indexed by the input's bits. Written in
// pieces below LibTorch's grain size (32768), so that each piece is one serial call of its loop,
// and a multiple of twice any vector width it has: every value comes from its vector loop.
std::vector<uint16_t> build_table(at::ScalarType dtype, std::string_view approximate) {
    constexpr int64_t kPiece = 16384;
    std::vector<uint16_t> in(kInputs), out(kInputs);
    std::iota(in.begin(), in.end(), uint16_t{0});
    const auto as_dtype = at::TensorOptions().dtype(dtype);
    const auto x = at::from_blob(in.data(), {kInputs}, as_dtype);
    auto y = at::from_blob(out.data(), {kInputs}, as_dtype);
    for (int64_t i = 0; i < kInputs; i += kPiece)
        y.narrow(0, i, kPiece).copy_(at::gelu(x.narrow(0, i, kPiece), approximate));
    return out;
}

// The table for x's dtype and the form, written on first use (once per process; thread-safe).
const std::vector<uint16_t>& table(at::ScalarType dtype, bool tanh_form) {
    if (dtype == at::kBFloat16) {
        if (tanh_form) {
            static const auto t = build_table(dtype, "tanh");
            return t;
        }
        static const auto t = build_table(dtype, "none");
        return t;
    }
    if (tanh_form) {
        static const auto t = build_table(at::kHalf, "tanh");
        return t;
    }
    static const auto t = build_table(at::kHalf, "none");
    return t;
}

}  // namespace

bool gelu_by_table(const at::Tensor& x) {
    const auto dt = x.scalar_type();
    return (dt == at::kBFloat16 || dt == at::kHalf) && x.device().is_cpu() && x.is_contiguous() &&
           fused_kernels_run_on(x.device(), dt);
}

at::Tensor gelu(const at::Tensor& x, std::string_view approximate) {
    GLMI_CHECK(approximate == "none" || approximate == "tanh", "gelu: approximate must be 'none' or 'tanh', got '",
               std::string(approximate), "'");
    if (!gelu_by_table(x)) return at::gelu(x, approximate);
    const uint16_t* t = table(x.scalar_type(), approximate == "tanh").data();
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
