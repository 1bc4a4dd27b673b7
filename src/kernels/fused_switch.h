// Whether the fused elementwise kernels (decoder_fused.h, rotary.h, mul_add.h; also layer_norm.h's
// loop and gelu.h's table) run: a process-wide switch, on by default (off, the models run the
// LibTorch ops those kernels replace: the same bits, more passes, so that a bench can measure what
// the kernels gain in one process; the research hooks' set_fused_kernels; not meant to be flipped
// while a generation runs), and the one rule of which devices have them.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace glmimage::kernels {

void set_fused_kernels_enabled(bool enabled);
bool fused_kernels_enabled();

// The switch is on and the device has the kernels: the CPU (its loops), or a CUDA device in builds
// with them (GLMI_WITH_CUDA_KERNELS), where they take float32 and bfloat16. Each kernel adds its
// own dtype and layout rules.
bool fused_kernels_run_on(const c10::Device& device, c10::ScalarType dtype);

}  // namespace glmimage::kernels
