#include "kernels/fused_switch.h"

#include <atomic>

namespace glmimage::kernels {

namespace {
std::atomic<bool> g_enabled{true};
}  // namespace

void set_fused_kernels_enabled(bool enabled) { g_enabled.store(enabled, std::memory_order_relaxed); }
bool fused_kernels_enabled() { return g_enabled.load(std::memory_order_relaxed); }

bool fused_kernels_run_on(const c10::Device& device, c10::ScalarType dtype) {
    if (!fused_kernels_enabled()) return false;
    if (device.is_cpu()) return true;
#ifdef GLMI_WITH_CUDA_KERNELS
    return device.is_cuda() && (dtype == c10::kFloat || dtype == c10::kBFloat16);
#else
    (void)dtype;
    return false;
#endif
}

}  // namespace glmimage::kernels
