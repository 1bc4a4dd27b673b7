#include "core/check.h"
#include "glmimage/options.h"

namespace glmimage {

using detail::str_cat;

void LoadOptions::validate() const {
    if (dtype != "auto" && dtype != "float32" && dtype != "bfloat16" && dtype != "float16")
        throw InputError(str_cat("unknown dtype '", dtype, "': expected auto, float32, bfloat16 or float16"));
    const bool cuda = device == "cuda" || device.rfind("cuda:", 0) == 0;
    if (device != "cpu" && !cuda)
        throw InputError(str_cat("unknown device '", device, "': expected cpu, cuda or cuda:N"));
    if (threads < 0) throw InputError(str_cat("threads must be >= 0, got ", threads));
}

std::string LoadOptions::to_string() const {
    return str_cat("device=", device, " dtype=", dtype, " threads=", threads);
}

}  // namespace glmimage
