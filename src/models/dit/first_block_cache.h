// First Block Cache of the DiT: an approximation a request turns on (GenerateRequest::
// first_block_cache), the method of ParaAttention that diffusers 0.39 ships as
// FirstBlockCacheConfig (hooks/first_block_cache.py).
//
// Every denoising forward runs the first block. Its change to the image tokens (the residual) is
// compared with the one kept from the last forward that ran every block: where
//   mean|residual - kept| / mean|kept|  >  threshold
// (both means over the whole batch of the pass, in the model dtype, as diffusers computes them),
// the other blocks run and their own change is kept; otherwise they do not run, and the image
// tokens become the first block's output plus the other blocks' kept change. The first forward
// always runs them. Each CFG pass keeps its own state (diffusers keeps one per cache context;
// its GlmImagePipeline sets none, so the parity test gives each pass its own, see
// tests/python/test_first_block_cache.py). A pass holds two tensors of its image tokens' size
// ([B, S, inner]: 32 MiB each at 1024² in bf16, B = 1).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace glmimage {

// One CFG pass's state over the denoising loop of one call.
class FirstBlockCachePass {
  public:
    // threshold > 0 (the request's rule; GenerateRequest::validate).
    explicit FirstBlockCachePass(double threshold);

    // Whether this forward runs the blocks after the first, given the first block's residual;
    // keeps the residual when it does. Records the answer (skipped()).
    bool must_run(const at::Tensor& head_residual);
    // After a forward that ran every block: the other blocks' change to the image tokens.
    void keep_tail(const at::Tensor& tail_residual) { tail_residual_ = tail_residual; }
    const at::Tensor& tail_residual() const { return tail_residual_; }

    // Per forward so far, in order: true where the blocks after the first did not run.
    const std::vector<bool>& skipped() const { return skipped_; }

  private:
    double threshold_;
    at::Tensor head_residual_, tail_residual_;
    std::vector<bool> skipped_;
};

}  // namespace glmimage
