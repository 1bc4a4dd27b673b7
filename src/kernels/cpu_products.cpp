#include "kernels/cpu_products.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <cstdlib>  // (glibc's features.h: __GLIBC__)
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#ifdef __GLIBC__
#include <malloc.h>  // malloc_trim
#endif

#include "kernels/widen_weight.h"

namespace glmimage::kernels {

namespace {

bool ask_libtorch_for_bf16_kernels() {
    // Registered by LibTorch builds with oneDNN; without oneDNN there are no bf16 kernels either.
    const auto op = c10::Dispatcher::singleton().findSchema({"mkldnn::_is_mkldnn_bf16_supported", ""});
    if (!op) return false;
    return op->typed<bool()>().call();
}

// Whether LibTorch's linear in `dtype` (float32: MKL's sgemm; bf16: oneDNN's kernels) gives rows
// of kRowBitsMinRows and more the same bits alone as inside a longer call, with the threads it has
// now: products of 557 rows against their first and last m rows computed alone, m from
// kRowBitsMinRows to 257, at three widths. One width is not enough: on a 2-core Intel Xeon with
// AVX-512 MKL's float32 GEMM kept the rows' bits at 256 -> 256 and parted at 512 -> 256 (12 and 13
// rows), and with 2 threads at 1024 -> 256 and 2048 -> 512 (12 to 128 rows); a 2-core AVX2 EPYC
// (Zen 3) kept them at every width and row count tried, and so did oneDNN's bf16 kernels on a
// 2-core AVX-512 EPYC (Zen 4, no AMX) from 2 rows up, widths 128 to 16384, calls of up to 16400 rows.
bool probe_row_bits(at::ScalarType dtype) {
    c10::InferenceMode guard;
    auto values = [dtype](int64_t rows, int64_t cols, double phase) {
        auto v = at::arange(rows * cols, at::kFloat);  // in place: one float32 buffer at a time
        v.mul_(0.37).add_(phase).sin_();
        return v.view({rows, cols}).to(dtype);
    };
    const int64_t rows = 557;
    for (auto [k, n] : {std::pair<int64_t, int64_t>{512, 256}, {1024, 256}, {2048, 512}}) {
        const auto x = values(rows, k, 0.0), w = values(n, k, 1.0), b = values(1, n, 2.0).view({n});
        const auto all = at::linear(x, w, b);
        for (int64_t m : {kRowBitsMinRows, kRowBitsMinRows + 1, int64_t{16}, int64_t{25}, int64_t{31}, int64_t{64},
                          int64_t{128}, int64_t{257}})
            for (int64_t first : {int64_t{0}, rows - m})
                if (!at::equal(at::linear(x.narrow(0, first, m).contiguous(), w, b), all.narrow(0, first, m)))
                    return false;
    }
    return true;
}

// Weight rows widened at once: 32 MiB of float32.
constexpr int64_t kWidenedWeightBytes = int64_t{32} << 20;

}  // namespace

bool cpu_bf16_products_in_float32() {
    static const bool in_float32 = !ask_libtorch_for_bf16_kernels();
    return in_float32;
}

at::ScalarType product_compute_dtype(const at::Device& device, at::ScalarType dtype) {
    if (device.is_cpu() && dtype == at::kBFloat16 && cpu_bf16_products_in_float32()) return at::kFloat;
    return dtype;
}

at::ScalarType product_compute_dtype(const at::Tensor& x) { return product_compute_dtype(x.device(), x.scalar_type()); }

bool products_keep_row_bits(const at::Device& device, at::ScalarType dtype) {
    if (!device.is_cpu()) return false;
    const auto computed = product_compute_dtype(device, dtype);
    if (computed != at::kFloat && computed != at::kBFloat16) return false;
    // MKL and oneDNN split a product among the threads by its shape and the thread count, so the
    // answer is per thread count (probed at the first call with each).
    static std::mutex mutex;
    static std::map<std::pair<int, at::ScalarType>, bool> keep;
    const std::pair<int, at::ScalarType> key{at::get_num_threads(), computed};
    std::lock_guard<std::mutex> lock(mutex);
    const auto found = keep.find(key);
    if (found != keep.end()) return found->second;
    keep[key] = probe_row_bits(computed);
#ifdef __GLIBC__
    // The probe's products leave freed heap that glibc keeps: handed back to the system (the bf16
    // probe through oneDNN left 33 MiB more anonymous memory without this, 16 with it; the rest is
    // oneDNN's own).
    malloc_trim(0);
#endif
    return keep[key];
}

void widened_linear_into(const at::Tensor& xf, const at::Tensor& w, const at::Tensor& row_scale,
                         const at::Tensor& b, at::Tensor& y) {
    const int64_t in = w.size(1), out = w.size(0);
    const int64_t block = std::min(out, std::max<int64_t>(1, kWidenedWeightBytes / (4 * std::max<int64_t>(in, 1))));
    // One buffer for every block: a new one each time would be fresh pages from the kernel
    // (mapped and zeroed) at every block of every call.
    auto buffer = at::empty({block, in}, xf.options());
    for (int64_t n0 = 0; n0 < out; n0 += block) {
        const int64_t n = std::min(block, out - n0);
        auto wf = buffer.narrow(0, 0, n);
        widen_weight_into(w.narrow(0, n0, n), wf, row_scale.defined() ? row_scale.narrow(0, n0, n) : row_scale);
        const auto bf = b.defined() ? b.narrow(0, n0, n).to(at::kFloat) : at::Tensor();
        // the bias added in float32 and the sum rounded once, as LibTorch's addmm with beta = 1
        y.narrow(1, n0, n).copy_(at::linear(xf, wf, bf));
    }
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
    const bool int8 = w.scalar_type() == at::kChar;
    const auto dt = product_compute_dtype(x);
    if (!int8 && (dt == x.scalar_type() || w.scalar_type() != x.scalar_type())) return at::linear(x, w, b);
    // int8 values are exact in every floating dtype: in x's where the product is computed there
    if (int8 && !(x.is_cpu() && dt == at::kFloat)) return at::linear(x, widen_weight(w, x.scalar_type()), b);
    // computed in float32: the weight widened straight to it, a block at a time
    const auto xf = x.reshape({-1, w.size(1)}).to(at::kFloat);
    auto y = at::empty({xf.size(0), w.size(0)}, x.options());
    widened_linear_into(xf, w, {}, b, y);
    auto sizes = x.sizes().vec();
    sizes.back() = w.size(0);
    return y.view(sizes);
}

at::Tensor einsum(c10::string_view equation, at::TensorList operands) {
    if (operands.empty()) return at::einsum(equation, operands);
    const auto dt = product_compute_dtype(operands[0]);
    if (dt == operands[0].scalar_type()) return at::einsum(equation, operands);
    std::vector<at::Tensor> widened;
    widened.reserve(operands.size());
    for (const auto& t : operands) widened.push_back(t.scalar_type() == at::kBFloat16 ? t.to(dt) : t);
    return at::einsum(equation, widened).to(operands[0].scalar_type());
}

at::Tensor conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t stride,
                  at::IntArrayRef padding) {
    const std::array<int64_t, 2> strides{stride, stride};
    const auto dt = product_compute_dtype(x);
    if (dt == x.scalar_type()) return at::conv2d(x, w, b, strides, padding);
    return at::conv2d(x.to(dt), w.to(dt), b.defined() ? b.to(dt) : b, strides, padding).to(x.scalar_type());
}

}  // namespace glmimage::kernels
