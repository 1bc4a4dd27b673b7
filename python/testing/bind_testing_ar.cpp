// glmimage._C._testing entry points of the AR text decoder: positions, rotary tables, a
// full forward with per-layer outputs, and generation. For parity tests; not a stable API.
#include <c10/core/InferenceMode.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <optional>
#include <tuple>
#include <vector>

#include "glmimage/errors.h"
#include "models/glm_ar/ar_generator.h"
#include "testing_access.h"

namespace glmimage::python {

namespace {

namespace py = pybind11;

GlmArModel& ar_model(Pipeline& p) {
    auto& impl = impl_of(p);
    if (!impl.ar) throw InputError("ar: the pipeline has no vision_language_encoder");
    return *impl.ar;
}

std::vector<GridThw> to_grids(const at::Tensor& t) {
    if (t.dim() != 2 || t.size(1) != 3) throw InputError("ar: image_grid_thw must be [n, 3]");
    auto c = t.to(at::kCPU, at::kLong).contiguous();
    std::vector<GridThw> out;
    for (int64_t i = 0; i < c.size(0); ++i)
        out.push_back({c[i][0].item<int64_t>(), c[i][1].item<int64_t>(), c[i][2].item<int64_t>()});
    return out;
}

at::Tensor opt_tensor(const std::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); }

}  // namespace

void register_testing_ar(pybind11::module_& m) {
    m.def(
        "ar_positions",
        [](Pipeline& p, const at::Tensor& input_ids, const at::Tensor& image_grid_thw,
           std::vector<int64_t> images_per_sample, std::optional<at::Tensor> attention_mask) {
            const auto& cfg = ar_model(p).config;
            if (input_ids.dim() != 2) throw InputError("ar: input_ids must be [batch, length]");
            auto grids = split_grids(to_grids(image_grid_thw), images_per_sample, input_ids.size(0));
            auto pos = build_mrope_positions(input_ids, opt_tensor(attention_mask), grids, cfg.image_start_token_id,
                                             cfg.image_end_token_id);
            return py::make_tuple(pos.prefill, pos.decode);
        },
        py::arg("pipe"), py::arg("input_ids"), py::arg("image_grid_thw"),
        py::arg("images_per_sample") = std::vector<int64_t>{}, py::arg("attention_mask") = py::none());

    m.def(
        "ar_rotary",
        [](Pipeline& p, const at::Tensor& position_ids) {
            c10::InferenceMode guard;
            auto& model = ar_model(p);
            MropeRotary rotary(model.config.text);
            auto cs = rotary.cos_sin(position_ids.to(at::kLong), at::kFloat);
            return py::make_tuple(cs.first, cs.second);
        },
        py::arg("pipe"), py::arg("position_ids"));

    // A forward over the whole sequence with explicit [3, B, S] positions: final-normed
    // logits [B, S, V] and every decoder layer's output. split > 0 runs the first `split`
    // tokens, then the rest as a second multi-token chunk over the cache (the chunked path).
    m.def(
        "ar_forward",
        [](Pipeline& p, const at::Tensor& input_ids, const at::Tensor& position_ids,
           std::optional<at::Tensor> attention_mask, int64_t split) {
            auto& model = ar_model(p);
            check_prompt_ids(model.config, input_ids);
            if (position_ids.dim() != 3 || position_ids.size(0) != 3 || position_ids.size(1) != input_ids.size(0) ||
                position_ids.size(2) != input_ids.size(1))
                throw InputError("ar: position ids must be [3, batch, length] for the given input_ids");
            py::gil_scoped_release release;
            c10::InferenceMode guard;
            GlmTextDecoder decoder(model);
            MropeRotary rotary(model.config.text);
            auto ids = input_ids.to(decoder.device(), at::kLong);
            KVCache cache = decoder.make_cache(ids.size(0), ids.size(1));
            if (attention_mask) cache.set_prompt_mask(*attention_mask);
            auto [cos, sin] = rotary.cos_sin(position_ids.to(decoder.device(), at::kLong), decoder.dtype());
            const int64_t S = ids.size(1);
            if (split < 0 || split >= S) split = 0;
            std::vector<std::pair<int64_t, int64_t>> chunks;
            if (split > 0) chunks = {{0, split}, {split, S - split}};
            else chunks = {{0, S}};
            std::vector<at::Tensor> hidden, logits;
            std::vector<std::vector<at::Tensor>> per_chunk;
            for (auto [from, n] : chunks) {
                per_chunk.emplace_back();
                hidden.push_back(decoder.forward(ids.narrow(1, from, n), cos.narrow(1, from, n),
                                                 sin.narrow(1, from, n), cache, &per_chunk.back()));
            }
            std::vector<at::Tensor> layers;
            for (size_t l = 0; l < per_chunk[0].size(); ++l) {
                std::vector<at::Tensor> parts;
                for (const auto& c : per_chunk) parts.push_back(c[l]);
                layers.push_back(at::cat(parts, 1));
            }
            return std::make_tuple(decoder.logits(at::cat(hidden, 1)), layers);
        },
        py::arg("pipe"), py::arg("input_ids"), py::arg("position_ids"), py::arg("attention_mask") = py::none(),
        py::arg("split") = 0);

    m.def(
        "ar_generate",
        [](Pipeline& p, const at::Tensor& input_ids, const at::Tensor& image_grid_thw,
           std::vector<int64_t> images_per_sample, std::optional<at::Tensor> attention_mask, int64_t max_new_tokens,
           bool do_sample, double temperature, int64_t top_k, double top_p, uint64_t seed, bool keep_in_codebook,
           bool record_logits, std::optional<at::Tensor> forced_tokens, const std::string& decode) {
            auto& model = ar_model(p);
            ArRequest req;
            req.input_ids = input_ids;
            req.attention_mask = opt_tensor(attention_mask);
            req.grids = to_grids(image_grid_thw);
            req.images_per_sample = std::move(images_per_sample);
            req.forced_tokens = opt_tensor(forced_tokens);
            ArGenerateOptions opt;
            opt.max_new_tokens = max_new_tokens;
            opt.sampling.do_sample = do_sample;
            opt.sampling.temperature = temperature;
            opt.sampling.top_k = top_k;
            opt.sampling.top_p = top_p;
            opt.seed = seed;
            opt.sampling.keep_in_codebook = keep_in_codebook;
            opt.record_logits = record_logits;
            opt.decode = parse_ar_decode(decode);
            ArResult res;
            {
                py::gil_scoped_release release;
                ArGenerator gen(model);
                res = gen.generate(req, opt);
            }
            py::dict out;
            out["sequences"] = res.sequences;
            out["generated"] = res.generated;
            out["prior_ids"] = res.prior_ids.defined() ? py::cast(res.prior_ids) : py::none();
            out["grid_h"] = res.grid_h;
            out["grid_w"] = res.grid_w;
            out["grid_offset"] = res.grid_offset;
            out["step_logits"] = res.step_logits;
            out["decode"] = res.decode;
            return out;
        },
        py::arg("pipe"), py::arg("input_ids"), py::arg("image_grid_thw"),
        py::arg("images_per_sample") = std::vector<int64_t>{}, py::arg("attention_mask") = py::none(),
        py::arg("max_new_tokens") = -1, py::arg("do_sample") = false, py::arg("temperature") = 1.0,
        py::arg("top_k") = 50, py::arg("top_p") = 1.0, py::arg("seed") = 0, py::arg("keep_in_codebook") = true,
        py::arg("record_logits") = false, py::arg("forced_tokens") = py::none(), py::arg("decode") = "eager");
}

}  // namespace glmimage::python
