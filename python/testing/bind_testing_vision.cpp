// glmimage._C._testing entry points for condition-image tokenization: the image processor
// (smart_resize, PIL-exact bicubic, patches), the vision encoder, the VQ ids and their 2x
// upsampling, on a loaded pipeline. For parity tests; not a stable API.
#include <torch/extension.h>

#include <string>
#include <utility>
#include <vector>

#include "models/glm_ar/vision_preprocess.h"
#include "models/glm_ar/vision_encoder.h"
#include "testing_access.h"

namespace glmimage::python {

namespace {

GlmArModel& ar_model(Pipeline& p) {
    if (!impl_of(p).ar) throw InputError("pipeline has no vision_language_encoder");
    return *impl_of(p).ar;
}

const PreprocessorConfig& processor_config(Pipeline& p) { return impl_of(p).preprocessor; }

}  // namespace

void register_testing_vision(pybind11::module_& m) {
    namespace py = pybind11;
    m.def(
        "smart_resize",
        [](int64_t h, int64_t w, int64_t factor, int64_t min_pixels, int64_t max_pixels) {
            const ImageSize s = smart_resize(h, w, factor, min_pixels, max_pixels);
            return std::make_pair(s.height, s.width);
        },
        py::arg("height"), py::arg("width"), py::arg("factor") = 16, py::arg("min_pixels") = 512 * 512,
        py::arg("max_pixels") = 2048 * 2048);
    m.def(
        "vision_resize_bicubic",
        [](const at::Tensor& image, int64_t h, int64_t w) {
            py::gil_scoped_release release;
            return resize_bicubic_u8(image, h, w);
        },
        py::arg("image"), py::arg("height"), py::arg("width"));
    m.def(
        "vision_resize_lanczos",
        [](const at::Tensor& image, int64_t h, int64_t w) {
            py::gil_scoped_release release;
            return resize_u8(image, h, w, ResampleFilter::kLanczos);
        },
        py::arg("image"), py::arg("height"), py::arg("width"));
    // images: uint8 [H, W, 3] tensors; returns (pixel_values, image_grid_thw).
    m.def(
        "vision_preprocess",
        [](Pipeline& p, const std::vector<at::Tensor>& images) {
            const auto& config = processor_config(p);
            py::gil_scoped_release release;
            auto out = preprocess_images(images, config);
            return std::make_pair(out.pixel_values, out.grid_thw);
        },
        py::arg("pipe"), py::arg("images"));
    m.def(
        "vision_encode",
        [](Pipeline& p, const at::Tensor& pixel_values, const at::Tensor& grid_thw) {
            auto& ar = ar_model(p);
            py::gil_scoped_release release;
            return vision_encode(*ar.visual, ar.config.vision, pixel_values, grid_thw);
        },
        py::arg("pipe"), py::arg("pixel_values"), py::arg("grid_thw"));
    m.def(
        "vision_vq_ids",
        [](Pipeline& p, const at::Tensor& features, const at::Tensor& grid_thw) {
            auto& ar = ar_model(p);
            py::gil_scoped_release release;
            return vq_token_ids(*ar.vqmodel, features, grid_thw);
        },
        py::arg("pipe"), py::arg("features"), py::arg("grid_thw"));
    m.def(
        "vision_token_ids",
        [](Pipeline& p, const at::Tensor& pixel_values, const at::Tensor& grid_thw) {
            auto& ar = ar_model(p);
            py::gil_scoped_release release;
            return image_token_ids(ar, pixel_values, grid_thw);
        },
        py::arg("pipe"), py::arg("pixel_values"), py::arg("grid_thw"));
    m.def(
        "vision_upsample_ids_2x",
        [](const at::Tensor& ids, const at::Tensor& grid_thw) {
            py::gil_scoped_release release;
            return upsample_token_ids_2x(ids, grid_thw);
        },
        py::arg("ids"), py::arg("grid_thw"));
}

}  // namespace glmimage::python
