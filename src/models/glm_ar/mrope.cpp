#include "models/glm_ar/mrope.h"

#include <algorithm>
#include <string>

#include "glmimage/errors.h"

namespace glmimage {

std::vector<std::vector<GridThw>> split_grids(const std::vector<GridThw>& grids,
                                              const std::vector<int64_t>& images_per_sample, int64_t batch) {
    if (images_per_sample.empty()) return std::vector<std::vector<GridThw>>(static_cast<size_t>(batch), grids);
    if (static_cast<int64_t>(images_per_sample.size()) != batch)
        throw InputError("ar: images_per_sample has " + std::to_string(images_per_sample.size()) +
                         " entries, expected one per sample (" + std::to_string(batch) + ")");
    std::vector<std::vector<GridThw>> out;
    size_t at = 0;
    for (int64_t n : images_per_sample) {
        if (n < 0 || at + static_cast<size_t>(n) > grids.size())
            throw InputError("ar: images_per_sample does not add up to the " + std::to_string(grids.size()) +
                             " grids given");
        out.emplace_back(grids.begin() + static_cast<std::ptrdiff_t>(at),
                         grids.begin() + static_cast<std::ptrdiff_t>(at + static_cast<size_t>(n)));
        at += static_cast<size_t>(n);
    }
    if (at != grids.size())
        throw InputError("ar: images_per_sample covers " + std::to_string(at) + " of " + std::to_string(grids.size()) +
                         " grids");
    return out;
}

MropePositions build_mrope_positions(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                     const std::vector<std::vector<GridThw>>& grids_per_sample,
                                     int64_t image_start_id, int64_t image_end_id) {
    if (input_ids.dim() != 2) throw InputError("ar: input_ids must be [batch, length]");
    const int64_t B = input_ids.size(0), L = input_ids.size(1);
    if (static_cast<int64_t>(grids_per_sample.size()) != B)
        throw InputError("ar: grids given for " + std::to_string(grids_per_sample.size()) + " samples, batch is " +
                         std::to_string(B));
    // Positions are small integer bookkeeping over the prompt: done once on the host.
    auto ids = input_ids.to(at::kCPU, at::kLong).contiguous();
    at::Tensor mask;
    if (attention_mask.defined()) {
        if (attention_mask.sizes() != input_ids.sizes())
            throw InputError("ar: attention_mask must have the shape of input_ids");
        mask = attention_mask.to(at::kCPU, at::kLong).contiguous();
    }
    MropePositions out;
    out.prefill = at::ones({3, B, L}, at::kLong);
    auto P = out.prefill.accessor<int64_t, 3>();
    std::vector<std::array<std::vector<int64_t>, 3>> decode(static_cast<size_t>(B));

    for (int64_t b = 0; b < B; ++b) {
        const auto& grids = grids_per_sample[static_cast<size_t>(b)];
        if (grids.empty()) throw InputError("ar: sample " + std::to_string(b) + " has no image grids");
        for (const auto& g : grids)
            if (g[0] != 1 || g[1] < 1 || g[2] < 1)
                throw InputError("ar: image grids must be [1, h, w] with h, w >= 1");
        const int64_t* row = ids.data_ptr<int64_t>() + b * L;
        std::vector<int64_t> valid;  // indices of non-padding tokens
        for (int64_t i = 0; i < L; ++i)
            if (!mask.defined() || mask.data_ptr<int64_t>()[b * L + i] == 1) valid.push_back(i);
        const int64_t n = static_cast<int64_t>(valid.size());
        std::vector<int64_t> starts, ends;
        for (int64_t j = 0; j < n; ++j) {
            if (row[valid[j]] == image_start_id) starts.push_back(j + 1);
            if (row[valid[j]] == image_end_id) ends.push_back(j);
        }
        std::array<std::vector<int64_t>, 3> pos;
        auto text = [&](int64_t from, int64_t count) {
            for (int64_t k = 0; k < count; ++k)
                for (auto& axis : pos) axis.push_back(from + k);
        };
        int64_t cur = 0, prev_end = 0;
        const size_t pairs = std::min({starts.size(), ends.size(), grids.size()});
        for (size_t k = 0; k < pairs; ++k) {
            const int64_t h = grids[k][1], w = grids[k][2];
            if (ends[k] - starts[k] != h * w)
                throw InputError("ar: prompt image " + std::to_string(k) + " of sample " + std::to_string(b) +
                                 " spans " + std::to_string(ends[k] - starts[k]) + " tokens, its grid needs " +
                                 std::to_string(h * w));
            // Text up to and including the start marker (the previous end marker opens it).
            text(cur, starts[k] - prev_end);
            cur += starts[k] - prev_end;
            for (int64_t r = 0; r < h; ++r)
                for (int64_t c = 0; c < w; ++c) {
                    pos[0].push_back(cur);
                    pos[1].push_back(cur + r);
                    pos[2].push_back(cur + c);
                }
            cur += std::max(h, w);  // an image advances positions by its longer side, not h*w
            prev_end = ends[k];
        }
        text(cur, n - prev_end);
        cur += n - prev_end;
        for (int64_t j = 0; j < n; ++j)
            for (int a = 0; a < 3; ++a) P[a][b][valid[j]] = pos[a][j];

        // Generated grids are consumed last grid first (the preview grid of t2i comes first);
        // one extra entry for the end marker.
        const int64_t complete = static_cast<int64_t>(ends.size());
        out.complete_images.push_back(complete);
        const int64_t n_dec = std::max<int64_t>(static_cast<int64_t>(grids.size()) - complete, 0);
        int64_t dp = cur;
        auto& d = decode[static_cast<size_t>(b)];
        for (int64_t i = 1; i <= n_dec; ++i) {
            const auto& g = grids[grids.size() - static_cast<size_t>(i)];
            for (int64_t r = 0; r < g[1]; ++r)
                for (int64_t c = 0; c < g[2]; ++c) {
                    d[0].push_back(dp);
                    d[1].push_back(dp + r);
                    d[2].push_back(dp + c);
                }
            dp += std::max(g[1], g[2]);
        }
        for (auto& axis : d) axis.push_back(dp);
    }
    size_t dmax = 0;
    for (const auto& d : decode) dmax = std::max(dmax, d[0].size());
    out.decode = at::empty({B, 3, static_cast<int64_t>(dmax)}, at::kLong);
    auto D = out.decode.accessor<int64_t, 3>();
    for (int64_t b = 0; b < B; ++b)
        for (int a = 0; a < 3; ++a) {
            const auto& v = decode[static_cast<size_t>(b)][static_cast<size_t>(a)];
            for (size_t k = 0; k < dmax; ++k) D[b][a][static_cast<int64_t>(k)] = v[std::min(k, v.size() - 1)];
        }
    return out;
}

MropeRotary::MropeRotary(const GlmTextConfig& c) : section_(c.mrope_section) {
    const int64_t dim = c.rotary_dim();
    if (dim <= 0 || dim % 2 != 0) throw ConfigError("ar: rotary dimension must be a positive even number");
    if (section_[0] + section_[1] + section_[2] != dim / 2)
        throw ConfigError("ar: mrope_section must add up to rotary_dim / 2 = " + std::to_string(dim / 2));
    // Same op sequence as the reference so the table agrees to the last bit.
    auto exponent = at::arange(0, dim, 2, at::kFloat) / static_cast<double>(dim);
    inv_freq_ = at::reciprocal(at::pow(at::Scalar(c.rope_theta), exponent));
}

std::pair<at::Tensor, at::Tensor> MropeRotary::cos_sin(const at::Tensor& position_ids, at::ScalarType dtype) const {
    if (position_ids.dim() != 3 || position_ids.size(0) != 3) throw InputError("ar: position ids must be [3, B, S]");
    auto freqs = position_ids.unsqueeze(-1).to(at::kFloat) * inv_freq_.to(position_ids.device());  // [3,B,S,F]
    // Chunk c of the frequency slots takes its angle from axis c % 3 (t, h, w).
    std::vector<at::Tensor> parts;
    int64_t at_slot = 0;
    for (int c = 0; c < 3; ++c) {
        parts.push_back(freqs[c % 3].narrow(-1, at_slot, section_[static_cast<size_t>(c)]));
        at_slot += section_[static_cast<size_t>(c)];
    }
    auto f = at::cat(parts, -1);
    auto emb = at::cat({f, f}, -1);
    return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

}  // namespace glmimage
