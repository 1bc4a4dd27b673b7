#include "schedulers/scheduler_config.h"

#include "core/check.h"
#include "io/json_config.h"

namespace glmimage {

using detail::str_cat;

SchedulerConfig SchedulerConfig::from_file(const std::string& path) {
    auto j = io::JsonConfig::load(path);
    SchedulerConfig c;
    c.num_train_timesteps = j.get_int("num_train_timesteps", 1000);
    c.shift = j.get_double("shift", 1.0);
    c.use_dynamic_shifting = j.get_bool("use_dynamic_shifting", false);
    c.time_shift_type = j.get_string("time_shift_type", "exponential");
    c.base_shift = j.get_double("base_shift", 0.5);
    c.max_shift = j.get_double("max_shift", 1.15);
    c.base_image_seq_len = j.get_int("base_image_seq_len", 256);
    c.max_image_seq_len = j.get_int("max_image_seq_len", 4096);
    if (j.has("shift_terminal")) c.shift_terminal = j.get_double("shift_terminal");
    c.invert_sigmas = j.get_bool("invert_sigmas", false);
    if (c.time_shift_type != "linear" && c.time_shift_type != "exponential")
        throw ConfigError(str_cat(path, ": key 'time_shift_type': expected 'linear' or 'exponential', got '",
                                  c.time_shift_type, "'"));
    for (const char* k : {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "stochastic_sampling"})
        if (j.get_bool(k, false)) throw UnsupportedError(str_cat(path, ": '", k, "' is not implemented"));
    if (c.invert_sigmas) throw UnsupportedError(str_cat(path, ": 'invert_sigmas' is not implemented"));
    if (c.num_train_timesteps <= 0) throw ConfigError(str_cat(path, ": num_train_timesteps must be positive"));
    return c;
}

std::string SchedulerConfig::to_string() const {
    return str_cat("scheduler: flow-match Euler, ", num_train_timesteps, " train steps, ",
                   use_dynamic_shifting ? "dynamic " : "static ", time_shift_type, " shift (base ", base_shift,
                   ", max ", max_shift, ", seq ", base_image_seq_len, "..", max_image_seq_len, "), shift ", shift);
}

}  // namespace glmimage
