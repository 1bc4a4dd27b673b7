#include "io/weight_binder.h"

#include <set>

#include "core/check.h"
#include "io/tensor_loader.h"
#include "layers/linear.h"

namespace glmimage::io {

using detail::str_cat;

namespace {

struct Target {
    ParamModule* owner;
    std::string local_name;
    at::Tensor current;
};

// Every parameter of the tree, keyed by its full dotted name.
std::map<std::string, Target> collect_targets(ParamModule& root) {
    std::map<std::string, Target> out;
    auto add = [&out](ParamModule& pm, const std::string& prefix) {
        auto own = pm.named_parameters(/*recurse=*/false);
        for (const auto& local : pm.own_parameter_names())
            out[prefix.empty() ? local : prefix + "." + local] = Target{&pm, local, own[local]};
    };
    add(root, "");
    // include_self=false: the root may live on the stack (named_modules would need its shared_ptr).
    for (const auto& item : root.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
        auto* pm = dynamic_cast<ParamModule*>(item.value().get());
        GLMI_CHECK(pm != nullptr, "module '", item.key(), "' is not a ParamModule");
        add(*pm, item.key());
    }
    return out;
}

std::vector<int64_t> sizes_of(const at::Tensor& t) { return t.sizes().vec(); }

}  // namespace

std::vector<ParamSpec> parameter_specs(ParamModule& root) {
    std::vector<ParamSpec> specs;
    for (auto& [name, t] : collect_targets(root))
        specs.push_back({name, sizes_of(t.current), t.current.scalar_type()});
    return specs;
}

void place_weights(ParamModule& root, const WeightIndex& weights, std::optional<at::ScalarType> dtype,
                   at::Device device, const std::function<bool(const std::string&)>& only) {
    for (auto& [name, target] : collect_targets(root)) {
        if (only && !only(name)) continue;
        const TensorRef* ref = weights.find(name);
        GLMI_CHECK(ref != nullptr, "placing '", name, "': not in the checkpoint");
        const auto held = target.current.scalar_type();
        if (Linear::is_quantized_dtype(held) && !Linear::is_quantized_dtype(to_scalar_type(ref->info->dtype))) {
            // Derived at load (a quantized weight): the file cannot give it back, so it moves as is.
            target.owner->replace_parameter(target.local_name, target.current.to(device));
            continue;
        }
        const bool floating = at::isFloatingType(held);
        target.owner->replace_parameter(target.local_name, load_tensor(*ref, floating ? dtype : std::nullopt, device));
    }
}

BindReport bind_weights(const std::string& component, ParamModule& root, const WeightIndex& weights,
                        const BindOptions& options) {
    auto targets = collect_targets(root);
    std::vector<WeightIssue> issues;
    for (const auto& [name, target] : targets) {
        const TensorRef* ref = weights.find(name);
        if (!ref) {
            issues.push_back({WeightIssue::Kind::kMissing, name, shape_to_string(sizes_of(target.current)), ""});
            continue;
        }
        if (ref->info->shape != sizes_of(target.current))
            issues.push_back({WeightIssue::Kind::kShapeMismatch, name, shape_to_string(sizes_of(target.current)),
                              shape_to_string(ref->info->shape)});
        const bool want_float = at::isFloatingType(target.current.scalar_type());
        const at::ScalarType got = to_scalar_type(ref->info->dtype);
        // Floating weights convert between float types; anything else must match exactly.
        if (want_float ? !dtype_is_floating(ref->info->dtype) : got != target.current.scalar_type())
            issues.push_back({WeightIssue::Kind::kDtypeMismatch, name, scalar_type_name(target.current.scalar_type()),
                              dtype_name(ref->info->dtype)});
    }
    for (const auto& [name, ref] : weights.tensors()) {
        if (targets.count(name) || options.ignored_keys.count(name)) continue;
        issues.push_back({WeightIssue::Kind::kUnexpected, name, "",
                          str_cat(shape_to_string(ref.info->shape), " ", dtype_name(ref.info->dtype))});
    }
    if (!issues.empty()) throw WeightError(component, std::move(issues));

    BindReport report;
    for (auto& [name, target] : targets) {
        const TensorRef* ref = weights.find(name);
        const at::ScalarType want = options.dtype && at::isFloatingType(target.current.scalar_type())
                                        ? *options.dtype
                                        : target.current.scalar_type();
        at::Tensor t = options.views_only ? tensor_view(*ref) : load_tensor(*ref, want, options.device);
        const bool is_view = t.data_ptr() == static_cast<const void*>(ref->file->data(*ref->info));
        report.zero_copy += is_view;
        report.converted += !is_view;
        report.bound++;
        report.num_parameters += t.numel();
        target.owner->replace_parameter(target.local_name, t);
    }
    for (const auto& [name, reason] : options.ignored_keys) report.ignored += weights.find(name) != nullptr;
    return report;
}

}  // namespace glmimage::io
