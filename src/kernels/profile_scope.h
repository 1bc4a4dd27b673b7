// Names this library's own loops (the CPU kernels here and the CUDA launches beside them) in
// LibTorch's profiler (torch.profiler, the benches' --profile), which records ATen ops only:
// without a name their time belonged to no row of a profile. perf found 11 % of a small-preset
// bf16 denoising step in them on a 2-core AMX Xeon (2026-12-07), where LibTorch's profiler showed
// only the ATen ops around them. A row named glmimage::<kernel> is the time of this library's loop
// (with any ATen op it calls as a child); where a kernel hands the work to LibTorch's op instead, the
// scope is not opened and the op shows as itself.
//
// With no profiler running the scope costs a thread-local check; the inputs (record_shapes) are
// gathered only when one is.
#pragma once

#include <ATen/record_function.h>

#include <vector>

#define GLMI_KERNEL_SCOPE(name, ...) RECORD_FUNCTION(name, std::vector<c10::IValue>({__VA_ARGS__}))
