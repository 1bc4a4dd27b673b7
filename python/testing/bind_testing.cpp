// glmimage._C._testing: tensors in and out of single components, for parity tests
// against the reference. Not a stable API.
#include <torch/extension.h>

#include <optional>

#include "core/cpu_block_cache.h"
#include "io/tensor_loader.h"
#include "io/weight_binder.h"
#include "kernels/attention.h"
#include "testing_access.h"

namespace glmimage::python {

namespace {

ParamModule& component(Pipeline& p, const std::string& folder) {
    auto& impl = impl_of(p);
    if (folder == "vision_language_encoder") return *impl.ar;
    if (folder == "text_encoder") return *impl.text_encoder;
    if (folder == "transformer") return *impl.transformer;
    if (folder == "vae") return *impl.vae;
    throw InputError("no component '" + folder + "'");
}

// The options a component computes with (its device and dtype while its stage runs).
at::TensorOptions compute_options(const Pipeline& p, const std::string& folder) {
    for (const auto& c : p.components()) {
        if (c.folder != folder) continue;
        for (auto t : {at::kFloat, at::kBFloat16, at::kHalf})
            if (c.dtype == io::scalar_type_name(t)) return at::TensorOptions().dtype(t).device(at::Device(c.device));
        throw InputError("component '" + folder + "' computes in " + c.dtype);
    }
    throw InputError("no component '" + folder + "'");
}

// The SDPA backend each attention site gets for a height x width request (one prompt, CFG
// batched): the shapes, masks and dtypes the models pass to kernels::attention.
std::map<std::string, std::string> attention_backends(const Pipeline& p, int64_t height, int64_t width) {
    const auto& m = impl_of(p);
    std::map<std::string, std::string> out;
    auto rnd = [](std::vector<int64_t> shape, const at::TensorOptions& o) { return at::randn(shape, o); };

    const auto& t = m.ar->config.text;
    const auto ar = compute_options(p, "vision_language_encoder");
    const int64_t prompt = 64, tokens = (height / 32) * (width / 32) + (height / 64) * (width / 64) + 1;
    const int64_t cap = prompt + tokens - 1, D = t.head_dim;
    kernels::AttentionOptions causal;
    causal.causal = true;
    out["ar_prefill"] = kernels::attention_backend(rnd({1, t.num_attention_heads, prompt, D}, ar),
                                                   rnd({1, t.num_key_value_heads, prompt, D}, ar),
                                                   rnd({1, t.num_key_value_heads, prompt, D}, ar), {}, causal);
    auto q1 = rnd({1, t.num_attention_heads, 1, D}, ar);
    auto kc = rnd({1, t.num_key_value_heads, cap, D}, ar);
    out["ar_decode_eager"] = kernels::attention_backend(q1, kc.narrow(2, 0, cap / 2), kc.narrow(2, 0, cap / 2));
    out["ar_decode_static"] =
        kernels::attention_backend(q1, kc, kc, at::ones({1, 1, 1, cap}, ar.dtype(at::kBool)));

    const auto& vc = m.ar->config.vision;
    out["vision"] = kernels::attention_backend(rnd({1, vc.num_heads, 1024, vc.head_dim()}, ar),
                                               rnd({1, vc.num_heads, 1024, vc.head_dim()}, ar),
                                               rnd({1, vc.num_heads, 1024, vc.head_dim()}, ar));

    const auto& dc = m.transformer->config;
    const auto dit = compute_options(p, "transformer");
    const int64_t seq = 128 + (height / 16) * (width / 16);  // glyph rows + image patches
    auto qd = rnd({2, dc.num_attention_heads, seq, dc.attention_head_dim}, dit);
    out["dit"] = kernels::attention_backend(qd, qd, qd);
    return out;
}

// A Python context manager that holds a T (an RAII scope) from __enter__ to __exit__.
template <typename T>
void bind_scope(pybind11::module_& m, const char* name) {
    struct Context {
        std::optional<T> scope;
    };
    pybind11::class_<Context>(m, name)
        .def(pybind11::init<>())
        .def("__enter__", [](Context& c) { c.scope.emplace(); })
        .def("__exit__", [](Context& c, pybind11::args) { c.scope.reset(); });
}

}  // namespace

void register_testing(pybind11::module_& m) {
    namespace py = pybind11;
    // Every bound parameter of a component, as the C++ side holds it.
    m.def("state_dict", [](Pipeline& p, const std::string& folder) {
        std::map<std::string, at::Tensor> out;
        for (const auto& item : component(p, folder).named_parameters(/*recurse=*/true))
            out[item.key()] = item.value();
        return out;
    });
    m.def("attention_backends", &attention_backends, py::arg("pipe"), py::arg("height") = 1024,
          py::arg("width") = 1024);

    // The CPU block cache a generation runs under (LoadOptions::cpu_block_cache), for the hooks
    // above: `with cpu_block_cache(): ...`; and `with cpu_block_cache(), cpu_block_cache_peak_bound():`,
    // the VAE's bound, which also starts the count peak_in_use_bytes reports; and its counters.
    bind_scope<CpuBlockCacheScope>(m, "cpu_block_cache");
    bind_scope<CpuBlockCachePeakBound>(m, "cpu_block_cache_peak_bound");
    m.def("cpu_block_cache_stats", [] {
        const auto s = cpu_block_cache_stats();
        return py::dict(py::arg("reused") = s.reused, py::arg("fresh") = s.fresh, py::arg("evicted") = s.evicted,
                        py::arg("trimmed") = s.trimmed, py::arg("cached_bytes") = s.cached_bytes,
                        py::arg("peak_cached_bytes") = s.peak_cached_bytes, py::arg("in_use_bytes") = s.in_use_bytes,
                        py::arg("peak_in_use_bytes") = s.peak_in_use_bytes);
    });
}

}  // namespace glmimage::python
