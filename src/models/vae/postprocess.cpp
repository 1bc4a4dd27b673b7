#include "models/vae/postprocess.h"

#include "core/check.h"

namespace glmimage {

using detail::str_cat;

namespace {
void check_images(const at::Tensor& x) {
    if (!x.defined()) throw InputError("vae postprocess: no tensor given");
    if (x.dim() != 4) throw InputError(str_cat("vae postprocess: expected a 4-D (batch, channels, height, width) tensor, got ",
                                               x.dim(), "-D"));
    if (!at::isFloatingType(x.scalar_type()))
        throw InputError(str_cat("vae postprocess: expected a floating tensor, got ", x.scalar_type()));
}
}  // namespace

at::Tensor denormalize_image(const at::Tensor& images) {
    check_images(images);
    return (images * 0.5 + 0.5).clamp(0, 1);
}

at::Tensor postprocess_to_float(const at::Tensor& images) {
    // To the host before the widening: half the bytes cross from a GPU in bf16. A permuted view:
    // the uint8 path below lays it out once, in its last copy, and kFloatImages' caller once.
    return denormalize_image(images).cpu().permute({0, 2, 3, 1}).to(at::kFloat);
}

at::Tensor postprocess_to_uint8(const at::Tensor& images) {
    const auto y = postprocess_to_float(images);
    // numpy: (images * 255).round().astype("uint8") on float32; both round half to even.
    return at::round(y * 255).to(at::kByte).contiguous();
}

}  // namespace glmimage
