// C++ errors as Python exceptions: InputError is a ValueError, the rest RuntimeErrors.
#include <pybind11/pybind11.h>

#include "glmimage/errors.h"

namespace glmimage::python {

void register_errors(pybind11::module_& m) {
    namespace py = pybind11;
    static py::exception<Error> error(m, "Error", PyExc_RuntimeError);
    static py::exception<InputError> input_error(m, "InputError", PyExc_ValueError);
    static py::exception<FormatError> format_error(m, "FormatError", error.ptr());
    static py::exception<ConfigError> config_error(m, "ConfigError", error.ptr());
    static py::exception<WeightError> weight_error(m, "WeightError", error.ptr());
    static py::exception<UnsupportedError> unsupported_error(m, "UnsupportedError", error.ptr());
    // A RuntimeError like the rest: the request was valid, the caller stopped it (Pipeline.cancel()).
    static py::exception<CancelledError> cancelled_error(m, "CancelledError", error.ptr());
    // Most specific first: the translator is tried in registration order.
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const InputError& e) {
            py::set_error(input_error, e.what());
        } catch (const FormatError& e) {
            py::set_error(format_error, e.what());
        } catch (const ConfigError& e) {
            py::set_error(config_error, e.what());
        } catch (const WeightError& e) {
            py::set_error(weight_error, e.what());
        } catch (const UnsupportedError& e) {
            py::set_error(unsupported_error, e.what());
        } catch (const CancelledError& e) {
            py::set_error(cancelled_error, e.what());
        } catch (const Error& e) {
            py::set_error(error, e.what());
        }
    });
}

}  // namespace glmimage::python
