// glmimage._C._testing entry points of the sampler inputs: the flow-matching Euler schedule and
// step, the glyph texts of a prompt and their ByT5 ids.
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <optional>

#include "core/paths.h"
#include "testing_access.h"
#include "schedulers/flow_match_euler.h"
#include "schedulers/flow_match_euler_step.h"
#include "tokenizers/glyph_text.h"

namespace glmimage::python {

namespace {

namespace py = pybind11;

at::Tensor float_tensor(const std::vector<float>& v) {
    const auto n = static_cast<int64_t>(v.size());
    return torch::tensor(at::ArrayRef<float>(v), torch::dtype(torch::kFloat32)).reshape({n});
}

at::Tensor int64_tensor(const std::vector<int64_t>& v, int64_t rows, int64_t cols) {
    return torch::tensor(at::ArrayRef<int64_t>(v), torch::dtype(torch::kInt64)).reshape({rows, cols});
}

// A scheduler_config.json, a scheduler folder, or a model folder holding scheduler/.
SchedulerConfig scheduler_config_at(const std::string& path) {
    if (detail::is_directory(path)) {
        const std::string here = detail::join_path(path, "scheduler_config.json");
        if (detail::path_exists(here)) return SchedulerConfig::from_file(here);
        return SchedulerConfig::from_file(detail::join_path(detail::join_path(path, "scheduler"), "scheduler_config.json"));
    }
    return SchedulerConfig::from_file(path);
}

struct ScheduleArgs {
    int64_t steps, height, width;
    std::string label_version;
    std::optional<std::vector<double>> timesteps, sigmas;
    std::optional<int64_t> patch_size, vae_scale_factor;
};

FlowMatchSchedule run_schedule(const SchedulerConfig& config, const ScheduleArgs& a, int64_t default_patch,
                               int64_t default_vae_scale) {
    FlowMatchScheduleOptions o;
    o.patch_size = a.patch_size.value_or(default_patch);
    o.vae_scale_factor = a.vae_scale_factor.value_or(default_vae_scale);
    o.label = parse_timestep_label(a.label_version);
    o.timesteps = a.timesteps;
    o.sigmas = a.sigmas;
    return FlowMatchEulerScheduler(config).schedule(a.steps, a.height, a.width, o);
}

py::dict schedule_dict(const FlowMatchSchedule& s) {
    py::dict d;
    d["image_seq_len"] = s.image_seq_len;
    d["mu"] = s.mu;
    d["timesteps"] = float_tensor(s.timesteps);
    d["sigmas"] = float_tensor(s.sigmas);
    d["labels"] = float_tensor(s.labels);
    return d;
}

ByT5Tokenizer tokenizer_at(const std::optional<std::string>& dir) {
    return dir ? ByT5Tokenizer::from_dir(*dir) : ByT5Tokenizer();
}

}  // namespace

void register_testing_sampling(pybind11::module_& m) {
    // scheduler_info(source, steps, height, width, label_version="0.39", *, timesteps, sigmas,
    // patch_size, vae_scale_factor) -> dict(image_seq_len, mu, timesteps, sigmas, labels).
    // source: a loaded Pipeline (patch size and VAE scale factor from its configs) or the path of a
    // scheduler config (defaults 2 and 8).
    auto info_pipe = [](Pipeline& p, int64_t steps, int64_t h, int64_t w, const std::string& label,
                        std::optional<std::vector<double>> ts, std::optional<std::vector<double>> sig,
                        std::optional<int64_t> patch, std::optional<int64_t> vsf) {
        auto& impl = impl_of(p);
        return run_schedule(impl.scheduler_config, {steps, h, w, label, ts, sig, patch, vsf},
                            impl.transformer->config.patch_size, impl.vae->config.scale_factor());
    };
    auto info_path = [](const std::string& path, int64_t steps, int64_t h, int64_t w, const std::string& label,
                        std::optional<std::vector<double>> ts, std::optional<std::vector<double>> sig,
                        std::optional<int64_t> patch, std::optional<int64_t> vsf) {
        return run_schedule(scheduler_config_at(path), {steps, h, w, label, ts, sig, patch, vsf}, 2, 8);
    };
#define GLMI_SCHEDULE_ARGS                                                                               \
    py::arg("steps"), py::arg("height"), py::arg("width"), py::arg("label_version") = "0.39", py::kw_only(), \
        py::arg("timesteps") = py::none(), py::arg("sigmas") = py::none(), py::arg("patch_size") = py::none(), \
        py::arg("vae_scale_factor") = py::none()
    m.def(
        "scheduler_info",
        [info_pipe](Pipeline& p, int64_t steps, int64_t h, int64_t w, const std::string& label,
                    std::optional<std::vector<double>> ts, std::optional<std::vector<double>> sig,
                    std::optional<int64_t> patch, std::optional<int64_t> vsf) {
            return schedule_dict(info_pipe(p, steps, h, w, label, ts, sig, patch, vsf));
        },
        py::arg("pipe"), GLMI_SCHEDULE_ARGS);
    m.def(
        "scheduler_info",
        [info_path](const std::string& path, int64_t steps, int64_t h, int64_t w, const std::string& label,
                    std::optional<std::vector<double>> ts, std::optional<std::vector<double>> sig,
                    std::optional<int64_t> patch, std::optional<int64_t> vsf) {
            return schedule_dict(info_path(path, steps, h, w, label, ts, sig, patch, vsf));
        },
        py::arg("config_path"), GLMI_SCHEDULE_ARGS);
    // scheduler_schedule(...) -> (sigmas [n+1] float32, labels [n] float32), same arguments.
    m.def(
        "scheduler_schedule",
        [info_pipe](Pipeline& p, int64_t steps, int64_t h, int64_t w, const std::string& label,
                    std::optional<std::vector<double>> ts, std::optional<std::vector<double>> sig,
                    std::optional<int64_t> patch, std::optional<int64_t> vsf) {
            const auto s = info_pipe(p, steps, h, w, label, ts, sig, patch, vsf);
            return py::make_tuple(float_tensor(s.sigmas), float_tensor(s.labels));
        },
        py::arg("pipe"), GLMI_SCHEDULE_ARGS);
    m.def(
        "scheduler_schedule",
        [info_path](const std::string& path, int64_t steps, int64_t h, int64_t w, const std::string& label,
                    std::optional<std::vector<double>> ts, std::optional<std::vector<double>> sig,
                    std::optional<int64_t> patch, std::optional<int64_t> vsf) {
            const auto s = info_path(path, steps, h, w, label, ts, sig, patch, vsf);
            return py::make_tuple(float_tensor(s.sigmas), float_tensor(s.labels));
        },
        py::arg("config_path"), GLMI_SCHEDULE_ARGS);
#undef GLMI_SCHEDULE_ARGS

    // scheduler_step(sample, model_output, sigma, sigma_next) -> the Euler update.
    m.def(
        "scheduler_step",
        [](const at::Tensor& sample, const at::Tensor& model_output, float sigma, float sigma_next) {
            return flow_match_euler_step(sample, model_output, sigma, sigma_next);
        },
        py::arg("sample"), py::arg("model_output"), py::arg("sigma"), py::arg("sigma_next"));

    m.def("glyph_texts", &extract_glyph_texts, py::arg("prompt"));
    // byt5_encode(text, max_length=0, tokenizer_dir=None) -> list of ids (eos included).
    m.def(
        "byt5_encode",
        [](const std::string& text, int64_t max_length, const std::optional<std::string>& dir) {
            return tokenizer_at(dir).encode(text, max_length);
        },
        py::arg("text"), py::arg("max_length") = 0, py::arg("tokenizer_dir") = py::none());
    // glyph_tokens(prompt, max_sequence_length=2048, tokenizer_dir=None) ->
    // (texts, input_ids [N, L] int64, attention_mask [N, L] int64): what the pipeline feeds the T5.
    m.def(
        "glyph_tokens",
        [](const std::string& prompt, int64_t max_len, const std::optional<std::string>& dir) {
            const auto g = glyph_tokens(prompt, tokenizer_at(dir), max_len);
            return py::make_tuple(g.texts, int64_tensor(g.input_ids, g.n_texts, g.length),
                                  int64_tensor(g.attention_mask, g.n_texts, g.length));
        },
        py::arg("prompt"), py::arg("max_sequence_length") = 2048, py::arg("tokenizer_dir") = py::none());
}

}  // namespace glmimage::python
