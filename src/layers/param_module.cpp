#include "layers/param_module.h"

#include "core/check.h"

namespace glmimage {

std::vector<std::string> ParamModule::own_parameter_names() const {
    std::vector<std::string> names;
    for (const auto& s : slots_) names.push_back(s.first);
    return names;
}

void ParamModule::replace_parameter(const std::string& name, const at::Tensor& value) {
    for (auto& [slot_name, member] : slots_) {
        if (slot_name != name) continue;
        *member = value;
        parameters_[name] = value;
        return;
    }
    throw Error(detail::str_cat("no parameter '", name, "' in module ", this->name()));
}

}  // namespace glmimage
