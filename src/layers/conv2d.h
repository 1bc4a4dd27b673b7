// 2-D convolution with bias, weights [out, in, k, k].
#pragma once

#include "layers/param_module.h"

namespace glmimage {

class Conv2d : public ParamModule {
  public:
    Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x) const;

    at::Tensor weight;
    at::Tensor bias;
    int64_t stride;
    int64_t padding;
};

}  // namespace glmimage
