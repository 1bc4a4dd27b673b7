// glmimage._C.Pipeline: loading, inspection and generation. The user-facing argument handling
// (PIL images, torch generators, output types, tqdm) lives in python/glmimage/pipeline.py; this
// file only moves plain data across and manages the GIL around the long C++ calls.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "glmimage/glmimage.h"

namespace glmimage::python {

namespace py = pybind11;

namespace {

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A numpy uint8 array [H, W, 3] -> Image. Checked here so a wrong shape is a ValueError with the
// argument's name, never a read past the buffer.
Image image_from_array(const py::array& any, const std::string& what) {
    if (any.dtype().kind() != 'u' || any.itemsize() != 1)
        throw InputError(what + ": expected a uint8 array, got dtype " + std::string(py::str(any.dtype())));
    U8Array a = U8Array::ensure(any);
    if (!a || a.ndim() != 3 || a.shape(2) != 3)
        throw InputError(what + ": expected an array of shape [height, width, 3]");
    Image img;
    img.height = a.shape(0);
    img.width = a.shape(1);
    img.rgb.resize(static_cast<size_t>(a.size()));
    if (a.size() > 0) std::memcpy(img.rgb.data(), a.data(), img.rgb.size());
    img.validate(what);
    return img;
}

py::array image_to_array(const Image& img) {
    U8Array out({img.height, img.width, int64_t{3}});
    if (!img.rgb.empty()) std::memcpy(out.mutable_data(), img.rgb.data(), img.rgb.size());
    return py::array(std::move(out));
}

// Keeps what the progress callback saw go wrong on the Python side (an exception raised by the
// user's callback, or Ctrl-C) so it can be re-raised once the C++ call has unwound. The C++ side
// only learns "cancelled"; the Python caller should see the real reason.
struct PendingError {
    std::optional<py::error_already_set> error;
};

// Builds the C++ progress callback. It must not copy Python objects (C++ may copy the
// std::function while the GIL is released), so it holds only a borrowed handle: the callable is
// owned by the binding's caller for the whole call.
ProgressCallback make_progress(Pipeline& pipe, py::handle callback, PendingError& pending) {
    return [&pipe, callback, &pending](const Progress& p) {
        py::gil_scoped_acquire gil;
        if (pending.error) return;  // already cancelling
        // Ctrl-C sets a flag that only the interpreter's main thread turns into KeyboardInterrupt;
        // C++ never runs the eval loop, so check here, once per step.
        if (PyErr_CheckSignals() != 0) {
            pending.error.emplace();
            pipe.cancel();
            return;
        }
        if (!callback || callback.is_none()) return;
        try {
            callback(p.stage, p.step, p.total);
        } catch (py::error_already_set& e) {
            pending.error.emplace(std::move(e));
            pipe.cancel();
        }
    };
}

// float32 values of `shape` (a step's latents, the returned latents) as a new numpy array.
F32Array float_array(const std::vector<int64_t>& shape, const std::vector<float>& values) {
    F32Array a(shape);
    if (static_cast<size_t>(a.size()) != values.size())
        throw std::logic_error("float_array: " + std::to_string(values.size()) + " values for a shape of " +
                               std::to_string(a.size()));
    if (!values.empty()) std::memcpy(a.mutable_data(), values.data(), values.size() * sizeof(float));
    return a;
}

// Builds the C++ step callback from `step_end(step, total, sigma, timestep, guidance, latents)`,
// latents a float32 array [B, C, h, w] of the step's values, which it returns, changed or not (or
// another array), with whether to stop and the guidance of the steps after: (latents, stop,
// guidance). Python's errors are kept and cancel the call, as the
// progress callback's are; a None callable makes an empty callback (no copies per step).
DenoiseStepCallback make_step_end(Pipeline& pipe, py::handle step_end, PendingError& pending) {
    if (!step_end || step_end.is_none()) return {};
    return [&pipe, step_end, &pending](DenoiseStep& s) {
        py::gil_scoped_acquire gil;
        if (pending.error) return;  // already cancelling
        try {
            py::tuple out =
                step_end(s.step, s.total, s.sigma, s.timestep, s.guidance, float_array(s.shape, s.latents));
            F32Array back = F32Array::ensure(out[0]);
            if (!back) throw py::error_already_set();
            s.latents.assign(back.data(), back.data() + back.size());  // sizes checked by the decoder
            s.stop = out[1].cast<bool>();
            s.guidance = out[2].cast<double>();  // its range checked by the decoder
        } catch (py::error_already_set& e) {
            pending.error.emplace(std::move(e));
            pipe.cancel();
        }
    };
}

// Runs one of the Pipeline's long calls with the GIL released, re-raising a pending Python error
// (callback exception, KeyboardInterrupt) in preference to the CancelledError it caused.
template <class F>
auto run_released(Pipeline& pipe, py::handle callback, F&& f, py::handle step_end = py::none()) {
    PendingError pending;
    ProgressCallback progress = make_progress(pipe, callback, pending);
    DenoiseStepCallback on_step_end = make_step_end(pipe, step_end, pending);
    using R = decltype(f(progress, on_step_end));
    std::optional<R> result;
    std::exception_ptr failure;
    {
        py::gil_scoped_release release;
        try {
            result.emplace(f(progress, on_step_end));
        } catch (...) {
            failure = std::current_exception();
        }
    }
    if (pending.error) throw std::move(*pending.error);
    if (failure) std::rethrow_exception(failure);
    return std::move(*result);
}

py::dict timings_dict(const GenerateResult& r) {
    py::dict d;
    for (const auto& t : r.timings) {
        d[py::str(t.stage)] = t.seconds;
        if (t.stage == "ar" && !t.detail.empty()) d["ar_decode"] = t.detail;  // the path that ran
        if (t.stage == "decoder") {
            if (!t.detail.empty()) d["cfg"] = t.detail;  // how the CFG passes ran
            d["dit_passes"] = r.dit_passes;
            d["dit_passes_cached"] = r.dit_passes_cached;
        }
    }
    return d;
}

// (images, prior tokens, timings, values): images the uint8 arrays of Output::kImages; values the
// float32 array of the other outputs (the float images or the latents), else None.
py::tuple result_tuple(GenerateResult&& r) {
    py::list images;
    for (const auto& img : r.images) images.append(image_to_array(img));
    auto timings = timings_dict(r);
    py::object values = py::none();
    if (!r.latents_shape.empty()) values = float_array(r.latents_shape, r.latents);
    if (!r.float_images_shape.empty()) values = float_array(r.float_images_shape, r.float_images);
    return py::make_tuple(images, std::move(r.prior_tokens), timings, values);
}

// components: {folder: {"device": ..., "dtype": ..., "residency": ...}} overrides.
std::unique_ptr<Pipeline> load(const std::string& path, const std::string& dtype, const std::string& device,
                               const std::string& residency,
                               const std::map<std::string, std::map<std::string, std::string>>& components,
                               const std::string& quantize, const std::string& ar_decode,
                               const std::string& cfg_passes, bool cpu_block_cache) {
    LoadOptions o;
    o.quantize = quantize;
    o.ar_decode = ar_decode;
    o.cfg_passes = cfg_passes;
    o.cpu_block_cache = cpu_block_cache;
    o.dtype = dtype;
    o.device = device;
    o.residency = residency;
    for (const auto& [folder, fields] : components) {
        ComponentPlacement& place = o.components[folder];
        for (const auto& [key, value] : fields) {
            if (key == "device") place.device = value;
            else if (key == "dtype") place.dtype = value;
            else if (key == "residency") place.residency = value;
            else throw InputError("components['" + folder + "']: unknown key '" + key +
                                  "' (expected device, dtype, residency)");
        }
    }
    py::gil_scoped_release release;  // loading maps files and may cast: no Python needed
    return Pipeline::load(path, o);
}

}  // namespace

void register_pipeline(py::module_& m) {
    py::class_<ComponentInfo>(m, "ComponentInfo")
        .def_readonly("folder", &ComponentInfo::folder)
        .def_readonly("class_name", &ComponentInfo::class_name)
        .def_readonly("summary", &ComponentInfo::summary)
        .def_readonly("dtype", &ComponentInfo::dtype)
        .def_readonly("device", &ComponentInfo::device)
        .def_readonly("residency", &ComponentInfo::residency)
        .def_readonly("num_tensors", &ComponentInfo::num_tensors)
        .def_readonly("num_parameters", &ComponentInfo::num_parameters)
        .def_readonly("zero_copy", &ComponentInfo::zero_copy)
        .def_readonly("quantized", &ComponentInfo::quantized)
        .def_readonly("fused", &ComponentInfo::fused);

    py::class_<ArSettings>(m, "ArSettings")
        .def(py::init<>())
        .def_readwrite("do_sample", &ArSettings::do_sample)
        .def_readwrite("temperature", &ArSettings::temperature)
        .def_readwrite("top_p", &ArSettings::top_p)
        .def_readwrite("top_k", &ArSettings::top_k)
        .def_readwrite("keep_in_codebook", &ArSettings::keep_in_codebook)
        .def("validate", &ArSettings::validate);

    py::class_<GenerateRequest> request(m, "GenerateRequest");
    py::enum_<GenerateRequest::Output>(request, "Output")
        .value("images", GenerateRequest::Output::kImages)
        .value("float_images", GenerateRequest::Output::kFloatImages)
        .value("latents", GenerateRequest::Output::kLatents);
    request
        .def(py::init<>())
        .def_readwrite("prompts", &GenerateRequest::prompts)
        .def_readwrite("height", &GenerateRequest::height)
        .def_readwrite("width", &GenerateRequest::width)
        .def_readwrite("steps", &GenerateRequest::steps)
        .def_readwrite("guidance", &GenerateRequest::guidance)
        .def_readwrite("seed", &GenerateRequest::seed)
        .def_readwrite("images_per_prompt", &GenerateRequest::images_per_prompt)
        .def_readwrite("ar", &GenerateRequest::ar)
        .def_readwrite("timestep_label", &GenerateRequest::timestep_label)
        .def_readwrite("max_sequence_length", &GenerateRequest::max_sequence_length)
        .def_readwrite("first_block_cache", &GenerateRequest::first_block_cache)
        .def_readwrite("output", &GenerateRequest::output)
        .def_readwrite("prompt_embeds", &GenerateRequest::prompt_embeds)
        .def_readwrite("prompt_embeds_shape", &GenerateRequest::prompt_embeds_shape)
        .def_readwrite("negative_prompt_embeds", &GenerateRequest::negative_prompt_embeds)
        .def_readwrite("negative_prompt_embeds_shape", &GenerateRequest::negative_prompt_embeds_shape)
        .def_readwrite("timesteps", &GenerateRequest::timesteps)
        .def_readwrite("sigmas", &GenerateRequest::sigmas)
        .def_readwrite("latents", &GenerateRequest::latents)
        .def_readwrite("latents_shape", &GenerateRequest::latents_shape)
        .def_readwrite("crop_top", &GenerateRequest::crop_top)
        .def_readwrite("crop_left", &GenerateRequest::crop_left)
        // Condition images as numpy uint8 [H, W, 3] arrays, one list per prompt.
        .def("set_images",
             [](GenerateRequest& r, const std::vector<std::vector<py::array>>& per_prompt) {
                 std::vector<std::vector<Image>> images;
                 for (size_t i = 0; i < per_prompt.size(); ++i) {
                     images.emplace_back();
                     for (size_t j = 0; j < per_prompt[i].size(); ++j)
                         images.back().push_back(image_from_array(
                             per_prompt[i][j], "image[" + std::to_string(i) + "][" + std::to_string(j) + "]"));
                 }
                 r.images = std::move(images);
             })
        .def_property_readonly("num_images", [](const GenerateRequest& r) {
            std::vector<size_t> n;
            for (const auto& list : r.images) n.push_back(list.size());
            return n;
        })
        .def("num_prompts", &GenerateRequest::num_prompts)
        .def("validate", &GenerateRequest::validate)
        .def("__repr__", &GenerateRequest::to_string);

    py::class_<PriorTokens>(m, "PriorTokens")
        .def(py::init<>())
        .def_readwrite("grid_h", &PriorTokens::grid_h)
        .def_readwrite("grid_w", &PriorTokens::grid_w)
        .def_readwrite("ids", &PriorTokens::ids)
        .def_readwrite("condition_ids", &PriorTokens::condition_ids)
        .def_readonly("condition_grids", &PriorTokens::condition_grids)
        .def_readonly("ar_decode", &PriorTokens::ar_decode);

    py::class_<Pipeline>(m, "Pipeline")
        // A constructor (not only the factory) so that Python can subclass the pipeline and the
        // subclass instances still pass as Pipeline& to the _testing entry points.
        .def(py::init(&load), py::arg("path"), py::arg("dtype") = "auto", py::arg("device") = "cpu",
             py::arg("residency") = "resident",
             py::arg("components") = std::map<std::string, std::map<std::string, std::string>>{},
             py::arg("quantize") = "none", py::arg("ar_decode") = "auto", py::arg("cfg_passes") = "auto",
             py::arg("cpu_block_cache") = true)
        // Another pipeline over the same loaded weights (no copy), with its own session.
        .def(py::init([](const Pipeline& other) { return std::make_unique<Pipeline>(other.shared_model()); }),
             py::arg("other"))
        // Calls that start from now on run on `other`'s weights (Session::replace_model; a running
        // call finishes on its own). pipe.to() and enable_model_cpu_offload() hand a fresh load here.
        .def(
            "_replace_model", [](Pipeline& p, const Pipeline& other) { p.replace_model(other.shared_model()); },
            py::arg("other"))
        .def_property_readonly("components", &Pipeline::components)
        .def("summary", &Pipeline::summary)
        // Thread-safe: meant to be called from another thread or from the progress callback.
        .def("cancel", &Pipeline::cancel)
        // -> (list of uint8 [H, W, 3] arrays, PriorTokens, {stage: seconds})
        .def(
            "_generate",
            [](Pipeline& p, const GenerateRequest& req, py::object callback, py::object step_end) {
                return result_tuple(run_released(
                    p, callback,
                    [&](const ProgressCallback& prog, const DenoiseStepCallback& end) {
                        return p.generate(req, prog, end);
                    },
                    step_end));
            },
            py::arg("request"), py::arg("callback") = py::none(), py::arg("step_end") = py::none())
        .def(
            "_generate_prior_tokens",
            [](Pipeline& p, const GenerateRequest& req, py::object callback) {
                return run_released(p, callback, [&](const ProgressCallback& prog, const DenoiseStepCallback&) {
                    return p.generate_prior_tokens(req, prog);
                });
            },
            py::arg("request"), py::arg("callback") = py::none())
        // -> (prompt_embeds or None, negative_prompt_embeds): float32 arrays [prompts, L, C], [prompts, 1, C]
        .def(
            "_encode_prompts",
            [](Pipeline& p, const GenerateRequest& req) {
                auto encode = [&](const ProgressCallback&, const DenoiseStepCallback&) {
                    return p.encode_prompts(req);
                };
                PromptEmbeddings e = run_released(p, py::none(), encode);
                // No prompts (their embeddings given): no prompt embeddings made, None.
                py::object made = py::none();
                if (!e.prompt_embeds_shape.empty()) made = float_array(e.prompt_embeds_shape, e.prompt_embeds);
                return py::make_tuple(made, float_array(e.negative_prompt_embeds_shape, e.negative_prompt_embeds));
            },
            py::arg("request"))
        .def(
            "_decode",
            [](Pipeline& p, const GenerateRequest& req, const PriorTokens& prior, py::object callback,
               py::object step_end) {
                return result_tuple(run_released(
                    p, callback,
                    [&](const ProgressCallback& prog, const DenoiseStepCallback& end) {
                        return p.decode_prior_tokens(req, prior, prog, end);
                    },
                    step_end));
            },
            py::arg("request"), py::arg("prior"), py::arg("callback") = py::none(),
            py::arg("step_end") = py::none())
        .def("_sampling_defaults", [](const Pipeline& p) { return p.model().sampling_defaults(); })
        .def("_sampling_defaults_source", [](const Pipeline& p) { return p.model().sampling_defaults_source(); })
        // The checkpoint's rules for a request (GenerateRequest.validate plus condition-image fit).
        .def("_validate", [](const Pipeline& p, const GenerateRequest& req) { p.model().validate(req); });
    m.def("version", &version);
    m.def("glyph_texts", &glyph_texts, py::arg("prompt"),
          "The quoted texts of one prompt the glyph encoder renders (diffusers' get_glyph_texts).");
    m.def("set_num_threads", &set_num_threads, py::arg("threads"),
          "LibTorch's intra-op CPU threads for the whole process (0 keeps its default).");
    m.def("num_threads", &num_threads);
}

}  // namespace glmimage::python
