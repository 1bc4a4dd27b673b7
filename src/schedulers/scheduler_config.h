// FlowMatchEulerDiscreteScheduler configuration (scheduler/scheduler_config.json).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace glmimage {

struct SchedulerConfig {
    int64_t num_train_timesteps = 1000;
    double shift = 1.0;
    bool use_dynamic_shifting = false;
    std::string time_shift_type = "exponential";  // "linear" for GLM-Image
    double base_shift = 0.5;
    double max_shift = 1.15;
    int64_t base_image_seq_len = 256;
    int64_t max_image_seq_len = 4096;
    std::optional<double> shift_terminal;
    bool invert_sigmas = false;

    // Optional keys take diffusers' class defaults; sigma schedules we do not implement
    // (karras, exponential, beta, stochastic) are rejected rather than ignored.
    static SchedulerConfig from_file(const std::string& path);
    std::string to_string() const;
};

}  // namespace glmimage
