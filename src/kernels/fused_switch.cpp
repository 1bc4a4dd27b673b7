#include "kernels/fused_switch.h"

#include <atomic>

namespace glmimage::kernels {

namespace {
std::atomic<bool> g_enabled{true};
}  // namespace

void set_fused_kernels_enabled(bool enabled) { g_enabled.store(enabled, std::memory_order_relaxed); }
bool fused_kernels_enabled() { return g_enabled.load(std::memory_order_relaxed); }

}  // namespace glmimage::kernels
