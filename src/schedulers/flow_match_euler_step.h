// The Euler step of FlowMatchEulerDiscreteScheduler.step on tensors (header-only: the schedule
// itself is torch-free, see flow_match_euler.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "schedulers/flow_match_euler.h"

namespace glmimage {

// x_next = float32(sample) + (sigma_next - sigma) * model_output, cast to model_output's dtype:
// the same ATen operations as the reference (dt is a 0-dim float32 tensor, so it does not promote
// model_output; GlmImagePipeline passes a float32 model output, which keeps the latents float32).
inline at::Tensor flow_match_euler_step(const at::Tensor& sample, const at::Tensor& model_output, float sigma,
                                        float sigma_next) {
    const at::Tensor dt = at::scalar_tensor(sigma_next - sigma, at::TensorOptions().dtype(at::kFloat));
    const at::Tensor prev = sample.to(at::kFloat) + dt * model_output;
    return prev.to(model_output.scalar_type());
}

// Step i of a schedule (the pipeline's loop index is the scheduler's step index).
inline at::Tensor flow_match_euler_step(const FlowMatchSchedule& schedule, int64_t i, const at::Tensor& sample,
                                        const at::Tensor& model_output) {
    return flow_match_euler_step(sample, model_output, schedule.sigmas.at(static_cast<size_t>(i)),
                                 schedule.sigmas.at(static_cast<size_t>(i + 1)));
}

}  // namespace glmimage
