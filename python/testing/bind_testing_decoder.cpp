// glmimage_testing.decode: the diffusion decoder given prior tokens (issue 3's entry point),
// for the decoder parity tests. The public Python API comes with the full pipeline.
#include <torch/extension.h>

#include "testing_access.h"

namespace glmimage::python {

void register_testing_decoder(pybind11::module_& m) {
    namespace py = pybind11;
    m.def(
        "decode",
        [](Pipeline& pipe, const at::Tensor& prior_token_ids, const std::vector<std::string>& prompts, int64_t height,
           int64_t width, int64_t steps, double guidance, uint64_t seed,
           const std::vector<std::vector<std::pair<at::Tensor, at::Tensor>>>& conditions, int64_t images_per_prompt,
           std::optional<bool> batch_cfg, const std::string& label, int64_t max_sequence_length,
           double first_block_cache, bool with_skips) -> py::object {
            GenerateRequest o;
            o.prompts = prompts;
            o.height = height;
            o.width = width;
            o.steps = steps;
            o.guidance = guidance;
            o.seed = seed;
            o.images_per_prompt = images_per_prompt;
            o.timestep_label = label;
            o.max_sequence_length = max_sequence_length;
            o.first_block_cache = first_block_cache;
            o.validate();  // this hook is an API boundary: the request's rules, as Model::validate runs them
            DecoderRuntime rt;
            rt.batch_cfg = batch_cfg;
            std::vector<std::vector<ConditionImage>> conds;
            for (const auto& list : conditions) {
                conds.emplace_back();
                for (const auto& [px, ids] : list) conds.back().push_back({px, ids});
            }
            std::vector<std::vector<bool>> skips;
            rt.first_block_cache_skips = &skips;
            at::Tensor images;
            {
                py::gil_scoped_release release;
                images = run_diffusion_decoder(impl_of(pipe).decoder_models(), prior_token_ids, conds, o, rt);
            }
            if (with_skips) return py::make_tuple(images, skips);
            return py::cast(images);
        },
        py::arg("pipe"), py::arg("prior_token_ids"), py::arg("prompts"), py::arg("height"), py::arg("width"),
        py::arg("steps") = 50, py::arg("guidance") = 1.5, py::arg("seed") = 0,
        py::arg("conditions") = std::vector<std::vector<std::pair<at::Tensor, at::Tensor>>>{},
        py::arg("images_per_prompt") = 1, py::arg("batch_cfg") = std::optional<bool>(), py::arg("label") = "0.39",
        py::arg("max_sequence_length") = 2048, py::arg("first_block_cache") = 0.0, py::arg("with_skips") = false,
        "The diffusion decoder from given prior tokens ([B, (H/16)(W/16)] int64): glyph embeddings, the "
        "condition-image cache (conditions: per prompt, a list of (pixels [H, W, 3] uint8, prior ids)), the "
        "Euler loop with CFG and the VAE; returns [B * images_per_prompt, H, W, 3] uint8. batch_cfg: None "
        "takes the 'auto' rule (joint on CUDA, apart on the CPU) whatever the pipeline's cfg_passes; True "
        "runs both CFG passes as one DiT forward, False as two. first_block_cache: GenerateRequest's threshold (0: "
        "off). with_skips: return (images, skips), skips[pass][step] true where the first-block cache ran the "
        "first block alone (the conditional pass first).");
    // The whole public Pipeline::generate, tensors in and out (e2e parity tests).
    m.def(
        "generate",
        [](Pipeline& pipe, const std::vector<std::string>& prompts, const std::vector<std::vector<at::Tensor>>& images,
           int64_t height, int64_t width, int64_t steps, double guidance, uint64_t seed, bool do_sample,
           double temperature, double top_p, int64_t top_k, bool keep_in_codebook, int64_t images_per_prompt) {
            GenerateRequest req;
            req.prompts = prompts;
            for (const auto& list : images) {
                req.images.emplace_back();
                for (const auto& t : list) req.images.back().push_back(tensor_to_image(t));
            }
            req.height = height;
            req.width = width;
            req.steps = steps;
            req.guidance = guidance;
            req.seed = seed;
            req.images_per_prompt = images_per_prompt;
            req.ar.do_sample = do_sample;
            req.ar.temperature = temperature;
            req.ar.top_p = top_p;
            req.ar.top_k = top_k;
            req.ar.keep_in_codebook = keep_in_codebook;
            GenerateResult r;
            {
                py::gil_scoped_release release;
                r = pipe.generate(req);
            }
            std::vector<at::Tensor> imgs;
            for (const auto& im : r.images) imgs.push_back(image_to_tensor(im));
            std::vector<at::Tensor> prior;
            for (auto& ids : r.prior_tokens.ids) prior.push_back(at::tensor(ids, at::kLong));
            std::vector<std::vector<at::Tensor>> cond;
            for (auto& per : r.prior_tokens.condition_ids) {
                cond.emplace_back();
                for (auto& ids : per) cond.back().push_back(at::tensor(ids, at::kLong));
            }
            return py::make_tuple(at::stack(imgs), at::stack(prior), cond);
        },
        py::arg("pipe"), py::arg("prompts"), py::arg("images") = std::vector<std::vector<at::Tensor>>{},
        py::arg("height") = 64, py::arg("width") = 64, py::arg("steps") = 2, py::arg("guidance") = 1.5,
        py::arg("seed") = 0, py::arg("do_sample") = false, py::arg("temperature") = 1.0, py::arg("top_p") = 1.0,
        py::arg("top_k") = 50, py::arg("keep_in_codebook") = false, py::arg("images_per_prompt") = 1);
    m.def("glyph_embeddings", [](Pipeline& pipe, const std::vector<std::string>& prompts, int64_t max_len) {
        c10::InferenceMode guard;
        return glyph_embeddings(impl_of(pipe).decoder_models(), prompts, max_len);
    }, py::arg("pipe"), py::arg("prompts"), py::arg("max_sequence_length") = 2048);
}

}  // namespace glmimage::python
