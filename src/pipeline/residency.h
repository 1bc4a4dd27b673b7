// Where a loaded component's weights are, and for how long: "resident" components sit on
// their device from load to the end; "staged" ones rest as zero-copy views of the mapped files
// (page cache, no anonymous copy) and are placed on their device, in their compute dtype, only
// while a stage uses them. A staged component may be split into parts placed separately (the AR
// model's text decoder and its vision encoder: an image-to-image request needs the encoder, a
// text-to-image one never places it); a part may also stay on the host (the AR model's token
// embedding table: a decode step reads one row of it). Uses are counted per part, so concurrent
// sessions share one placement and a part is only moved when nobody is using it.
#pragma once

#include <ATen/ATen.h>

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "io/weight_index.h"
#include "layers/param_module.h"

namespace glmimage {

// A named share of a component's parameters: those whose names start with one of `prefixes`.
// `on_host`: when staged, it is placed on the CPU (in the compute dtype) instead of the device.
struct ResidencyPart {
    std::string name;
    std::vector<std::string> prefixes;
    bool on_host = false;
};

// The AR model's parts (vision_language_encoder).
inline constexpr const char* kArTextPart = "text";
inline constexpr const char* kArEmbeddingPart = "embedding";
inline constexpr const char* kArVisionPart = "vision";

class ComponentResidency {
  public:
    // `module` has been bound (views_only when staged); `weights` keeps the mapping alive.
    // `parts` must cover every parameter when given; by default the component is one part.
    ComponentResidency(std::string folder, ParamModule& module, io::WeightIndex weights, at::Device device,
                       at::ScalarType dtype, bool staged, std::vector<ResidencyPart> parts = {});

    // While a Use lives, its parts (all, or the named ones) are placed.
    class Use {
      public:
        Use() = default;
        Use(const ComponentResidency* r, std::vector<size_t> parts);
        ~Use();
        Use(Use&& other) noexcept : r_(std::exchange(other.r_, nullptr)), parts_(std::move(other.parts_)) {}
        Use& operator=(Use&&) = delete;
        Use(const Use&) = delete;

      private:
        const ComponentResidency* r_ = nullptr;
        std::vector<size_t> parts_;
    };
    // Every part, or the named ones (an unknown name is a programming error).
    Use use(const std::vector<std::string>& parts = {}) const;

    const std::string& folder() const { return folder_; }
    at::Device device() const { return device_; }
    at::ScalarType dtype() const { return dtype_; }
    bool staged() const { return staged_; }
    const io::WeightIndex& weights() const { return weights_; }

  private:
    void acquire(size_t part) const;
    void release(size_t part) const;
    void place(size_t part, std::optional<at::ScalarType> dtype, at::Device device) const;

    std::string folder_;
    ParamModule& module_;
    io::WeightIndex weights_;
    at::Device device_;
    at::ScalarType dtype_;
    bool staged_;
    std::vector<ResidencyPart> parts_;
    // Logically const: placing a staged part changes where its (unchanged) weights are.
    mutable std::mutex mutex_;
    mutable std::vector<int> users_;
};

// A use of an optional component residency (null: nothing to place, e.g. modules built by tests).
inline ComponentResidency::Use use_component(const ComponentResidency* r, const std::vector<std::string>& parts = {}) {
    return r ? r->use(parts) : ComponentResidency::Use();
}

}  // namespace glmimage
