#include "models/dit/rope.h"

#include "core/check.h"

namespace glmimage {

DiTRope make_dit_rope(int64_t head_dim, int64_t grid_h, int64_t grid_w, at::Device device, double theta) {
    GLMI_CHECK(head_dim % 4 == 0, "rope head_dim ", head_dim, " is not a multiple of 4");
    const int64_t dim_half = head_dim / 2;
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    // Same op sequence as the reference (float32 pow of a float32 exponent, then reciprocal),
    // so the tables match bit for bit.
    auto exponent = at::arange(0, dim_half, 2, f32).slice(0, 0, dim_half / 2) / dim_half;
    auto inv_freq = at::reciprocal(at::pow(at::Scalar(theta), exponent));
    auto freqs_h = at::outer(at::arange(grid_h, f32.dtype(at::kLong)), inv_freq);  // [h, hd/4]
    auto freqs_w = at::outer(at::arange(grid_w, f32.dtype(at::kLong)), inv_freq);  // [w, hd/4]
    auto quarter = inv_freq.size(0);
    auto freqs = at::cat({freqs_h.unsqueeze(1).expand({grid_h, grid_w, quarter}),
                          freqs_w.unsqueeze(0).expand({grid_h, grid_w, quarter})},
                         -1);
    freqs = at::cat({freqs, freqs}, -1).reshape({grid_h * grid_w, head_dim});
    return DiTRope{freqs.cos(), freqs.sin(), grid_h, grid_w};
}

at::Tensor apply_dit_rope(const at::Tensor& x, const DiTRope& rope) {
    GLMI_CHECK(x.dim() == 4 && x.size(1) == rope.cos.size(0) && x.size(3) == rope.cos.size(1),
               "rope tables ", rope.cos.sizes(), " do not fit tokens ", x.sizes());
    const int64_t half = x.size(3) / 2;
    auto cos = rope.cos.unsqueeze(0).unsqueeze(2);  // [1, S, 1, hd]
    auto sin = rope.sin.unsqueeze(0).unsqueeze(2);
    auto rotated = at::cat({-x.slice(3, half), x.slice(3, 0, half)}, -1);
    return (x.to(at::kFloat) * cos + rotated.to(at::kFloat) * sin).to(x.scalar_type());
}

at::Tensor apply_dit_rope_to_image_tokens(const at::Tensor& x, const DiTRope& rope, int64_t n_text,
                                          kernels::RotaryLayout layout) {
    if (kernels::rotary_half_takes(x, rope.cos, rope.sin, n_text))
        return kernels::rotary_half(x, rope.cos, rope.sin, n_text, layout);
    return at::cat({x.slice(1, 0, n_text), apply_dit_rope(x.slice(1, n_text), rope)}, 1);
}

}  // namespace glmimage
