// glmimage_testing: component-level entry points (tensors in and out of single components) for
// the parity tests and research harnesses. Built with the tests, never shipped in the wheel; not a
// stable API. It takes the product module's glmimage.Pipeline objects (their types are shared
// through pybind11's registry), so glmimage is imported first.
#include <torch/extension.h>

namespace glmimage::python {
void register_testing(pybind11::module_& m);
void register_testing_dit(pybind11::module_& m);
void register_testing_t5_vae(pybind11::module_& m);
void register_testing_sampling(pybind11::module_& m);
void register_testing_tokenizer(pybind11::module_& m);
void register_testing_ar(pybind11::module_& m);
void register_testing_vision(pybind11::module_& m);
void register_testing_decoder(pybind11::module_& m);
void register_testing_kernels(pybind11::module_& m);
}  // namespace glmimage::python

PYBIND11_MODULE(glmimage_testing, m) {
    pybind11::module_::import("glmimage");  // registers Pipeline and the error types
    m.doc() = "glmimage research hooks: per-component entry points for parity tests (unstable)";
    glmimage::python::register_testing(m);
    glmimage::python::register_testing_dit(m);
    glmimage::python::register_testing_t5_vae(m);
    glmimage::python::register_testing_sampling(m);
    glmimage::python::register_testing_tokenizer(m);
    glmimage::python::register_testing_ar(m);
    glmimage::python::register_testing_vision(m);
    glmimage::python::register_testing_decoder(m);
    glmimage::python::register_testing_kernels(m);
}
