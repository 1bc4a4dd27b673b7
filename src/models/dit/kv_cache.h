// Condition-image key/value cache of the DiT (diffusers GlmImageKVCache), for image-to-image.
//
// write: each block stores its keys / values (after qk-norm and RoPE) for the current sample;
//        several condition images of one sample are concatenated along the sequence, in call order.
// read:  each block prepends the cached keys / values to its own (cache first, then text, then
//        image); queries stay the current tokens. 1 cached sample serves the whole batch; n == B
//        maps sample i to batch row i; B % n == 0 repeats each sample B/n times consecutively.
// skip:  the cache is ignored (the unconditional CFG pass). off: same, the text-to-image default.
// With both CFG passes in one forward, the DiT hands the cache the conditional group's keys alone
// (GlmImageTransformer::forward_projected with text groups).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace glmimage {

class DiTKVCache {
  public:
    enum class Mode { kOff, kWrite, kRead, kSkip };

    explicit DiTKVCache(int64_t num_layers);

    int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
    Mode mode() const { return mode_; }
    void set_mode(Mode mode) { mode_ = mode; }
    // "write", "read", "skip" or "off"; anything else is an InputError.
    void set_mode(const std::string& mode);
    // Moves writing on to the next sample; call after all condition images of one sample.
    void next_sample() { ++sample_; }
    // Drops every cached tensor, mode back to off, sample index back to 0.
    void clear();
    // Samples cached so far (per layer; every layer holds the same count).
    int64_t num_samples() const;

    // Per-layer hooks used by the attention of block `layer`. k, v: [B, heads, seq, head_dim].
    // Write stores (batch must be 1); read returns the cache prepended along seq; other modes
    // return k, v as they are.
    std::pair<at::Tensor, at::Tensor> apply(int64_t layer, const at::Tensor& k, const at::Tensor& v);

    // Cached tensors of one layer, one [1, heads, seq, head_dim] entry per sample.
    const std::vector<at::Tensor>& keys(int64_t layer) const;
    const std::vector<at::Tensor>& values(int64_t layer) const;

  private:
    struct Layer {
        std::vector<at::Tensor> k, v;
    };
    void store(Layer& l, const at::Tensor& k, const at::Tensor& v) const;
    std::pair<at::Tensor, at::Tensor> prepend(const Layer& l, const at::Tensor& k, const at::Tensor& v) const;
    size_t checked_layer(int64_t i) const;

    std::vector<Layer> layers_;
    Mode mode_ = Mode::kOff;
    size_t sample_ = 0;
};

}  // namespace glmimage
