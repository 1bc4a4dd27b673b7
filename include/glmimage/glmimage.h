// glmimage: native GLM-Image inference. The public API; no LibTorch types here.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "glmimage/errors.h"
#include "glmimage/options.h"

namespace glmimage {

// Per-component facts of a loaded checkpoint.
struct ComponentInfo {
    std::string folder;       // "transformer", "vae", ...
    std::string class_name;   // class named in model_index.json
    std::string summary;      // one line from the parsed config
    std::string dtype;        // dtype the weights are held in ("BF16", "F32", ...); empty if no weights
    size_t num_tensors = 0;
    long long num_parameters = 0;
    size_t zero_copy = 0;     // tensors used straight from the mapped file
};

class Pipeline {
  public:
    // Loads a checkpoint directory in the published diffusers layout (model_index.json and
    // one folder per component). Strict: any weight that does not fit is reported.
    static std::unique_ptr<Pipeline> load(const std::string& model_dir, const LoadOptions& options = {});
    ~Pipeline();

    const std::vector<ComponentInfo>& components() const;
    // Multi-line human-readable description of every component.
    std::string summary() const;

    struct Impl;
    Impl& impl() { return *impl_; }

  private:
    explicit Pipeline(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

const char* version();

}  // namespace glmimage
