// glmimage._C._testing.decode: the diffusion decoder given prior tokens (issue 3's entry point),
// for the decoder parity tests. The public Python API comes with the full pipeline.
#include <torch/extension.h>

#include "pipeline/pipeline_impl.h"

namespace glmimage::python {

void register_testing_decoder(pybind11::module_& m) {
    namespace py = pybind11;
    m.def(
        "decode",
        [](Pipeline& pipe, const at::Tensor& prior_token_ids, const std::vector<std::string>& prompts, int64_t height,
           int64_t width, int64_t steps, double guidance, uint64_t seed,
           const std::vector<std::vector<std::pair<at::Tensor, at::Tensor>>>& conditions, int64_t images_per_prompt,
           bool batch_cfg, const std::string& label, int64_t max_sequence_length) {
            DecodeOptions o;
            o.height = height;
            o.width = width;
            o.steps = steps;
            o.guidance = guidance;
            o.seed = seed;
            o.images_per_prompt = images_per_prompt;
            o.batch_cfg = batch_cfg;
            o.label = parse_timestep_label(label);
            o.max_sequence_length = max_sequence_length;
            std::vector<std::vector<ConditionImage>> conds;
            for (const auto& list : conditions) {
                conds.emplace_back();
                for (const auto& [px, ids] : list) conds.back().push_back({px, ids});
            }
            py::gil_scoped_release release;
            return decode(pipe.impl().decoder_models(), prior_token_ids, prompts, conds, o);
        },
        py::arg("pipe"), py::arg("prior_token_ids"), py::arg("prompts"), py::arg("height"), py::arg("width"),
        py::arg("steps") = 50, py::arg("guidance") = 1.5, py::arg("seed") = 0,
        py::arg("conditions") = std::vector<std::vector<std::pair<at::Tensor, at::Tensor>>>{},
        py::arg("images_per_prompt") = 1, py::arg("batch_cfg") = true, py::arg("label") = "0.39",
        py::arg("max_sequence_length") = 2048);
    m.def("glyph_embeddings", [](Pipeline& pipe, const std::vector<std::string>& prompts, int64_t max_len) {
        c10::InferenceMode guard;
        return glyph_embeddings(pipe.impl().decoder_models(), prompts, max_len);
    }, py::arg("pipe"), py::arg("prompts"), py::arg("max_sequence_length") = 2048);
}

}  // namespace glmimage::python
