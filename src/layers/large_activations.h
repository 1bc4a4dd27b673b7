// How the layers work through activations of the VAE's size on the CPU (hundreds of MiB to GiBs at
// 1024²): in bands, so that LibTorch never holds a whole input's copy or a whole second result at
// once, and in place where the tensor handed over is referenced by nothing else. Each banded form
// runs only where a run-time check, once per dtype, finds that it gives the whole op's bits: whether
// it does is LibTorch's and the CPU's business (layers/conv2d.cpp, layers/norms.cpp).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

namespace glmimage::large_activations {

constexpr int64_t kBandedFromBytes = int64_t{128} << 20;  // inputs this large are worked in bands
constexpr int64_t kBandBytes = int64_t{8} << 20;          // of about this much input each

// `work_element_size`: the bytes per element of x that the whole op would hold beside x, where that
// is more than x's own (a bf16 convolution computed in float32 widens its input: layers/conv2d.cpp).
inline bool is_large_cpu_activation(const at::Tensor& x, int64_t work_element_size = 0) {
    const int64_t element = std::max<int64_t>(work_element_size, static_cast<int64_t>(x.element_size()));
    return x.is_cpu() && x.numel() * element >= kBandedFromBytes;
}

// Whether writing into x changes nothing that anything else can see: the only reference to the only
// tensor on its memory (a layer's input handed over with std::move, no view of it alive), and no
// autograd history to keep, no element aliasing another (an expanded tensor). A tensor the caller
// still holds, or a view of one, is never written.
inline bool is_sole_reference(const at::Tensor& x) {
    return x.defined() && x.has_storage() && x.use_count() == 1 && x.storage().use_count() == 1 &&
           !x.requires_grad() && x.is_non_overlapping_and_dense();
}

// check(dtype), run the first time a dtype asks and remembered: false for non-floating dtypes.
template <bool (*check)(at::ScalarType)>
bool once_per_dtype(at::ScalarType dtype) {
    switch (dtype) {
        case at::kBFloat16: {
            static const bool bf16 = check(at::kBFloat16);
            return bf16;
        }
        case at::kHalf: {
            static const bool half = check(at::kHalf);
            return half;
        }
        case at::kFloat: {
            static const bool f32 = check(at::kFloat);
            return f32;
        }
        default: return false;
    }
}

}  // namespace glmimage::large_activations
