// The mean wall time of a call, after one warm-up call: the kernel tests' timing lines (printed
// for the record, never asserted: the machines are shared).
#pragma once

#include <chrono>

namespace glmimage::testing {

template <typename F>
double mean_ms(F&& f, int reps = 5) {
    f();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

}  // namespace glmimage::testing
