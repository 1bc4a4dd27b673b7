// y = x W^T + b, weights [out, in] as in the checkpoints.
#pragma once

#include "layers/param_module.h"

namespace glmimage {

class Linear : public ParamModule {
  public:
    Linear(int64_t in, int64_t out, bool bias, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x) const { return at::linear(x, weight, bias); }

    at::Tensor weight;
    at::Tensor bias;  // undefined when the layer has none
};

}  // namespace glmimage
