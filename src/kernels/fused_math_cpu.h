// fused_math.h for the CPU loops: float16 storage too (c10::Half's own conversions, which round to
// nearest even as LibTorch's ops do), and the dispatch from a tensor's dtype to its storage type.
#pragma once

#include <ATen/ATen.h>
#include <cmath>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "core/check.h"
#include "kernels/fused_math.h"

namespace glmimage::kernels::fused {

static_assert(sizeof(c10::BFloat16) == sizeof(bf16_t), "bfloat16 storage layouts differ");

template <>
inline float to_float<c10::Half>(c10::Half x) {
    return static_cast<float>(x);
}

template <>
inline c10::Half from_float<c10::Half>(float f) {
    return c10::Half(f);
}

// rsqrt(mean + eps) of a row whose squares sum to `sum` over `n` channels, as LibTorch's CPU ops
// give it: its mean is sum_out then div_ by n (a float division), `+ eps` adds eps rounded to float,
// and its rsqrt is 1 / sqrt (both correctly rounded). Checked against the ops on 1.2 M rows each of
// n in {100, 512, 1536, 4095, 4096, 13696}, eps in {1e-5, 1e-6, 1e-12}: identical. (CUDA's rsqrt is
// rsqrtf and its mean multiplies by 1 / n: the CUDA kernels take LibTorch's mean instead.)
inline float inverse_rms_from_sum(float sum, int64_t n, double eps) {
    return 1.0f / std::sqrt(sum / static_cast<float>(n) + static_cast<float>(eps));
}

// Calls f(T{}) with T the storage type of `dtype`: float, bf16_t, or (with_half) c10::Half.
template <typename F>
void dispatch(at::ScalarType dtype, bool with_half, F&& f) {
    if (dtype == at::kFloat)
        f(float{});
    else if (dtype == at::kBFloat16)
        f(bf16_t{});
    else if (dtype == at::kHalf && with_half)
        f(c10::Half{});
    else
        GLMI_CHECK(false, "the fused kernels take float32", with_half ? ", float16" : "", " or bfloat16, not ", dtype);
}

// A tensor's storage as T (the tensor's dtype must be T's).
template <typename T>
const T* data(const at::Tensor& t) {
    return reinterpret_cast<const T*>(t.data_ptr());
}
template <typename T>
T* data(at::Tensor& t) {
    return reinterpret_cast<T*>(t.data_ptr());
}

}  // namespace glmimage::kernels::fused
