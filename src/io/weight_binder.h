// Strict binding of checkpoint tensors to a module tree whose parameter names are the
// checkpoint keys. One pass collects every missing, unexpected, wrong-shape and
// wrong-dtype tensor and throws them together as one WeightError.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "io/weight_index.h"
#include "layers/param_module.h"

namespace glmimage::io {

struct BindOptions {
    // Floating weights are converted to this dtype; nullopt keeps each tensor's own dtype
    // only where it equals the module's parameter dtype (and converts otherwise).
    std::optional<at::ScalarType> dtype;
    at::Device device = at::kCPU;
    // Keys the reference stores but never reads, each with the reason (logged, not bound).
    std::map<std::string, std::string> ignored_keys;
    // Bind every tensor as the zero-copy view of the file (its own dtype, on the CPU), whatever
    // `dtype` and `device` say: the resting state of a staged component (place_weights moves it).
    bool views_only = false;
};

struct BindReport {
    size_t bound = 0;      // parameters bound
    size_t zero_copy = 0;  // of which views of the mapped file
    size_t converted = 0;  // of which dtype-converted or moved to another device
    size_t ignored = 0;    // file tensors skipped by the ignore list
    int64_t num_parameters = 0;
};

BindReport bind_weights(const std::string& component, ParamModule& root, const WeightIndex& weights,
                        const BindOptions& options);

// Re-points every parameter of a bound tree at the checkpoint tensor of the same key, in
// `dtype` (floating parameters only; nullopt keeps the file's) on `device`, through the
// modules' own slots, so the forward code reads the new tensors. With the file's dtype on the
// CPU these are the zero-copy views again. Moves components on and off their device. A
// parameter quantized at load (int8 or fp8 where the file holds a float) is moved as it is.
// `only`, when given, limits the move to the parameters whose names it accepts.
void place_weights(ParamModule& root, const WeightIndex& weights, std::optional<at::ScalarType> dtype,
                   at::Device device, const std::function<bool(const std::string&)>& only = {});

// (key, shape, dtype) of every parameter of a module tree, sorted by key: what the
// checkpoint must contain.
struct ParamSpec {
    std::string name;
    std::vector<int64_t> shape;
    at::ScalarType dtype;
};
std::vector<ParamSpec> parameter_specs(ParamModule& root);

}  // namespace glmimage::io
