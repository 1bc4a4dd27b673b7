// glmimage._C._testing: tensors in and out of single components, for parity tests
// against the reference. Not a stable API.
#include <torch/extension.h>

#include "io/weight_binder.h"
#include "testing_access.h"

namespace glmimage::python {

namespace {

ParamModule& component(Pipeline& p, const std::string& folder) {
    auto& impl = impl_of(p);
    if (folder == "vision_language_encoder") return *impl.ar;
    if (folder == "text_encoder") return *impl.text_encoder;
    if (folder == "transformer") return *impl.transformer;
    if (folder == "vae") return *impl.vae;
    throw InputError("no component '" + folder + "'");
}

}  // namespace

void register_testing(pybind11::module_& m) {
    namespace py = pybind11;
    // Every bound parameter of a component, as the C++ side holds it.
    m.def("state_dict", [](Pipeline& p, const std::string& folder) {
        std::map<std::string, at::Tensor> out;
        for (const auto& item : component(p, folder).named_parameters(/*recurse=*/true))
            out[item.key()] = item.value();
        return out;
    });
}

}  // namespace glmimage::python
