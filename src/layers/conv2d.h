// 2-D convolution with bias, weights [out, in, k, k].
#pragma once

#include "layers/param_module.h"

namespace glmimage {

class Conv2d : public ParamModule {
  public:
    Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, at::TensorOptions options);
    // By value: where the convolution runs on an NHWC copy (bf16 / fp16 on the CPU), an input
    // handed over with std::move is freed once copied, so that the two are not held together
    // with the output. The result is NCHW.
    at::Tensor forward(at::Tensor x) const;
    // x in the layout forward convolves it in. A producer that can write that layout directly (a
    // nearest upsample of an NHWC tensor is NHWC) spares forward the copy.
    at::Tensor to_input_layout(const at::Tensor& x) const;
    // Whether forward convolves x in bands of output rows (a large NCHW input on the CPU, a
    // stride-1 'same' kernel, where the bands give the whole's bits: conv2d.cpp says why).
    bool runs_in_row_bands(const at::Tensor& x) const;

    at::Tensor weight;
    at::Tensor bias;
    int64_t stride;
    int64_t padding;
};

}  // namespace glmimage
