// glmimage._C: the Python module of the product. module.cpp only calls the register_* functions.
// The research hooks are a separate extension (python/testing/, built with the tests).
#include <pybind11/pybind11.h>

namespace glmimage::python {
void register_errors(pybind11::module_& m);
void register_pipeline(pybind11::module_& m);
}  // namespace glmimage::python

PYBIND11_MODULE(_C, m) {
    m.doc() = "glmimage native core";
    glmimage::python::register_errors(m);
    glmimage::python::register_pipeline(m);
}
