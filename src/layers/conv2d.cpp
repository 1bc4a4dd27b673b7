#include "layers/conv2d.h"

namespace glmimage {

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride_, int64_t padding_, at::TensorOptions options)
    : ParamModule(std::move(options)), stride(stride_), padding(padding_) {
    param(weight, "weight", {out, in, kernel, kernel});
    param(bias, "bias", {out});
}

at::Tensor Conv2d::forward(const at::Tensor& x) const {
    return at::conv2d(x, weight, bias, {stride, stride}, {padding, padding});
}

}  // namespace glmimage
