#include "models/glm_ar/vision_encoder.h"

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/check.h"
#include "glmimage/errors.h"
#include "kernels/attention.h"
#include "kernels/cpu_products.h"
#include "kernels/gelu.h"
#include "models/glm_ar/token_grid.h"

namespace glmimage {

namespace {

struct Grid {
    int64_t h, w;
};

// Validates grid_thw against the number of patch rows; returns the per-image (gh, gw).
std::vector<Grid> read_grids(const at::Tensor& grid_thw, int64_t rows, const char* who) {
    if (!grid_thw.defined() || grid_thw.dim() != 2 || grid_thw.size(1) != 3 || grid_thw.size(0) == 0)
        throw InputError(std::string(who) + ": grid_thw must be [num_images, 3], got " +
                         (grid_thw.defined() ? detail::str_cat(grid_thw.sizes()) : std::string("undefined")));
    if (at::isFloatingType(grid_thw.scalar_type()) || grid_thw.scalar_type() == at::kBool)
        throw InputError(std::string(who) + ": grid_thw must hold integers");
    const at::Tensor g = grid_thw.to(at::kCPU, at::kLong).contiguous();
    const int64_t* d = g.data_ptr<int64_t>();
    std::vector<Grid> out;
    int64_t total = 0;
    for (int64_t i = 0; i < g.size(0); ++i) {
        const int64_t t = d[3 * i], h = d[3 * i + 1], w = d[3 * i + 2];
        if (t != 1 || h < 1 || w < 1)
            throw InputError(detail::str_cat(who, ": grid row ", i, " is (", t, ", ", h, ", ", w,
                                             "): expected (1, gh, gw) with gh, gw >= 1"));
        out.push_back({h, w});
        total += h * w;
    }
    if (total != rows)
        throw InputError(detail::str_cat(who, ": grids hold ", total, " patches but the input has ", rows, " rows"));
    return out;
}

// Learned position table [S*S, hidden] resampled bilinearly to every image's grid: the
// sample point of patch (r, c) is the centre of that cell in [-1, 1] coordinates. Done in
// float32 with grid_sample (border padding, align_corners false), as the reference does,
// so the result is bit-identical; cast to the table's dtype at the end.
at::Tensor resampled_positions(const at::Tensor& table, const std::vector<Grid>& grids) {
    const int64_t rows = table.size(0), hidden = table.size(1);
    const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(rows))));
    GLMI_CHECK(side * side == rows, "position table rows ", rows, " are not a square");
    const at::Tensor table2d = table.view({side, side, hidden}).permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);

    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(table.device());
    std::vector<at::Tensor> xs, ys;
    for (const auto& g : grids) {
        // ((index + 0.5) / size) * 2 - 1, each step rounded to float32 like the reference.
        const at::Tensor col = at::arange(g.w, f32).add_(0.5).div_(static_cast<double>(g.w)).mul_(2).sub_(1);
        const at::Tensor row = at::arange(g.h, f32).add_(0.5).div_(static_cast<double>(g.h)).mul_(2).sub_(1);
        xs.push_back(col.unsqueeze(0).expand({g.h, g.w}).reshape(-1));
        ys.push_back(row.unsqueeze(1).expand({g.h, g.w}).reshape(-1));
    }
    const at::Tensor grid = at::stack({at::cat(xs), at::cat(ys)}, -1).view({1, -1, 1, 2});
    const at::Tensor sampled = at::grid_sampler(table2d, grid, /*bilinear*/ 0, /*border*/ 1, /*align_corners=*/false);
    // [1, hidden, N, 1] -> [N, hidden]
    return sampled.squeeze(0).squeeze(-1).permute({1, 0}).to(table.scalar_type());
}

// Pre-LayerNorm ViT block; attention runs per image segment, so no image attends to another.
at::Tensor vision_block(const GlmVisionBlock& b, const GlmVisionConfig& c, const at::Tensor& x,
                        const std::vector<int64_t>& lengths) {
    const int64_t n = x.size(0), heads = c.num_heads;
    const at::Tensor h = b.norm1->forward(x);
    // [N, 3*hidden] -> q, k, v each [1, heads, N, head_dim] (views, no copy)
    const auto qkv = b.qkv->forward(h).reshape({n, 3, heads, -1}).permute({1, 0, 2, 3}).unbind(0);
    const at::Tensor q = qkv[0].transpose(0, 1).unsqueeze(0);
    const at::Tensor k = qkv[1].transpose(0, 1).unsqueeze(0);
    const at::Tensor v = qkv[2].transpose(0, 1).unsqueeze(0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim()));
    kernels::AttentionOptions ao;
    ao.scale = scale;
    const at::Tensor attn = kernels::segment_attention(q, k, v, lengths, ao).transpose(1, 2);
    at::Tensor y = x + b.proj->forward(attn.reshape({n, -1}));
    // hidden_act "gelu": the exact erf form
    return y + b.fc2->forward(kernels::gelu(b.fc1->forward(b.norm2->forward(y))));
}

