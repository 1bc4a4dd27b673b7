// glmimage._C._testing entry points for the Glyph-ByT5 text encoder and the VAE: forward
// passes of a loaded pipeline's components or of a lone component folder (a
// save_pretrained() directory), for parity tests. Not a stable API.
#include <torch/extension.h>

#include "core/paths.h"
#include "io/tensor_loader.h"
#include "io/weight_binder.h"
#include "layers/conv2d.h"
#include "layers/norms.h"
#include "models/vae/postprocess.h"
#include "testing_access.h"

namespace glmimage::python {

namespace {

// A component folder on its own, loaded as Pipeline::load loads it (meta-device tree, strict
// binding), in `dtype` ("auto" keeps the checkpoint's) on `device`.
template <typename Module, typename Config>
std::shared_ptr<Module> load_lone(const std::string& folder, const std::string& component, const Config& config,
                                  const std::string& dtype_name, const std::string& device_name,
                                  const std::map<std::string, std::string>& ignored) {
    auto weights = io::WeightIndex::open_dir(folder);
    auto requested = parse_dtype_option(dtype_name);
    const at::ScalarType dtype = requested ? *requested : io::dominant_float_dtype(weights).value_or(at::kFloat);
    auto module = std::make_shared<Module>(config, at::TensorOptions().device(at::kMeta).dtype(dtype));
    io::BindOptions bind;
    bind.dtype = dtype;
    bind.device = parse_device_option(device_name);
    bind.ignored_keys = ignored;
    io::bind_weights(component, *module, weights, bind);
    return module;
}

T5Encoder& text_encoder(Pipeline& p) {
    if (!impl_of(p).text_encoder) throw InputError("pipeline has no text_encoder");
    return *impl_of(p).text_encoder;
}

AutoencoderKL& vae(Pipeline& p) {
    if (!impl_of(p).vae) throw InputError("pipeline has no vae");
    return *impl_of(p).vae;
}

at::Tensor t5_forward(const T5Encoder& m, const at::Tensor& ids, const std::optional<at::Tensor>& mask) {
    pybind11::gil_scoped_release release;
    at::NoGradGuard no_grad;
    return m.forward(ids, mask ? *mask : at::Tensor());
}

at::Tensor vae_decode_impl(const AutoencoderKL& m, const at::Tensor& latents, bool denormalize) {
    pybind11::gil_scoped_release release;
    at::NoGradGuard no_grad;
    return denormalize ? m.decode_latents(latents) : m.decode(latents);
}

at::Tensor vae_encode_impl(const AutoencoderKL& m, const at::Tensor& images, bool normalize) {
    pybind11::gil_scoped_release release;
    at::NoGradGuard no_grad;
    return normalize ? m.encode_latents(images) : m.encode(images);
}

std::map<std::string, at::Tensor> params(const ParamModule& m) {
    std::map<std::string, at::Tensor> out;
    for (const auto& item : m.named_parameters(/*recurse=*/true)) out[item.key()] = item.value();
    return out;
}

}  // namespace

void register_testing_t5_vae(pybind11::module_& m) {
    namespace py = pybind11;

    // Opaque handles for lone components.
    py::class_<T5Encoder, std::shared_ptr<T5Encoder>>(m, "T5EncoderHandle")
        .def("state_dict", [](const T5Encoder& e) { return params(e); })
        .def_property_readonly("summary", [](const T5Encoder& e) { return e.config.to_string(); });
    py::class_<AutoencoderKL, std::shared_ptr<AutoencoderKL>>(m, "AutoencoderKLHandle")
        .def("state_dict", [](const AutoencoderKL& v) { return params(v); })
        .def_property_readonly("summary", [](const AutoencoderKL& v) { return v.config.to_string(); });

    m.def(
        "load_t5",
        [](const std::string& folder, const std::string& dtype, const std::string& device) {
            py::gil_scoped_release release;
            auto c = T5Config::from_file(detail::join_path(folder, "config.json"));
            return load_lone<T5Encoder>(folder, "text_encoder", c, dtype, device,
                                        {{"encoder.embed_tokens.weight", "tied to shared.weight"}});
        },
        py::arg("folder"), py::arg("dtype") = "auto", py::arg("device") = "cpu",
        "T5EncoderModel from a save_pretrained() folder (config.json + safetensors)");
    m.def(
        "load_vae",
        [](const std::string& folder, const std::string& dtype, const std::string& device) {
            py::gil_scoped_release release;
            auto c = VAEConfig::from_file(detail::join_path(folder, "config.json"));
            return load_lone<AutoencoderKL>(folder, "vae", c, dtype, device, {});
        },
        py::arg("folder"), py::arg("dtype") = "auto", py::arg("device") = "cpu",
        "AutoencoderKL from a save_pretrained() folder (config.json + safetensors)");

    // T5: last_hidden_state (B, L, d_model).
    m.def("t5_encode", [](Pipeline& p, const at::Tensor& ids, std::optional<at::Tensor> mask) {
        return t5_forward(text_encoder(p), ids, mask);
    }, py::arg("pipe"), py::arg("input_ids"), py::arg("attention_mask") = py::none());
    m.def("t5_encode", [](const T5Encoder& e, const at::Tensor& ids, std::optional<at::Tensor> mask) {
        return t5_forward(e, ids, mask);
    }, py::arg("encoder"), py::arg("input_ids"), py::arg("attention_mask") = py::none());
    // Relative-position buckets (bidirectional) of an int64 tensor of key - query offsets.
    m.def("t5_position_bucket", [](const at::Tensor& rel, int64_t num_buckets, int64_t max_distance) {
        return T5Encoder::relative_position_bucket(rel.to(at::kLong), num_buckets, max_distance);
    }, py::arg("relative_position"), py::arg("num_buckets"), py::arg("max_distance"));

    // VAE. vae_decode: latents -> image (B, 3, H, W) in the VAE dtype; denormalize=True applies
    // GLM-Image's z * latents_std + latents_mean first. vae_encode: images in [-1, 1] ->
    // posterior mean, normalized with (z - mean) / std when normalize=True.
    m.def("vae_decode", [](Pipeline& p, const at::Tensor& z, bool denormalize) {
        return vae_decode_impl(vae(p), z, denormalize);
    }, py::arg("pipe"), py::arg("latents"), py::arg("denormalize") = true);
    m.def("vae_decode", [](const AutoencoderKL& v, const at::Tensor& z, bool denormalize) {
        return vae_decode_impl(v, z, denormalize);
    }, py::arg("vae"), py::arg("latents"), py::arg("denormalize") = true);
    m.def("vae_encode", [](Pipeline& p, const at::Tensor& x, bool normalize) {
        return vae_encode_impl(vae(p), x, normalize);
    }, py::arg("pipe"), py::arg("images"), py::arg("normalize") = true);
    m.def("vae_encode", [](const AutoencoderKL& v, const at::Tensor& x, bool normalize) {
        return vae_encode_impl(v, x, normalize);
    }, py::arg("vae"), py::arg("images"), py::arg("normalize") = true);
    // (B, C, H, W) decoded image -> (B, H, W, C) uint8, or the clamped [0, 1] image in its own
    // dtype (NCHW) with to_uint8=False.
    m.def("vae_postprocess", [](const at::Tensor& images, bool to_uint8) {
        py::gil_scoped_release release;
        return to_uint8 ? postprocess_to_uint8(images) : denormalize_image(images);
    }, py::arg("images"), py::arg("to_uint8") = true);
    // Which of the memory-saving forms the VAE's widest layers (512 channels, 3x3) take for a
    // 128 MiB-and-more CPU activation of `dtype` on this CPU and LibTorch, each decided by a run-time
    // bit check (layers/conv2d.cpp, layers/norms.cpp): conv_channels_last (NHWC input),
    // conv_row_bands, group_norm_in_place. What a test of the decode's memory may expect.
    m.def("vae_large_activation_paths", [](const std::string& dtype_name) {
        const at::ScalarType dtype = parse_dtype_option(dtype_name).value_or(at::kFloat);
        const auto meta = at::TensorOptions().device(at::kMeta).dtype(dtype);
        const Conv2d conv(512, 512, 3, 1, 1, meta);
        const GroupNorm norm(32, 512, 1e-6, meta);
        const auto cpu = at::TensorOptions().dtype(dtype);
        const auto small = at::zeros({1, 8, 4, 4}, cpu);
        const auto large = at::empty({1, 512, 256, 512}, cpu);  // 128 MiB in bf16; its pages never touched
        return std::map<std::string, bool>{{"conv_channels_last", !conv.to_input_layout(small).is_same(small)},
                                           {"conv_row_bands", conv.runs_in_row_bands(large)},
                                           {"group_norm_in_place", norm.works_in_place_on(large)}};
    }, py::arg("dtype"));
}

}  // namespace glmimage::python
