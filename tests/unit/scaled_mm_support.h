// Whether this LibTorch's CPU _scaled_mm takes the scales Linear's fp8 products use (one per row of
// x, one per output feature): torch 2.13's does, 2.11's CPU emulation asserts per-tensor scales.
// glmimage's own CPU fp8 path does not call it where the CPU has no fp8 kernels (Linear), so the
// tests compare with it only where it runs, and say so where it does not.
#pragma once

#include <ATen/ATen.h>

#include <exception>
#include <string>

namespace glmimage::test {

// Empty where a [16, 16] x [16, 16] product with per-row and per-column scales runs, else why not.
inline std::string cpu_scaled_mm_per_row_unavailable() {
    try {
        const auto a = at::ones({16, 16}).to(at::kFloat8_e4m3fn);
        at::_scaled_mm(a, a.t(), at::ones({16, 1}), at::ones({1, 16}), std::nullopt, std::nullopt, at::kBFloat16,
                       false);
        return {};
    } catch (const std::exception& e) {
        std::string why = e.what();
        if (auto nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
        return why;
    }
}

}  // namespace glmimage::test
