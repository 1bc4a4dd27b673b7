// glmimage.Pipeline bindings (loading and inspection for now).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "glmimage/glmimage.h"

namespace glmimage::python {

void register_pipeline(pybind11::module_& m) {
    namespace py = pybind11;
    py::class_<ComponentInfo>(m, "ComponentInfo")
        .def_readonly("folder", &ComponentInfo::folder)
        .def_readonly("class_name", &ComponentInfo::class_name)
        .def_readonly("summary", &ComponentInfo::summary)
        .def_readonly("dtype", &ComponentInfo::dtype)
        .def_readonly("num_tensors", &ComponentInfo::num_tensors)
        .def_readonly("num_parameters", &ComponentInfo::num_parameters)
        .def_readonly("zero_copy", &ComponentInfo::zero_copy);
    py::class_<Pipeline>(m, "Pipeline")
        .def_static(
            "from_pretrained",
            [](const std::string& path, const std::string& dtype, const std::string& device, int threads) {
                LoadOptions o;
                o.dtype = dtype;
                o.device = device;
                o.threads = threads;
                py::gil_scoped_release release;  // loading maps files and may cast: no Python needed
                return Pipeline::load(path, o);
            },
            py::arg("path"), py::arg("dtype") = "auto", py::arg("device") = "cpu", py::arg("threads") = 0)
        .def_property_readonly("components", &Pipeline::components)
        .def("summary", &Pipeline::summary);
    m.def("version", &version);
}

}  // namespace glmimage::python
