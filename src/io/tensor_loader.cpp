#include "io/tensor_loader.h"

#include <map>

#include "core/check.h"

namespace glmimage::io {

at::ScalarType to_scalar_type(DType d) {
    switch (d) {
        case DType::kF64: return at::kDouble;
        case DType::kF32: return at::kFloat;
        case DType::kF16: return at::kHalf;
        case DType::kBF16: return at::kBFloat16;
        case DType::kI64: return at::kLong;
        case DType::kI32: return at::kInt;
        case DType::kI16: return at::kShort;
        case DType::kI8: return at::kChar;
        case DType::kU8: return at::kByte;
        case DType::kBool: return at::kBool;
    }
    throw Error("unknown dtype");
}

const char* scalar_type_name(at::ScalarType t) {
    switch (t) {
        case at::kDouble: return "F64";
        case at::kFloat: return "F32";
        case at::kHalf: return "F16";
        case at::kBFloat16: return "BF16";
        case at::kLong: return "I64";
        case at::kInt: return "I32";
        case at::kShort: return "I16";
        case at::kChar: return "I8";
        case at::kByte: return "U8";
        case at::kBool: return "BOOL";
        default: return "other";
    }
}

at::Tensor tensor_view(const TensorRef& ref) {
    const TensorInfo& info = *ref.info;
    const auto type = to_scalar_type(info.dtype);
    auto opts = at::TensorOptions().dtype(type).device(at::kCPU);
    auto* data = const_cast<uint8_t*>(ref.file->data(info));
    if (reinterpret_cast<uintptr_t>(data) % dtype_size(info.dtype) != 0) {
        // Misaligned typed loads are undefined behaviour for vectorized kernels: copy.
        auto out = at::empty(info.shape, opts);
        std::memcpy(out.data_ptr(), data, info.end - info.begin);
        return out;
    }
    auto keep_alive = ref.file;  // captured by the deleter: the mapping outlives the tensor
    return at::from_blob(data, info.shape, [keep_alive](void*) {}, opts);
}

at::Tensor load_tensor(const TensorRef& ref, std::optional<at::ScalarType> dtype, at::Device device) {
    at::Tensor t = tensor_view(ref);
    // To another device first, then cast there: the copy moves the file's bytes, not the
    // (possibly wider) cast ones, and no cast copy is made on the host.
    if (t.device() != device) t = t.to(device);
    if (dtype && *dtype != t.scalar_type()) t = t.to(*dtype);
    return t;
}

std::optional<at::ScalarType> dominant_float_dtype(const WeightIndex& weights) {
    std::map<DType, size_t> counts;
    for (const auto& [name, ref] : weights.tensors())
        if (dtype_is_floating(ref.info->dtype)) counts[ref.info->dtype]++;
    std::optional<DType> best;
    for (const auto& [d, n] : counts)
        if (!best || n > counts[*best]) best = d;
    if (!best) return std::nullopt;
    return to_scalar_type(*best);
}

}  // namespace glmimage::io
