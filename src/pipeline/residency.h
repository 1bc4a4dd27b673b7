// Where a loaded component's weights are, and for how long: "resident" components sit on
// their device from load to the end; "staged" ones rest as zero-copy views of the mapped files
// (page cache, no anonymous copy) and are placed on their device, in their compute dtype, only
// while a stage uses them. Uses are counted, so concurrent sessions share one placement and a
// component is only moved when nobody is using it.
#pragma once

#include <ATen/ATen.h>

#include <mutex>
#include <string>

#include "io/weight_index.h"
#include "layers/param_module.h"

namespace glmimage {

class ComponentResidency {
  public:
    // `module` has been bound (views_only when staged); `weights` keeps the mapping alive.
    ComponentResidency(std::string folder, ParamModule& module, io::WeightIndex weights, at::Device device,
                       at::ScalarType dtype, bool staged);

    // While a Use lives, the component is on its device in its dtype.
    class Use {
      public:
        explicit Use(const ComponentResidency* r = nullptr);
        ~Use();
        Use(Use&& other) noexcept : r_(std::exchange(other.r_, nullptr)) {}
        Use& operator=(Use&&) = delete;
        Use(const Use&) = delete;

      private:
        const ComponentResidency* r_;
    };
    Use use() const { return Use(this); }

    const std::string& folder() const { return folder_; }
    at::Device device() const { return device_; }
    at::ScalarType dtype() const { return dtype_; }
    bool staged() const { return staged_; }
    const io::WeightIndex& weights() const { return weights_; }

  private:
    void acquire() const;
    void release() const;

    std::string folder_;
    ParamModule& module_;
    io::WeightIndex weights_;
    at::Device device_;
    at::ScalarType dtype_;
    bool staged_;
    // Logically const: placing a staged component changes where its (unchanged) weights are.
    mutable std::mutex mutex_;
    mutable int users_ = 0;
};

// A use of an optional component residency (null: nothing to place, e.g. modules built by tests).
inline ComponentResidency::Use use_component(const ComponentResidency* r) { return ComponentResidency::Use(r); }

}  // namespace glmimage
