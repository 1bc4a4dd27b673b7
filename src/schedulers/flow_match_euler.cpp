#include "schedulers/flow_match_euler.h"

#include <cmath>
#include <utility>

#include "core/check.h"

// Bit-exactness notes. The reference mixes Python floats (float64) with float32 numpy arrays; under
// numpy 2's promotion rules (NEP 50) a Python scalar meeting a float32 array is first cast to float32
// and the operation runs in float32. Each line below names the reference expression it reproduces.
// Products and sums are written as separate statements: contracting them into an FMA would change
// the last bit (our targets build in ISO C++ mode, where GCC does not contract).

namespace glmimage {

using detail::str_cat;

TimestepLabel parse_timestep_label(const std::string& name) {
    if (name == "0.39" || name == "unshifted") return TimestepLabel::kUnshifted;
    if (name == "0.40" || name == "shifted") return TimestepLabel::kShifted;
    throw InputError(str_cat("scheduler: unknown timestep label version '", name,
                             "': expected '0.39' (unshifted) or '0.40' (shifted)"));
}

float FlowMatchSchedule::dt(int64_t i) const {
    GLMI_CHECK(i >= 0 && i + 1 < static_cast<int64_t>(sigmas.size()), "step ", i, " of ", n_steps());
    return sigmas[i + 1] - sigmas[i];  // torch: sigma_next - sigma, both float32
}

FlowMatchEulerScheduler::FlowMatchEulerScheduler(SchedulerConfig config) : config_(std::move(config)) {}

double FlowMatchEulerScheduler::calculate_shift(int64_t image_seq_len) const {
    // m = (image_seq_len / base_seq_len) ** 0.5; mu = m * max_shift + base_shift  (Python floats;
    // `** 0.5` is C pow, not sqrt)
    const double ratio = static_cast<double>(image_seq_len) / static_cast<double>(config_.base_image_seq_len);
    const double m = std::pow(ratio, 0.5);
    const double scaled = m * config_.max_shift;
    return scaled + config_.base_shift;
}

std::vector<float> FlowMatchEulerScheduler::shift_sigmas(const std::vector<float>& sigmas, double mu) const {
    std::vector<float> out(sigmas.size());
    if (config_.use_dynamic_shifting) {
        // time_shift(mu, 1.0, t): linear  mu / (mu + (1 / t - 1) ** 1.0),
        //                         exponential  exp(mu) / (exp(mu) + (1 / t - 1) ** 1.0)
        // (x ** 1.0 == x exactly.)
        const float m = config_.time_shift_type == "linear" ? static_cast<float>(mu)
                                                            : static_cast<float>(std::exp(mu));
        for (size_t i = 0; i < sigmas.size(); ++i) {
            float x = 1.0f / sigmas[i];
            x = x - 1.0f;
            const float den = m + x;
            out[i] = m / den;
        }
    } else {
        // self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        const float shift = static_cast<float>(config_.shift);
        const float shift_m1 = static_cast<float>(config_.shift - 1.0);
        for (size_t i = 0; i < sigmas.size(); ++i) {
            const float num = shift * sigmas[i];
            const float prod = shift_m1 * sigmas[i];
            const float den = 1.0f + prod;
            out[i] = num / den;
        }
    }
    // `if self.config.shift_terminal:` (0.0 and None both skip) -> stretch_shift_to_terminal:
    // one_minus_z = 1 - t; scale = one_minus_z[-1] / (1 - shift_terminal); t' = 1 - one_minus_z / scale
    if (config_.shift_terminal && *config_.shift_terminal != 0.0 && !out.empty()) {
        const float last = 1.0f - out.back();
        const float scale = last / static_cast<float>(1.0 - *config_.shift_terminal);
        for (float& s : out) {
            const float one_minus_z = 1.0f - s;
            const float q = one_minus_z / scale;
            s = 1.0f - q;
        }
    }
    return out;
}

namespace {

// np.array(timesteps).astype(np.int64).astype(np.float32): truncation toward zero, then rounding
// to float32.
float truncate_timestep(double t) {
    if (!std::isfinite(t) || t <= -9.2e18 || t >= 9.2e18)
        throw InputError(str_cat("scheduler: custom timestep must be a finite number, got ", t));
    return static_cast<float>(static_cast<int64_t>(t));
}

}  // namespace

FlowMatchSchedule FlowMatchEulerScheduler::schedule(int64_t n_steps, int64_t height, int64_t width,
                                                    const FlowMatchScheduleOptions& options) const {
    if (height <= 0 || width <= 0 || height % 32 != 0 || width % 32 != 0)
        throw InputError(str_cat("scheduler: height and width must be positive multiples of 32, got ", height,
                                 "x", width));
    if (options.patch_size < 1 || options.vae_scale_factor < 1)
        throw InputError(str_cat("scheduler: patch size and VAE scale factor must be positive, got ",
                                 options.patch_size, " and ", options.vae_scale_factor));
    const int64_t n_train = config_.num_train_timesteps;
    const float n_train_f = static_cast<float>(n_train);

    FlowMatchSchedule s;
    // image_seq_len = ((height // vae_scale_factor) * (width // vae_scale_factor)) // (patch_size ** 2)
    s.image_seq_len = ((height / options.vae_scale_factor) * (width / options.vae_scale_factor)) /
                      (options.patch_size * options.patch_size);
    s.mu = calculate_shift(s.image_seq_len);

    // timesteps = np.linspace(num_train_timesteps, 1.0, num_inference_steps + 1)[:-1] (or the
    // caller's), .astype(np.int64).astype(np.float32)
    std::vector<float> ts;
    if (options.timesteps) {
        if (options.timesteps->empty()) throw InputError("scheduler: custom timesteps must not be empty");
        for (double t : *options.timesteps) ts.push_back(truncate_timestep(t));
    } else {
        if (n_steps < 1) throw InputError(str_cat("scheduler: number of steps must be at least 1, got ", n_steps));
        // numpy linspace: step = (stop - start) / div; y = arange(num) * step; y += start
        const double start = static_cast<double>(n_train);
        const double step = (1.0 - start) / static_cast<double>(n_steps);
        ts.resize(static_cast<size_t>(n_steps));
        for (int64_t i = 0; i < n_steps; ++i) {
            double y = static_cast<double>(i) * step;
            y = y + start;
            ts[static_cast<size_t>(i)] = static_cast<float>(static_cast<int64_t>(y));
        }
    }

    // sigmas = timesteps / num_train_timesteps if sigmas is None else sigmas (then float32 in
    // set_timesteps, which requires len(sigmas) == len(timesteps))
    std::vector<float> sig;
    if (options.sigmas) {
        if (options.sigmas->size() != ts.size())
            throw InputError(str_cat("scheduler: custom sigmas must have one entry per step: expected ", ts.size(),
                                     ", got ", options.sigmas->size()));
        for (double v : *options.sigmas) sig.push_back(static_cast<float>(v));
    } else {
        sig.resize(ts.size());
        for (size_t i = 0; i < ts.size(); ++i) sig[i] = ts[i] / n_train_f;
    }

    s.sigmas = shift_sigmas(sig, s.mu);
    s.sigmas.push_back(0.0f);  // terminal sigma

    // Caller-supplied timesteps are kept unshifted up to 0.39; 0.40 recomputes them from the
    // shifted sigmas (sigmas * num_train_timesteps, float32).
    if (options.label == TimestepLabel::kUnshifted) {
        s.timesteps = std::move(ts);
    } else {
        s.timesteps.resize(ts.size());
        for (size_t i = 0; i < ts.size(); ++i) s.timesteps[i] = s.sigmas[i] * n_train_f;
    }
    // pipeline: timestep = t.expand(batch) - 1 (float32)
    s.labels.resize(s.timesteps.size());
    for (size_t i = 0; i < s.timesteps.size(); ++i) s.labels[i] = s.timesteps[i] - 1.0f;
    return s;
}

}  // namespace glmimage
