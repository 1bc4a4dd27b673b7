#include "models/dit/first_block_cache.h"

#include "core/check.h"

namespace glmimage {

FirstBlockCachePass::FirstBlockCachePass(double threshold) : threshold_(threshold) {
    GLMI_CHECK(threshold > 0, "first block cache threshold ", threshold);
}

bool FirstBlockCachePass::must_run(const at::Tensor& head_residual) {
    bool run = true;
    if (head_residual_.defined()) {
        // diffusers' FBCHeadBlockHook: both means and their quotient in the model dtype, then a
        // Python float. A NaN quotient (a kept residual of zeros) compares false: no run, as there.
        const auto change = (head_residual - head_residual_).abs().mean();
        const auto scale = head_residual_.abs().mean();
        run = (change / scale).item<double>() > threshold_;
    }
    if (run) head_residual_ = head_residual;
    skipped_.push_back(!run);
    return run;
}

}  // namespace glmimage
