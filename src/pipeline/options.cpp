#include <ATen/Parallel.h>

#include "core/check.h"
#include "glmimage/options.h"

namespace glmimage {

using detail::str_cat;

namespace {

const char* const kComponents[] = {"vision_language_encoder", "text_encoder", "transformer", "vae"};

void check_dtype(const std::string& dtype, const std::string& where) {
    if (dtype != "auto" && dtype != "float32" && dtype != "bfloat16" && dtype != "float16")
        throw InputError(str_cat(where, "unknown dtype '", dtype, "': expected auto, float32, bfloat16 or float16"));
}

void check_device(const std::string& device, const std::string& where) {
    bool cuda = device == "cuda";
    if (device.rfind("cuda:", 0) == 0) {
        const std::string index = device.substr(5);
        cuda = !index.empty() && index.size() <= 3 && index.find_first_not_of("0123456789") == std::string::npos;
    }
    if (device != "cpu" && !cuda)
        throw InputError(str_cat(where, "unknown device '", device, "': expected cpu, cuda or cuda:N"));
}

void check_residency(const std::string& residency, const std::string& where) {
    if (residency != "resident" && residency != "staged")
        throw InputError(str_cat(where, "unknown residency '", residency, "': expected resident or staged"));
}

}  // namespace

void LoadOptions::validate() const {
    check_dtype(dtype, "");
    check_device(device, "");
    check_residency(residency, "");
    if (quantize != "none" && quantize != "int8" && quantize != "fp8")
        throw InputError(str_cat("unknown quantize '", quantize, "': expected none, int8 or fp8"));
    if (ar_decode != "auto" && ar_decode != "eager" && ar_decode != "static" && ar_decode != "graph")
        throw InputError(str_cat("unknown ar_decode '", ar_decode, "': expected auto, eager, static or graph"));
    if (cfg_passes != "auto" && cfg_passes != "joint" && cfg_passes != "apart")
        throw InputError(str_cat("unknown cfg_passes '", cfg_passes, "': expected auto, joint or apart"));
    for (const auto& [folder, p] : components) {
        bool known = false;
        for (const char* c : kComponents) known = known || folder == c;
        if (!known)
            throw InputError(str_cat("unknown component '", folder,
                                     "': expected vision_language_encoder, text_encoder, transformer or vae"));
        const std::string where = folder + ": ";
        if (!p.dtype.empty()) check_dtype(p.dtype, where);
        if (!p.device.empty()) check_device(p.device, where);
        if (!p.residency.empty()) check_residency(p.residency, where);
    }
}

ComponentPlacement LoadOptions::placement(const std::string& folder) const {
    ComponentPlacement p{device, dtype, residency};
    auto it = components.find(folder);
    if (it == components.end()) return p;
    if (!it->second.device.empty()) p.device = it->second.device;
    if (!it->second.dtype.empty()) p.dtype = it->second.dtype;
    if (!it->second.residency.empty()) p.residency = it->second.residency;
    return p;
}

std::string LoadOptions::to_string() const {
    std::string s = str_cat("device=", device, " dtype=", dtype, " residency=", residency, " quantize=", quantize,
                           " ar_decode=", ar_decode, " cfg_passes=", cfg_passes,
                           " cpu_block_cache=", cpu_block_cache ? "on" : "off");
    for (const auto& [folder, p] : components)
        s += str_cat(" ", folder, "={", p.device, ",", p.dtype, ",", p.residency, "}");
    return s;
}

void set_num_threads(int threads) {
    if (threads < 0) throw InputError(str_cat("threads must be >= 0, got ", threads));
    if (threads > 0) at::set_num_threads(threads);
}

int num_threads() { return at::get_num_threads(); }

}  // namespace glmimage
