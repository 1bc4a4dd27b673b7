// y = x W^T + b, weights [out, in] as in the checkpoints. The one place every weight matmul
// goes through, so packed or quantized weights change this file and no model file.
#pragma once

#include "layers/param_module.h"

namespace glmimage {

class Linear : public ParamModule {
  public:
    Linear(int64_t in, int64_t out, bool bias, at::TensorOptions options);
    at::Tensor forward(const at::Tensor& x) const;

    // Weight-only int8: the weight becomes int8 [out, in] with one symmetric scale per output
    // channel (max |w| / 127, in the weight's dtype); the matmul then reads half the bytes of
    // bf16. On the CPU, inputs of a few rows (the AR decode) run LibTorch's _weight_int8pack_mm;
    // larger inputs (prefill, the DiT) and other devices widen the int8 weight per call.
    void quantize_int8();
    bool quantized() const { return weight.scalar_type() == at::kChar; }

    at::Tensor weight;
    at::Tensor bias;          // undefined when the layer has none
    at::Tensor weight_scale;  // [out] per-channel scales when quantized; undefined otherwise
};

}  // namespace glmimage
