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
    // channel (max |w| / 127, in the compute dtype); the matmul then reads half the bytes of
    // bf16. On the CPU, inputs of a few rows (the AR decode) run LibTorch's _weight_int8pack_mm;
    // larger inputs (prefill, the DiT) and other devices widen the int8 weight per call.
    // `compute` is the dtype the layer computes in; the weight is rounded to it first, so a weight
    // quantized from a file view (staged residency) equals one quantized after the cast.
    void quantize_int8(at::ScalarType compute);

    // fp8 (e4m3): the weight becomes float8_e4m3fn [out, in] with one float32 scale per output
    // channel (max |w| / 448); each call quantizes its input the same way per row (dynamic
    // scales) and runs LibTorch's row-wise scaled matmul (_scaled_mm: Hopper's fp8 tensor cores
    // on CUDA, oneDNN on the CPU). Both operands are rounded, so this is W8A8, not weight-only.
    // Only layers whose sizes are multiples of 16 take it (the CUDA kernel's rule, applied on
    // every device so the same layers are quantized everywhere); returns whether this one did.
    bool quantize_fp8(at::ScalarType compute);
    // Whether this LibTorch has a working fp8 row-wise scaled matmul on `device` (a small
    // product checked against the dequantized one). Empty when it does; else why not.
    static std::string fp8_unsupported_reason(const at::Device& device);

    bool quantized() const;
    // The dtypes a quantized weight is stored in (int8, fp8 e4m3).
    static bool is_quantized_dtype(at::ScalarType t);

    // For a layer whose calls are mostly one row (the AR decode step), where the speed is that of
    // reading the weight: on the CPU, inputs of at most kernels::kGemvMaxRows rows then take
    // kernels::gemv (bf16, fp32, int8 and fp8 weights, on CPUs with AVX2), and other bf16 inputs
    // of at most 8 rows LibTorch's own bf16 gemm instead of oneDNN's (linear.cpp says why). Off
    // elsewhere, so the DiT's small matmuls (time embedding, modulation) round as the reference's
    // do.
    bool few_rows_gemv = false;

    at::Tensor weight;
    at::Tensor bias;          // undefined when the layer has none
    at::Tensor weight_scale;  // per-channel scales when quantized ([out]; fp8: float32 [1, out]); else undefined
};

}  // namespace glmimage

namespace glmimage {

// Several Linears that read the same input (q/k/v) as one matmul. Their weights (and biases and
// quantization scales) are concatenated along the output dimension once, and each part's own
// tensors become views of the fused ones, so fusing adds no memory where the weights are already
// copies (a device or a cast); over zero-copy file views it would copy them, so the loader only
// fuses copies. The parts stay usable and keep their checkpoint names.
class FusedLinear {
  public:
    // Null when the parts cannot share one matmul (different inputs, dtypes, devices, biases,
    // formats) or are not all real tensors yet.
    static std::shared_ptr<const FusedLinear> fuse(const std::vector<Linear*>& parts);
    // One output per part, in the parts' order; views of one product.
    std::vector<at::Tensor> forward(const at::Tensor& x) const;

  private:
    explicit FusedLinear(std::shared_ptr<Linear> fused, std::vector<int64_t> sizes)
        : fused_(std::move(fused)), sizes_(std::move(sizes)) {}
    std::shared_ptr<Linear> fused_;
    std::vector<int64_t> sizes_;
};

}  // namespace glmimage
