// glmimage._C: the Python module. module.cpp only calls the register_* functions.
#include <torch/extension.h>

namespace glmimage::python {
void register_errors(pybind11::module_& m);
void register_pipeline(pybind11::module_& m);
void register_testing(pybind11::module_& m);
void register_testing_dit(pybind11::module_& m);
void register_testing_t5_vae(pybind11::module_& m);
void register_testing_sampling(pybind11::module_& m);
void register_testing_tokenizer(pybind11::module_& m);
void register_testing_ar(pybind11::module_& m);
void register_testing_vision(pybind11::module_& m);
void register_testing_decoder(pybind11::module_& m);
}  // namespace glmimage::python

PYBIND11_MODULE(_C, m) {
    m.doc() = "glmimage native core";
    glmimage::python::register_errors(m);
    glmimage::python::register_pipeline(m);
    auto testing = m.def_submodule("_testing", "component-level entry points for parity tests (unstable)");
    glmimage::python::register_testing(testing);
    glmimage::python::register_testing_dit(testing);
    glmimage::python::register_testing_t5_vae(testing);
    glmimage::python::register_testing_sampling(testing);
    glmimage::python::register_testing_tokenizer(testing);
    glmimage::python::register_testing_ar(testing);
    glmimage::python::register_testing_vision(testing);
    glmimage::python::register_testing_decoder(testing);
}
