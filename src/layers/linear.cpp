#include "layers/linear.h"

namespace glmimage {

Linear::Linear(int64_t in, int64_t out, bool has_bias, at::TensorOptions options) : ParamModule(std::move(options)) {
    param(weight, "weight", {out, in});
    if (has_bias) param(bias, "bias", {out});
}

}  // namespace glmimage
