// glmimage._C._testing entry points for the DiT (GlmImageTransformer2DModel) parity tests.
#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include "models/dit/kv_cache.h"
#include "models/dit/rope.h"
#include "models/dit/transformer.h"
#include "testing_access.h"

namespace glmimage::python {

namespace {

const GlmImageTransformer& dit(Pipeline& p) {
    auto& t = impl_of(p).transformer;
    if (!t) throw InputError("pipeline has no transformer");
    return *t;
}

// The reference keeps cached keys as [1, seq, heads, head_dim]; we hold [1, heads, seq, head_dim].
std::vector<at::Tensor> reference_layout(const std::vector<at::Tensor>& ts) {
    std::vector<at::Tensor> out;
    for (const auto& t : ts) out.push_back(t.transpose(1, 2).contiguous());
    return out;
}

}  // namespace

void register_testing_dit(pybind11::module_& m) {
    namespace py = pybind11;
    py::class_<DiTKVCache>(m, "DiTKVCache", "condition-image KV cache (diffusers GlmImageKVCache)")
        .def(py::init<int64_t>(), py::arg("num_layers"))
        .def("set_mode", py::overload_cast<const std::string&>(&DiTKVCache::set_mode), py::arg("mode"))
        .def_property_readonly("mode",
                               [](const DiTKVCache& c) -> std::string {
                                   switch (c.mode()) {
                                       case DiTKVCache::Mode::kWrite: return "write";
                                       case DiTKVCache::Mode::kRead: return "read";
                                       case DiTKVCache::Mode::kSkip: return "skip";
                                       case DiTKVCache::Mode::kOff: break;
                                   }
                                   return "off";
                               })
        .def("next_sample", &DiTKVCache::next_sample)
        .def("clear", &DiTKVCache::clear)
        .def_property_readonly("num_layers", &DiTKVCache::num_layers)
        .def_property_readonly("num_samples", &DiTKVCache::num_samples)
        // Per-sample cached tensors of one layer, in the reference's [1, seq, heads, head_dim] layout.
        .def("keys", [](const DiTKVCache& c, int64_t layer) { return reference_layout(c.keys(layer)); })
        .def("values", [](const DiTKVCache& c, int64_t layer) { return reference_layout(c.values(layer)); });

    m.def(
        "dit_forward",
        [](Pipeline& p, const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
           const at::Tensor& prior_token_id, const std::optional<at::Tensor>& prior_token_drop,
           const at::Tensor& timestep, const at::Tensor& target_size, const at::Tensor& crop_coords,
           DiTKVCache* kv_cache) {
            const auto& model = dit(p);
            py::gil_scoped_release release;
            at::NoGradGuard no_grad;
            return model.forward(hidden_states, encoder_hidden_states, prior_token_id,
                                 prior_token_drop.value_or(at::Tensor()), timestep, target_size, crop_coords,
                                 kv_cache);
        },
        py::arg("pipe"), py::arg("hidden_states"), py::arg("encoder_hidden_states"), py::arg("prior_token_id"),
        py::arg("prior_token_drop"), py::arg("timestep"), py::arg("target_size"), py::arg("crop_coords"),
        py::arg("kv_cache") = nullptr,
        "GlmImageTransformer2DModel.forward; returns the velocity [B, C, H, W] in the model dtype");

    // The same forward through the step-invariant split a sampler uses (prepared text, prior, rope).
    m.def(
        "dit_forward_prepared",
        [](Pipeline& p, const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
           const at::Tensor& prior_token_id, const std::optional<at::Tensor>& prior_token_drop,
           const at::Tensor& timestep, const at::Tensor& target_size, const at::Tensor& crop_coords) {
            const auto& model = dit(p);
            py::gil_scoped_release release;
            at::NoGradGuard no_grad;
            const int64_t b = hidden_states.size(0), ph = model.config.patch_size;
            auto rope = model.make_rope(hidden_states.size(2), hidden_states.size(3));
            auto text = model.project_text(encoder_hidden_states);
            auto prior = model.project_prior(prior_token_id, prior_token_drop.value_or(at::Tensor()), b,
                                             (hidden_states.size(2) / ph) * (hidden_states.size(3) / ph));
            auto temb = model.embed_time(timestep, target_size, crop_coords, b);
            return model.forward_projected(hidden_states, text, prior, temb, rope);
        },
        py::arg("pipe"), py::arg("hidden_states"), py::arg("encoder_hidden_states"), py::arg("prior_token_id"),
        py::arg("prior_token_drop"), py::arg("timestep"), py::arg("target_size"), py::arg("crop_coords"));

    // Several text groups in one forward (as the sampler runs both CFG passes): group g's samples
    // are the next B_g rows of the batch, with their own text length.
    m.def(
        "dit_forward_groups",
        [](Pipeline& p, const at::Tensor& hidden_states, const std::vector<at::Tensor>& encoder_hidden_states,
           const at::Tensor& prior_token_id, const at::Tensor& timestep, const at::Tensor& target_size,
           const at::Tensor& crop_coords) {
            const auto& model = dit(p);
            py::gil_scoped_release release;
            at::NoGradGuard no_grad;
            const int64_t b = hidden_states.size(0), ph = model.config.patch_size;
            auto rope = model.make_rope(hidden_states.size(2), hidden_states.size(3));
            std::vector<at::Tensor> texts;
            for (const auto& e : encoder_hidden_states) texts.push_back(model.project_text(e));
            auto prior = model.project_prior(prior_token_id, at::Tensor(), b,
                                             (hidden_states.size(2) / ph) * (hidden_states.size(3) / ph));
            auto step = model.condition_step(model.embed_time(timestep, target_size, crop_coords, b));
            return model.forward_projected(hidden_states, texts, prior, step, rope);
        },
        py::arg("pipe"), py::arg("hidden_states"), py::arg("encoder_hidden_states"), py::arg("prior_token_id"),
        py::arg("timestep"), py::arg("target_size"), py::arg("crop_coords"),
        "The DiT over a batch in text groups: encoder_hidden_states one [B_g, L_g, text_dim] per group, the B_g "
        "summing to the batch; the other inputs the whole batch's.");

    m.def(
        "dit_rope",
        [](Pipeline& p, int64_t latent_h, int64_t latent_w) {
            auto r = dit(p).make_rope(latent_h, latent_w);
            return py::make_tuple(r.cos, r.sin);
        },
        py::arg("pipe"), py::arg("latent_h"), py::arg("latent_w"), "RoPE (cos, sin), each [(H/p)(W/p), head_dim]");

    m.def(
        "dit_temb",
        [](Pipeline& p, const at::Tensor& timestep, const at::Tensor& target_size, const at::Tensor& crop_coords) {
            at::NoGradGuard no_grad;
            return dit(p).embed_time(timestep, target_size, crop_coords, target_size.dim() ? target_size.size(0) : 1);
        },
        py::arg("pipe"), py::arg("timestep"), py::arg("target_size"), py::arg("crop_coords"),
        "time_condition_embed output (SiLU applied), [B, time_embed_dim]");
}

}  // namespace glmimage::python
