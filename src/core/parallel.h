// Splitting this library's own CPU loops (kernels::gemv, the image resampler) across threads.
//
// Why not at::parallel_for: with LibTorch's OpenMP backend (the pip wheels, the libtorch zips)
// that template expands into an `omp parallel` region inside the caller's translation unit, and
// splits nothing unless that unit is compiled with OpenMP. This library is not: the OpenMP runtime
// belongs to LibTorch, and a second copy of it beside LibTorch's would fight it for the cores. So
// at::parallel_for in this library ran on one thread (seen at real size: the AR decode's gemv kept
// one core of two busy).
#pragma once

#include <cstdint>
#include <functional>

namespace glmimage {

// Calls f(begin, end) over [0, n) in contiguous pieces of at least `grain` items, on at most
// at::get_num_threads() threads at once: the caller runs the first piece, the workers of one
// process-wide pool the others; returns when every piece is done, rethrowing the first exception
// a piece threw. Runs f(0, n) on the caller alone when one piece suffices or when called from
// inside a LibTorch parallel region.
void parallel_for_cpu(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

}  // namespace glmimage
