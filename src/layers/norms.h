// Normalization layers with weights: LayerNorm (affine), RMSNorm, GroupNorm.
// Parameter-free LayerNorms (the DiT's AdaLN and qk norms) are plain function calls.
#pragma once

#include "layers/param_module.h"

namespace glmimage {

class LayerNorm : public ParamModule {
  public:
    LayerNorm(int64_t dim, double eps, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x) const;
    at::Tensor weight, bias;
    int64_t dim;
    double eps;
};

// y = w * cast(x_f32 * rsqrt(mean(x_f32^2) + eps)): the normalized value is rounded to the
// input dtype before the weight multiply, as the GLM and T5 references do.
class RMSNorm : public ParamModule {
  public:
    RMSNorm(int64_t dim, double eps, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x) const;
    at::Tensor weight;
    double eps;
};

class GroupNorm : public ParamModule {
  public:
    GroupNorm(int64_t groups, int64_t channels, double eps, at::TensorOptions options);
    // By value: a large CPU input handed over (std::move, nothing else referencing its memory) is
    // normalized in place, a few groups at a time, where that gives the whole op's bits (norms.cpp);
    // otherwise LibTorch's group norm into a new tensor.
    at::Tensor forward(at::Tensor x) const;
    // Whether forward normalizes x in place when it is handed over.
    bool works_in_place_on(const at::Tensor& x) const;
    at::Tensor weight, bias;
    int64_t groups;
    double eps;
};

class Embedding : public ParamModule {
  public:
    Embedding(int64_t num, int64_t dim, at::TensorOptions options);
    // Rows on the ids' device. A table kept on the host (the AR model's, when staged) is read
    // there and only the rows move.
    at::Tensor forward(const at::Tensor& ids) const {
        if (ids.device() == weight.device()) return at::embedding(weight, ids);
        return at::embedding(weight, ids.to(weight.device())).to(ids.device());
    }
    at::Tensor weight;
};

}  // namespace glmimage
