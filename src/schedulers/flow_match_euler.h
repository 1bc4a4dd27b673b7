// FlowMatchEulerDiscreteScheduler as GlmImagePipeline drives it (diffusion.md sections 5 and 6.5):
// the sigma schedule, the timestep label the DiT is conditioned on, and the Euler step size.
// Torch-free; the tensor step is in flow_match_euler_step.h.
//
// Reference: diffusers 0.39 pipeline_glm_image.py (__call__, "Prepare timesteps") and
// scheduling_flow_match_euler_discrete.py (set_timesteps, time_shift, step). Every value is
// computed with the precision and operation order the reference uses (float64 Python scalars,
// float32 numpy arrays with the Python scalars cast to float32), so sigmas and labels are
// bit-identical to it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "schedulers/scheduler_config.h"

namespace glmimage {

// The timestep label passed to the DiT (diffusion.md 5.4).
enum class TimestepLabel {
    // diffusers <= 0.39, what GLM-Image shipped with and what the checkpoint expects:
    // label = t - 1 with t the unshifted integer timestep (1000, 980, ... for 50 steps).
    kUnshifted,
    // diffusers >= 0.40 (PR #14011): label = sigma' * num_train_timesteps - 1, sigma' shifted.
    kShifted,
};

// "0.39" / "unshifted" -> kUnshifted, "0.40" / "shifted" -> kShifted; InputError otherwise.
TimestepLabel parse_timestep_label(const std::string& name);

struct FlowMatchScheduleOptions {
    int64_t patch_size = 2;        // DiT patch size p: image_seq_len = (H/8 * W/8) / p^2
    int64_t vae_scale_factor = 8;  // pixels per latent
    TimestepLabel label = TimestepLabel::kUnshifted;
    // The pipeline's `timesteps` / `sigmas` arguments. Custom timesteps are truncated to integers
    // like the default ones and replace the step count; custom sigmas (before shifting) must have
    // one entry per step.
    std::optional<std::vector<double>> timesteps;
    std::optional<std::vector<double>> sigmas;
};

struct FlowMatchSchedule {
    int64_t image_seq_len = 0;
    double mu = 0.0;               // resolution-dependent shift (used when use_dynamic_shifting)
    std::vector<float> timesteps;  // scheduler.timesteps (n): the unshifted integer timesteps
    std::vector<float> sigmas;     // scheduler.sigmas (n + 1): shifted, terminal 0 appended
    std::vector<float> labels;     // n: the `timestep` argument of the DiT at step i

    int64_t n_steps() const { return static_cast<int64_t>(timesteps.size()); }
    // sigma_{i+1} - sigma_i in float32, the factor of the Euler step i.
    float dt(int64_t i) const;
};

class FlowMatchEulerScheduler {
  public:
    explicit FlowMatchEulerScheduler(SchedulerConfig config);

    // The schedule for `n_steps` steps at height x width pixels, as GlmImagePipeline.__call__
    // builds it. InputError unless n_steps >= 1 (when no custom timesteps are given), height and
    // width are positive multiples of 32, and custom timesteps / sigmas are consistent.
    FlowMatchSchedule schedule(int64_t n_steps, int64_t height, int64_t width,
                               const FlowMatchScheduleOptions& options = {}) const;

    // set_timesteps(sigmas=sigmas, mu=mu) without the terminal zero: the shift (dynamic linear or
    // exponential, or static), then the optional stretch to shift_terminal.
    std::vector<float> shift_sigmas(const std::vector<float>& sigmas, double mu) const;

    // pipeline_glm_image.calculate_shift: sqrt(seq / base_seq) * max_shift + base_shift.
    double calculate_shift(int64_t image_seq_len) const;

    const SchedulerConfig& config() const { return config_; }

  private:
    SchedulerConfig config_;
};

}  // namespace glmimage
