// The process-wide switch of every fused elementwise kernel (decoder_fused.h, rotary.h,
// mul_add.h): on by default; off, the models run the LibTorch op sequences those kernels replace
// (the same bits, more passes), so that a bench can measure what the kernels gain in one process
// (the research hooks' set_fused_kernels). Not meant to be flipped while a generation runs.
#pragma once

namespace glmimage::kernels {

void set_fused_kernels_enabled(bool enabled);
bool fused_kernels_enabled();

}  // namespace glmimage::kernels
