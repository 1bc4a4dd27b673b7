// Turning safetensors entries into ATen tensors: zero-copy views of the mapping when the
// dtype is kept, casts when asked.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "io/safetensors.h"
#include "io/weight_index.h"

namespace glmimage::io {

at::ScalarType to_scalar_type(DType d);
// Name as safetensors spells it ("BF16"), for messages and manifests.
const char* scalar_type_name(at::ScalarType t);

// A CPU tensor over the file's bytes; the mapping stays alive as long as the tensor (or
// any view of it) does. Falls back to a copy when the data is not aligned for its type.
at::Tensor tensor_view(const TensorRef& ref);

// The tensor in `dtype` (kept if nullopt) on `device`; copies only when it must.
at::Tensor load_tensor(const TensorRef& ref, std::optional<at::ScalarType> dtype, at::Device device);

// The floating dtype most tensors of the checkpoint use (ties: the first in name order);
// nullopt when there is no floating tensor.
std::optional<at::ScalarType> dominant_float_dtype(const WeightIndex& weights);

}  // namespace glmimage::io