at::Tensor l2_normalize_rows(const at::Tensor& x) {
    // F.normalize: x / max(||x||_2, 1e-12), in x's dtype.
    return x / at::linalg_vector_norm(x, 2, {-1}, /*keepdim=*/true).clamp_min(1e-12);
}

}  // namespace

at::Tensor vision_encode(const GlmVisionModel& model, const GlmVisionConfig& config, const at::Tensor& pixel_values,
                         const at::Tensor& grid_thw) {
    c10::InferenceMode guard;
    const int64_t p = config.patch_size, ch = config.in_channels;
    if (!pixel_values.defined() || pixel_values.dim() != 2 || pixel_values.size(1) != ch * p * p)
        throw InputError(detail::str_cat("vision encoder: pixel_values must be [patches, ", ch * p * p, "], got ",
                                         pixel_values.defined() ? detail::str_cat(pixel_values.sizes()) : "undefined"));
    if (!at::isFloatingType(pixel_values.scalar_type()))
        throw InputError("vision encoder: pixel_values must be floating point");
    const auto grids = read_grids(grid_thw, pixel_values.size(0), "vision encoder");
    std::vector<int64_t> lengths;
    for (const auto& g : grids) lengths.push_back(g.h * g.w);

    const auto& w = model.patch_embed->weight;
    at::Tensor x = pixel_values.to(w.device(), w.scalar_type()).view({-1, ch, p, p});
    x = model.patch_embed->forward(x).view({-1, config.hidden_size});
    x = x + resampled_positions(model.position_embedding->weight, grids).to(x.device());
    for (const auto& block : model.blocks) x = vision_block(*block, config, x, lengths);
    return x;
}

at::Tensor vq_token_ids(const GlmVQModel& vq, const at::Tensor& features, const at::Tensor& grid_thw) {
    c10::InferenceMode guard;
    const int64_t latent = vq.quant_conv->weight.size(1);
    if (!features.defined() || features.dim() != 2 || features.size(1) != latent)
        throw InputError(detail::str_cat("vq: features must be [patches, ", latent, "], got ",
                                         features.defined() ? detail::str_cat(features.sizes()) : "undefined"));
    const auto grids = read_grids(grid_thw, features.size(0), "vq");
    const at::Tensor& wq = vq.quant_conv->weight;
    const at::Tensor codes = l2_normalize_rows(vq.codebook->weight);
    const at::Tensor code_sq = codes.pow(2).sum(1);
    const at::Tensor feats = features.to(wq.device(), wq.scalar_type());

    // One image at a time, as the reference does: the distance matmul then has the same
    // shape (and so the same accumulation order) as there, which keeps near-ties identical.
    std::vector<at::Tensor> ids;
    int64_t row = 0;
    for (const auto& g : grids) {
        const at::Tensor f = feats.narrow(0, row, g.h * g.w);
        row += g.h * g.w;
        // [gh*gw, latent] -> NCHW [1, latent, gh, gw] -> 1x1 conv -> rows [gh*gw, embed]
        const at::Tensor nchw = f.view({1, g.h, g.w, latent}).permute({0, 3, 1, 2}).contiguous();
        at::Tensor z = vq.quant_conv->forward(nchw).permute({0, 2, 3, 1}).contiguous().view({g.h * g.w, -1});
        z = l2_normalize_rows(z);
        // ||z||^2 + ||e||^2 - 2 z.e, in this order and dtype as the reference: the per-row
        // constant changes rounding, so dropping it could flip near-ties. The product goes through
        // the CPU's product rule (kernels/cpu_products.h) like every other one.
        const at::Tensor dist = z.pow(2).sum(1, /*keepdim=*/true) + code_sq -
                                2 * kernels::einsum("bd,dn->bn", {z, codes.transpose(0, 1)});
        ids.push_back(at::argmin(dist, 1));
    }
    return ids.size() == 1 ? ids[0] : at::cat(ids);
}

at::Tensor image_token_ids(const GlmArModel& model, const at::Tensor& pixel_values, const at::Tensor& grid_thw) {
    c10::InferenceMode guard;
    const at::Tensor features = vision_encode(*model.visual, model.config.vision, pixel_values, grid_thw);
    return vq_token_ids(*model.vqmodel, features, grid_thw);
}

at::Tensor upsample_token_ids_2x(const at::Tensor& ids, const at::Tensor& grid_thw) {
    c10::InferenceMode guard;
    if (!ids.defined() || ids.dim() != 1 || at::isFloatingType(ids.scalar_type()))
        throw InputError("prior ids: token ids must be a 1-D integer tensor");
    const auto grids = read_grids(grid_thw, ids.size(0), "prior ids");
    std::vector<at::Tensor> out;
    int64_t row = 0;
    for (const auto& g : grids) {
        out.push_back(upsample_grid_2x(ids.narrow(0, row, g.h * g.w), g.h, g.w));
        row += g.h * g.w;
    }
    return out.size() == 1 ? out[0] : at::cat(out);
}

}  // namespace glmimage
