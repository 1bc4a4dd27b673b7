#include "pipeline/residency.h"

#include "io/weight_binder.h"
#include "layers/linear.h"

namespace glmimage {

namespace {

// The weights from the file, and what was derived from them at load (quantized weights and
// their scales), on `device`.
void place(ParamModule& module, const io::WeightIndex& weights, std::optional<at::ScalarType> dtype,
           at::Device device) {
    io::place_weights(module, weights, dtype, device);
    for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/false))
        if (auto* lin = dynamic_cast<Linear*>(item.value().get()); lin && lin->weight_scale.defined())
            lin->weight_scale = lin->weight_scale.to(device);
}

}  // namespace

ComponentResidency::ComponentResidency(std::string folder, ParamModule& module, io::WeightIndex weights,
                                       at::Device device, at::ScalarType dtype, bool staged)
    : folder_(std::move(folder)),
      module_(module),
      weights_(std::move(weights)),
      device_(device),
      dtype_(dtype),
      staged_(staged) {}

void ComponentResidency::acquire() const {
    if (!staged_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (users_++ == 0) {
        try {
            place(module_, weights_, dtype_, device_);
        } catch (...) {
            // Back to the views, so a failed placement (out of device memory) leaves the
            // component usable by a later, smaller call.
            users_ = 0;
            place(module_, weights_, std::nullopt, at::kCPU);
            throw;
        }
    }
}

void ComponentResidency::release() const {
    if (!staged_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    // Back to zero-copy views of the file: the device copies are freed with the last use.
    if (--users_ == 0) place(module_, weights_, std::nullopt, at::kCPU);
}

ComponentResidency::Use::Use(const ComponentResidency* r) : r_(r) {
    if (r_) r_->acquire();
}

ComponentResidency::Use::~Use() {
    if (!r_) return;
    try {
        r_->release();
    } catch (...) {
        // Destructors must not throw; the views cannot fail to be made once the load succeeded.
    }
}

}  // namespace glmimage
