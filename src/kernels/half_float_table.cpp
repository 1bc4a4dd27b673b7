#include "kernels/half_float_table.h"

#include <numeric>
#include <vector>

#include "core/check.h"

namespace glmimage::kernels {

namespace {

constexpr int64_t kInputs = 65536;  // every bit pattern of a 16-bit float

at::Tensor run(const at::Tensor& x, TabledOp op) {
    switch (op) {
        case TabledOp::gelu: return at::gelu(x, "none");
        case TabledOp::gelu_tanh: return at::gelu(x, "tanh");
        case TabledOp::silu: return at::silu(x);
    }
    GLMI_CHECK(false, "half_float_table: unknown op");
    return {};
}

// `op` of every bit pattern of `dtype`, in pieces of 16384: below LibTorch's grain size (32768),
// so that each is one serial call of its loop, and a multiple of twice any vector width it has.
std::vector<uint16_t> build(at::ScalarType dtype, TabledOp op) {
    constexpr int64_t kPiece = 16384;
    std::vector<uint16_t> in(kInputs), out(kInputs);
    std::iota(in.begin(), in.end(), uint16_t{0});
    const auto as_dtype = at::TensorOptions().dtype(dtype);
    const auto x = at::from_blob(in.data(), {kInputs}, as_dtype);
    auto y = at::from_blob(out.data(), {kInputs}, as_dtype);
    for (int64_t i = 0; i < kInputs; i += kPiece) y.narrow(0, i, kPiece).copy_(run(x.narrow(0, i, kPiece), op));
    return out;
}

template <at::ScalarType D, TabledOp Op>
const uint16_t* table() {
    static const auto t = build(D, Op);
    return t.data();
}

template <at::ScalarType D>
const uint16_t* table_of(TabledOp op) {
    switch (op) {
        case TabledOp::gelu: return table<D, TabledOp::gelu>();
        case TabledOp::gelu_tanh: return table<D, TabledOp::gelu_tanh>();
        case TabledOp::silu: return table<D, TabledOp::silu>();
    }
    return nullptr;
}

}  // namespace

const uint16_t* half_float_table(at::ScalarType dtype, TabledOp op) {
    GLMI_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf, "half_float_table: bfloat16 or float16, not ", dtype);
    return dtype == at::kBFloat16 ? table_of<at::kBFloat16>(op) : table_of<at::kHalf>(op);
}

}  // namespace glmimage::kernels
