// Base of every glmimage module: parameters are created with explicit options (device,
// dtype) and no initialization, so a real-size tree can be built on the meta device
// without memory, and named_parameters() are exactly the checkpoint keys.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

namespace glmimage {

class ParamModule : public torch::nn::Module {
  public:
    explicit ParamModule(at::TensorOptions options) : options_(std::move(options)) {}
    const at::TensorOptions& options() const { return options_; }

    // Local names of this module's own parameters (not its children's).
    std::vector<std::string> own_parameter_names() const;
    // Swaps a parameter for a loaded tensor, in the registry and in the member that the
    // forward code reads. (Tensor::set_data cannot turn a meta tensor into a real one.)
    void replace_parameter(const std::string& name, const at::Tensor& value);

  protected:
    // Registers an uninitialized parameter held in `member`; replaced when weights bind.
    void param(at::Tensor& member, const std::string& name, at::IntArrayRef shape) {
        member = register_parameter(name, at::empty(shape, options_), /*requires_grad=*/false);
        slots_.emplace_back(name, &member);
    }
    template <typename M>
    std::shared_ptr<M> child(const std::string& name, std::shared_ptr<M> m) {
        return register_module(name, std::move(m));
    }

    at::TensorOptions options_;

  private:
    // Modules live in shared_ptrs and never move, so member addresses stay valid.
    std::vector<std::pair<std::string, at::Tensor*>> slots_;
};

// A parameter-free container, so nested checkpoint names ("attn1.to_out.0") can be built
// from single-segment module names (LibTorch forbids dots in a submodule name).
class ModuleScope : public ParamModule {
  public:
    using ParamModule::ParamModule;
    template <typename M>
    std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> m) {
        return register_module(name, std::move(m));
    }
};

}  // namespace glmimage
