#include "layers/norms.h"

namespace glmimage {

LayerNorm::LayerNorm(int64_t dim_, double eps_, at::TensorOptions options)
    : ParamModule(std::move(options)), dim(dim_), eps(eps_) {
    param(weight, "weight", {dim});
    param(bias, "bias", {dim});
}

at::Tensor LayerNorm::forward(const at::Tensor& x) const { return at::layer_norm(x, {dim}, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t dim, double eps_, at::TensorOptions options) : ParamModule(std::move(options)), eps(eps_) {
    param(weight, "weight", {dim});
}

at::Tensor RMSNorm::forward(const at::Tensor& x) const {
    auto xf = x.to(at::kFloat);
    auto normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return weight * normed.to(x.scalar_type());
}

GroupNorm::GroupNorm(int64_t groups_, int64_t channels, double eps_, at::TensorOptions options)
    : ParamModule(std::move(options)), groups(groups_), eps(eps_) {
    param(weight, "weight", {channels});
    param(bias, "bias", {channels});
}

Embedding::Embedding(int64_t num, int64_t dim, at::TensorOptions options) : ParamModule(std::move(options)) {
    param(weight, "weight", {num, dim});
}

}  // namespace glmimage
