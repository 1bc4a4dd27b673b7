// glmimage._C._testing: the GLM tokenizer and the text side of the GLM-Image processor, for
// parity tests against `tokenizers` / transformers' GlmImageProcessor. Batch entry points take
// and return plain lists so a test of 10,000 strings is one call.
#include <torch/extension.h>

#include "tokenizers/bpe_tokenizer.h"
#include "tokenizers/prompt_processor.h"

namespace glmimage::python {

void register_testing_tokenizer(pybind11::module_& m) {
    namespace py = pybind11;
    using Ids = std::vector<int64_t>;

    py::class_<BpeTokenizer>(m, "BpeTokenizer")
        .def(py::init([](const std::string& path) { return BpeTokenizer::from_file(path); }), py::arg("path"))
        .def_static("from_str", &BpeTokenizer::from_json_text, py::arg("json"), py::arg("where") = "tokenizer.json")
        .def("encode", &BpeTokenizer::encode, py::arg("text"), py::call_guard<py::gil_scoped_release>())
        .def(
            "encode_batch",
            [](const BpeTokenizer& t, const std::vector<std::string>& texts) {
                py::gil_scoped_release nogil;
                std::vector<Ids> out;
                out.reserve(texts.size());
                for (const auto& s : texts) out.push_back(t.encode(s));
                return out;
            },
            py::arg("texts"))
        .def("decode", &BpeTokenizer::decode, py::arg("ids"), py::arg("skip_special_tokens") = false)
        .def(
            "decode_batch",
            [](const BpeTokenizer& t, const std::vector<Ids>& ids, bool skip) {
                py::gil_scoped_release nogil;
                std::vector<std::string> out;
                out.reserve(ids.size());
                for (const auto& x : ids) out.push_back(t.decode(x, skip));
                return out;
            },
            py::arg("ids"), py::arg("skip_special_tokens") = false)
        .def("token_to_id", &BpeTokenizer::token_to_id, py::arg("token"))
        .def("id_to_token", &BpeTokenizer::id_to_token, py::arg("id"))
        .def_property_readonly("vocab_size", &BpeTokenizer::vocab_size);

    py::class_<PromptProcessor>(m, "PromptProcessor")
        .def(py::init([](const std::string& dir) { return PromptProcessor::from_dir(dir, PreprocessorConfig::from_file(dir + "/preprocessor_config.json")); }), py::arg("processor_dir"))
        // images[b] = the (height, width) of sample b's condition images; all empty for t2i.
        .def(
            "__call__",
            [](const PromptProcessor& p, const std::vector<std::string>& prompts,
               const std::vector<std::vector<std::pair<int64_t, int64_t>>>& images, int64_t target_h, int64_t target_w) {
                std::vector<std::vector<ImageSize>> sizes;
                for (const auto& row : images) {
                    sizes.emplace_back();
                    for (const auto& [h, w] : row) sizes.back().push_back({h, w});
                }
                const PromptProcessorOutput o = p.process(prompts, sizes, target_h, target_w);
                py::dict d;
                d["input_ids"] = o.input_ids;
                d["attention_mask"] = o.attention_mask;
                std::vector<std::vector<int64_t>> grids;
                for (const auto& g : o.image_grid_thw) grids.push_back({g[0], g[1], g[2]});
                d["image_grid_thw"] = grids;
                d["images_per_sample"] = o.images_per_sample;
                d["texts"] = o.texts;
                return d;
            },
            py::arg("prompts"), py::arg("images"), py::arg("target_h"), py::arg("target_w"))
        .def("render", &PromptProcessor::render, py::arg("prompt"), py::arg("num_images"));
    // smart_resize, the one rule both the processor and the vision preprocessing apply, is
    // bound once, in bind_testing_vision.cpp.
}

}  // namespace glmimage::python
