// The flow-matching Euler schedule: the worked numbers of diffusion.md 5.2-5.4 under the real
// scheduler config, the static-shift case of the diffusers pipeline test, and argument checks. Bit
// parity with diffusers is tests/python/test_scheduler_parity.py.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "glmimage/errors.h"
#include "schedulers/flow_match_euler.h"

namespace glmimage {
namespace {

FlowMatchEulerScheduler real_scheduler() {
    return FlowMatchEulerScheduler(SchedulerConfig::from_file(
        std::string(GLMI_SOURCE_DIR) + "/tests/data/real-configs/scheduler/scheduler_config.json"));
}

TEST(FlowMatchEuler, Real1024Square50Steps) {
    const auto s = real_scheduler().schedule(50, 1024, 1024);
    EXPECT_EQ(s.image_seq_len, 4096);
    EXPECT_EQ(s.mu, 3.25);
    ASSERT_EQ(s.n_steps(), 50);
    ASSERT_EQ(s.sigmas.size(), 51u);
    for (int i = 0; i < 50; ++i) {
        EXPECT_EQ(s.timesteps[i], static_cast<float>(1000 - 20 * i));
        EXPECT_EQ(s.labels[i], static_cast<float>(999 - 20 * i));
    }
    EXPECT_EQ(s.sigmas[0], 1.0f);
    EXPECT_NEAR(s.sigmas[1], 0.99376, 1e-5);
    EXPECT_NEAR(s.sigmas[2], 0.98734, 1e-5);
    EXPECT_NEAR(s.sigmas[49], 0.06220, 1e-5);
    EXPECT_EQ(s.sigmas[50], 0.0f);
    EXPECT_EQ(s.dt(49), -s.sigmas[49]);
}

TEST(FlowMatchEuler, TruncatedLinspace30Steps) {
    const auto s = real_scheduler().schedule(30, 1024, 1152);
    const std::vector<float> head = {1000, 966, 933, 900};
    for (size_t i = 0; i < head.size(); ++i) EXPECT_EQ(s.timesteps[i], head[i]);
    EXPECT_EQ(s.timesteps[28], 67.0f);
    EXPECT_EQ(s.timesteps[29], 34.0f);
    EXPECT_NEAR(s.mu, 3.43198, 1e-5);
    EXPECT_NEAR(s.sigmas[1], 0.98985, 1e-5);
    EXPECT_NEAR(s.sigmas[29], 0.10778, 1e-5);
}

TEST(FlowMatchEuler, ShiftedLabelsOfDiffusers040) {
    FlowMatchScheduleOptions o;
    o.label = TimestepLabel::kShifted;
    const auto s = real_scheduler().schedule(50, 1024, 1024, o);
    EXPECT_EQ(s.labels[0], 999.0f);
    EXPECT_NEAR(s.labels[1], 992.7598, 1e-3);
    EXPECT_NEAR(s.labels[49], 61.2010, 1e-3);
    EXPECT_EQ(parse_timestep_label("0.40"), TimestepLabel::kShifted);
    EXPECT_EQ(parse_timestep_label("0.39"), TimestepLabel::kUnshifted);
    EXPECT_THROW(parse_timestep_label("0.41"), InputError);
}

TEST(FlowMatchEuler, StaticShiftOfThePipelineTest) {
    // FlowMatchEulerDiscreteScheduler() defaults: no dynamic shift, shift 1.
    const FlowMatchEulerScheduler sched{SchedulerConfig{}};
    const auto s = sched.schedule(2, 32, 32);
    EXPECT_EQ(s.sigmas, (std::vector<float>{1.0f, 0.5f, 0.0f}));
    EXPECT_EQ(s.labels, (std::vector<float>{999.0f, 499.0f}));
}

TEST(FlowMatchEuler, CustomTimestepsReplaceTheStepCount) {
    FlowMatchScheduleOptions o;
    o.timesteps = std::vector<double>{999.7, 500.2, 10.9};
    const auto s = real_scheduler().schedule(50, 64, 64, o);
    EXPECT_EQ(s.timesteps, (std::vector<float>{999.0f, 500.0f, 10.0f}));
    EXPECT_EQ(s.sigmas.size(), 4u);
    o.sigmas = std::vector<double>{1.0, 0.5};
    EXPECT_THROW(real_scheduler().schedule(50, 64, 64, o), InputError);
}

TEST(FlowMatchEuler, RejectsBadArguments) {
    const auto sched = real_scheduler();
    EXPECT_THROW(sched.schedule(0, 64, 64), InputError);
    EXPECT_THROW(sched.schedule(10, 48, 64), InputError);
    EXPECT_THROW(sched.schedule(10, 64, 100), InputError);
    EXPECT_THROW(sched.schedule(10, -32, 64), InputError);
    FlowMatchScheduleOptions o;
    o.patch_size = 0;
    EXPECT_THROW(sched.schedule(10, 64, 64, o), InputError);
    o = {};
    o.timesteps = std::vector<double>{};
    EXPECT_THROW(sched.schedule(10, 64, 64, o), InputError);
    o.timesteps = std::vector<double>{1e300};
    EXPECT_THROW(sched.schedule(10, 64, 64, o), InputError);
}

}  // namespace
}  // namespace glmimage
