// glmimage_testing entry points of the fused kernels (kernels/decoder_fused.h, rotary.h,
// mul_add.h, layer_norm.h), each on tensors of any device the build supports, and the process-wide switch
// between them and the LibTorch op sequences they replace (fused_switch.h); where the CPU's
// bf16 products run (kernels/cpu_products.h); the one attention entry point (kernels/attention.h).
// tests/python/test_fused_kernels.py compares the two.
#include <c10/core/InferenceMode.h>
#include <pybind11/pybind11.h>
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>

#include "kernels/attention.h"
#include "kernels/cpu_bf16_attention.h"
#include "kernels/cpu_products.h"
#include "kernels/decoder_fused.h"
#include "kernels/fused_switch.h"
#include "kernels/layer_norm.h"
#include "kernels/mul_add.h"
#include "kernels/rotary.h"
#include "kernels/row_sum.h"

namespace glmimage::python {

void register_testing_kernels(pybind11::module_& m) {
    namespace py = pybind11;
    using Guard = py::call_guard<c10::InferenceMode>;
    m.def("set_fused_kernels", &kernels::set_fused_kernels_enabled, py::arg("enabled"),
          "Process-wide: False runs LibTorch's op sequences instead of every fused kernel (the AR "
          "decoder's, the DiT's RoPE and modulations, the 16-bit GELU table), for a comparison.");
    m.def("fused_kernels_enabled", &kernels::fused_kernels_enabled, "Whether the fused kernels are on (the default).");
    m.def("cpu_bf16_products_in_float32", &kernels::cpu_bf16_products_in_float32,
          "Whether bf16 linears and convolutions on the CPU are computed in float32 and rounded once (a CPU "
          "where LibTorch has no oneDNN bf16 kernels: AVX2-only x86).");
    m.def("cpu_bf16_attention_runs", &kernels::cpu_has_avx512_bf16_without_amx,
          "Whether unmasked bf16 attention of many queries on the CPU runs this library's kernel rather than SDPA "
          "(kernels/cpu_bf16_attention.h: an x86-64 CPU with AVX-512 bf16 and no AMX).");
    m.def(
        "attention",
        [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::optional<double> scale) {
            kernels::AttentionOptions o;
            o.scale = scale;
            return kernels::attention(q, k, v, {}, o);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale") = py::none(), Guard(),
        "softmax(q k^T * scale) v, unmasked, as the models attend (kernels::attention): q [B, Hq, Sq, D], k and v "
        "[B, Hkv, Sk, D]; scale None: 1/sqrt(D).");
    m.def(
        "attention_backend",
        [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
            return kernels::attention_backend(q, k, v);
        },
        py::arg("q"), py::arg("k"), py::arg("v"),
        "What attention(q, k, v) runs: 'cpu_bf16', 'cpu_decode', or the SDPA backend LibTorch picks.");
    const std::string row_bits_doc =
        "Whether products for tensors of like's device and dtype give a row the same bits whatever the call's other "
        "rows (from " + std::to_string(kernels::kRowBitsMinRows) +
        " rows up): the CPU's float32 GEMMs, probed once. Where True, cfg_passes='auto' runs both CFG passes as one "
        "forward and the DiT's feed-forward shares one call between its streams.";
    m.def(
        "products_keep_row_bits",
        [](const at::Tensor& like) { return kernels::products_keep_row_bits(like.device(), like.scalar_type()); },
        py::arg("like"),
        row_bits_doc.c_str());
    m.def(
        "decoder_fused_available",
        [](const at::Tensor& like) { return kernels::decoder_fused_available(like.device(), like.scalar_type()); },
        py::arg("like"), "Whether the fused kernels run for tensors of like's device and dtype.");
    m.def("fused_squares", &kernels::squares, py::arg("x"), Guard(),
          "x.float().pow(2) of a contiguous tensor, in one pass.");
    m.def(
        "fused_rms_norm",
        [](const at::Tensor& x, const at::Tensor& weight, double eps) {
            return kernels::rms_norm(x, kernels::norm_needs_squares(x) ? kernels::squares(x) : at::Tensor(), weight,
                                     eps);
        },
        py::arg("x"), py::arg("weight"), py::arg("eps"), Guard(),
        "GlmImage's RMSNorm: weight * (x.float() * rsqrt(mean(x.float()^2) + eps)).to(x.dtype).");
    m.def(
        "fused_residual_rms_norm",
        [](const at::Tensor& residual, const at::Tensor& h, const at::Tensor& weight, double eps) {
            auto r = kernels::residual_rms_norm(residual, h, weight, eps);
            return std::make_tuple(r.out, r.out_squares.defined() ? py::cast(r.out_squares) : py::none());
        },
        py::arg("residual"), py::arg("h"), py::arg("weight"), py::arg("eps"), Guard(),
        "(residual + rms_norm(h), its float32 squares or None where norm_needs_squares(h) is false): a post-norm "
        "with its residual sum.");
    m.def("norm_needs_squares", &kernels::norm_needs_squares, py::arg("x"),
          "Whether the fused RMSNorms need x's float32 squares stored: CUDA, or a CPU where the row-sum loop does "
          "not give LibTorch's sum (else they square x as they read it).");
    m.def(
        "fused_rotary_qkv_to_cache",
        [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos, const at::Tensor& sin,
           int64_t head_dim, std::optional<at::Tensor> slot, int64_t slot0, at::Tensor cache_k, at::Tensor cache_v) {
            return kernels::rotary_qkv_to_cache(q, k, v, cos, sin, head_dim, slot ? *slot : at::Tensor(), slot0,
                                                cache_k, cache_v);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("cos"), py::arg("sin"), py::arg("head_dim"),
        py::arg("slot") = py::none(), py::arg("slot0") = 0, py::arg("cache_k"), py::arg("cache_v"), Guard(),
        "Returns q rotated [B, hq, S, D]; writes k rotated and v into the caches (in place).");
    m.def("fused_silu_mul", &kernels::silu_mul, py::arg("gate_up"), Guard(),
          "up * silu(gate) of a [..., 2I] gate_up projection (gate first).");
    m.def("silu_mul_by_table", &kernels::silu_mul_by_table, py::arg("gate_up"),
          "Whether fused_silu_mul(gate_up) looks its silu up in LibTorch's table (16-bit CPU rows, I a multiple "
          "of 64).");
    m.def("row_sums", &kernels::row_sums, py::arg("x"), Guard(),
          "x.sum(-1) of float32 rows, by the library's loop (LibTorch's order of additions) where "
          "row_sum_matches_libtorch(x.size(-1)), else LibTorch's op.");
    m.def("row_sum_matches_libtorch", &kernels::row_sum_matches_libtorch, py::arg("n"),
          "Whether the library's row-sum loop gives LibTorch's sum bits for rows of n floats here (the first-use "
          "probe found LibTorch's vector width, and n < 32768).");
    m.def(
        "fused_dit_rope",
        [](const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t skip, bool head_major) {
            return kernels::rotary_half(x, cos, sin, skip,
                                        head_major ? kernels::RotaryLayout::kHeadMajor : kernels::RotaryLayout::kTokenMajor);
        },
        py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("skip"), py::arg("head_major") = false, Guard(),
        "The DiT's RoPE on tokens [skip, S) of x [B, S, heads, D] (float32 tables [S - skip, D]).");
    m.def("fused_mul_add", &kernels::mul_add, py::arg("a"), py::arg("g"), py::arg("c"), Guard(),
          "a * g + c (the DiT's modulations and gated residuals): a [B, S, D], g [B|1, 1, D], c a's shape or as g.");
    m.def("fused_mul_add_into", &kernels::mul_add_into, py::arg("a"), py::arg("g"), py::arg("c"), py::arg("y"), Guard(),
          "fused_mul_add written into y (a's shape, rows contiguous, e.g. rows of a longer sequence), in place.");
    m.def("layer_norm", &kernels::layer_norm, py::arg("x"), py::arg("eps"), Guard(),
          "LayerNorm over the last dimension without weight or bias (the DiT's), by the library's loop where "
          "layer_norm_by_loop(x), else LibTorch's op.");
    m.def("layer_norm_by_loop", &kernels::layer_norm_by_kernel, py::arg("x"),
          "Whether layer_norm(x) runs the library's loop (float32 CPU rows of a multiple of 8 on a CPU where "
          "LibTorch runs its AVX2 kernels and the first-use probe found its bits).");
}

}  // namespace glmimage::python
