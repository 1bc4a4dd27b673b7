#include "models/dit/kv_cache.h"

#include "core/check.h"

namespace glmimage {

DiTKVCache::DiTKVCache(int64_t num_layers) {
    if (num_layers <= 0) throw InputError(detail::str_cat("kv cache: num_layers must be positive, got ", num_layers));
    layers_.resize(static_cast<size_t>(num_layers));
}

void DiTKVCache::set_mode(const std::string& mode) {
    if (mode == "write") {
        mode_ = Mode::kWrite;
    } else if (mode == "read") {
        mode_ = Mode::kRead;
    } else if (mode == "skip") {
        mode_ = Mode::kSkip;
    } else if (mode == "off" || mode.empty()) {
        mode_ = Mode::kOff;
    } else {
        throw InputError("kv cache: invalid mode '" + mode + "': expected one of write, read, skip, off");
    }
}

void DiTKVCache::clear() {
    for (auto& l : layers_) l = Layer{};
    mode_ = Mode::kOff;
    sample_ = 0;
}

int64_t DiTKVCache::num_samples() const { return static_cast<int64_t>(layers_.front().k.size()); }

size_t DiTKVCache::checked_layer(int64_t i) const {
    if (i < 0 || i >= num_layers())
        throw InputError(detail::str_cat("kv cache: layer ", i, " out of range [0, ", num_layers(), ")"));
    return static_cast<size_t>(i);
}

const std::vector<at::Tensor>& DiTKVCache::keys(int64_t i) const { return layers_[checked_layer(i)].k; }
const std::vector<at::Tensor>& DiTKVCache::values(int64_t i) const { return layers_[checked_layer(i)].v; }

std::pair<at::Tensor, at::Tensor> DiTKVCache::apply(int64_t i, const at::Tensor& k, const at::Tensor& v) {
    auto& l = layers_[checked_layer(i)];
    if (mode_ == Mode::kWrite) {
        store(l, k, v);
        return {k, v};
    }
    if (mode_ == Mode::kRead) return prepend(l, k, v);
    return {k, v};
}

void DiTKVCache::store(Layer& l, const at::Tensor& k, const at::Tensor& v) const {
    if (k.size(0) != 1)
        throw InputError(detail::str_cat("kv cache: write mode takes one condition image at a time ",
                                         "(batch 1), got batch ", k.size(0)));
    // As the reference: a new slot when this sample has none yet, else extend its sequence.
    if (l.k.size() <= sample_) {
        l.k.push_back(k);
        l.v.push_back(v);
    } else {
        auto& ck = l.k[sample_];
        auto& cv = l.v[sample_];
        if (ck.size(1) != k.size(1) || ck.size(3) != k.size(3) || ck.scalar_type() != k.scalar_type())
            throw InputError(detail::str_cat("kv cache: cannot append keys ", k.sizes(), " to cached ", ck.sizes()));
        ck = at::cat({ck, k}, 2);
        cv = at::cat({cv, v}, 2);
    }
}

std::pair<at::Tensor, at::Tensor> DiTKVCache::prepend(const Layer& l, const at::Tensor& k, const at::Tensor& v) const {
    const int64_t batch = k.size(0);
    const int64_t n = static_cast<int64_t>(l.k.size());
    if (n == 0) return {k, v};
    at::Tensor ck, cv;
    if (n == 1) {
        ck = l.k[0].expand({batch, -1, -1, -1});
        cv = l.v[0].expand({batch, -1, -1, -1});
    } else if (batch % n == 0) {
        // n == batch is the repeat-1 case; each sample's rows are consecutive (repeat_interleave).
        const int64_t r = batch / n;
        for (const auto& t : l.k)
            if (t.size(2) != l.k[0].size(2))
                throw InputError(detail::str_cat("kv cache: cached samples hold different numbers of condition ",
                                                 "tokens (", l.k[0].size(2), " and ", t.size(2),
                                                 "), so they cannot share one batch"));
        std::vector<at::Tensor> ks, vs;
        for (int64_t s = 0; s < n; ++s) {
            ks.push_back(l.k[static_cast<size_t>(s)].expand({r, -1, -1, -1}));
            vs.push_back(l.v[static_cast<size_t>(s)].expand({r, -1, -1, -1}));
        }
        ck = at::cat(ks, 0);
        cv = at::cat(vs, 0);
    } else {
        throw InputError(detail::str_cat("kv cache: cannot match ", n, " cached samples to batch size ", batch,
                                         ": batch size must be a multiple of the number of cached samples"));
    }
    if (ck.size(1) != k.size(1) || ck.size(3) != k.size(3) || ck.scalar_type() != k.scalar_type() ||
        ck.device() != k.device())
        throw InputError(detail::str_cat("kv cache: cached keys ", ck.sizes(), " (", ck.scalar_type(),
                                         ") do not fit keys ", k.sizes(), " (", k.scalar_type(), ")"));
    return {at::cat({ck, k}, 2), at::cat({cv, v}, 2)};
}

}  // namespace glmimage
