#include "pipeline/residency.h"

#include "core/check.h"
#include "io/weight_binder.h"
#include "layers/linear.h"

namespace glmimage {

namespace {

bool starts_with_any(const std::string& name, const std::vector<std::string>& prefixes) {
    for (const auto& p : prefixes)
        if (name.rfind(p, 0) == 0) return true;
    return false;
}

}  // namespace

ComponentResidency::ComponentResidency(std::string folder, ParamModule& module, io::WeightIndex weights,
                                       at::Device device, at::ScalarType dtype, bool staged,
                                       std::vector<ResidencyPart> parts)
    : folder_(std::move(folder)),
      module_(module),
      weights_(std::move(weights)),
      device_(device),
      dtype_(dtype),
      staged_(staged),
      parts_(parts.empty() ? std::vector<ResidencyPart>{{"all", {""}, false}} : std::move(parts)),
      users_(parts_.size(), 0) {
    for (const auto& spec : io::parameter_specs(module_)) {
        size_t owners = 0;
        for (const auto& p : parts_) owners += starts_with_any(spec.name, p.prefixes);
        GLMI_CHECK(owners == 1, folder_, ": parameter '", spec.name, "' is in ", owners, " residency parts");
    }
}

// The part's weights from the file, and what was derived from them at load (quantized weights
// and their scales), on `device`.
void ComponentResidency::place(size_t part, std::optional<at::ScalarType> dtype, at::Device device) const {
    const auto& prefixes = parts_[part].prefixes;
    io::place_weights(module_, weights_, dtype, device,
                      [&](const std::string& name) { return starts_with_any(name, prefixes); });
    for (const auto& item : module_.named_modules(/*name_prefix=*/"", /*include_self=*/false))
        if (auto* lin = dynamic_cast<Linear*>(item.value().get());
            lin && lin->weight_scale.defined() && starts_with_any(item.key() + ".weight", prefixes))
            lin->weight_scale = lin->weight_scale.to(device);
}

void ComponentResidency::acquire(size_t part) const {
    if (!staged_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (users_[part]++ == 0) {
        try {
            place(part, dtype_, parts_[part].on_host ? at::Device(at::kCPU) : device_);
        } catch (...) {
            // Back to the views, so a failed placement (out of device memory) leaves the
            // component usable by a later, smaller call.
            users_[part] = 0;
            place(part, std::nullopt, at::kCPU);
            throw;
        }
    }
}

void ComponentResidency::release(size_t part) const {
    if (!staged_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    // Back to zero-copy views of the file: the device copies are freed with the last use.
    if (--users_[part] == 0) place(part, std::nullopt, at::kCPU);
}

ComponentResidency::Use ComponentResidency::use(const std::vector<std::string>& names) const {
    std::vector<size_t> parts;
    for (size_t i = 0; i < parts_.size(); ++i) {
        bool wanted = names.empty();
        for (const auto& n : names) wanted = wanted || n == parts_[i].name;
        if (wanted) parts.push_back(i);
    }
    GLMI_CHECK(!parts.empty(), folder_, ": no residency part named in the use");
    return Use(this, std::move(parts));
}

ComponentResidency::Use::Use(const ComponentResidency* r, std::vector<size_t> parts) : r_(r), parts_(std::move(parts)) {
    size_t placed = 0;
    try {
        for (; placed < parts_.size(); ++placed) r_->acquire(parts_[placed]);
    } catch (...) {
        for (size_t i = 0; i < placed; ++i) r_->release(parts_[i]);
        throw;
    }
}

ComponentResidency::Use::~Use() {
    if (!r_) return;
    for (size_t p : parts_) {
        try {
            r_->release(p);
        } catch (...) {
            // Destructors must not throw; the views cannot fail to be made once the load succeeded.
        }
    }
}

}  // namespace glmimage
