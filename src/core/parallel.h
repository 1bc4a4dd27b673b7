// Splitting this library's own CPU loops (kernels::gemv, the image resampler) across threads.
//
// Why not at::parallel_for: with LibTorch's OpenMP backend (the pip wheels, the libtorch zips)
// that template expands into an `omp parallel` region inside the caller's translation unit, and
// splits nothing unless that unit is compiled with OpenMP. This library is not: the OpenMP runtime
// belongs to LibTorch, and a second copy of it beside LibTorch's would fight it for the cores. So
// at::parallel_for in this library ran on one thread (seen at real size: the AR decode's gemv kept
// one core of two busy). Where LibTorch ships its OpenMP runtime (libgomp) and the compiler is GCC,
// parallel.cpp alone is compiled with OpenMP and linked to that same runtime, so these loops run on
// LibTorch's own thread team; elsewhere on a c10::ThreadPool of this library's (whose extra thread
// competes with LibTorch's spinning OpenMP threads: 1.17 s against 0.90 s per real-size AR token).
#pragma once

#include <cstdint>
#include <functional>

namespace glmimage {

// Calls f(begin, end) over [0, n) in contiguous pieces of at least `grain` items, on at most
// at::get_num_threads() threads at once, the caller running one of them; returns when every
// piece is done, rethrowing the first exception a piece threw. Runs f(0, n) on the caller alone
// when one piece suffices or when called from inside a LibTorch parallel region. In a child after
// fork(), set one thread first (as LibTorch's own ops need there with OpenMP).
void parallel_for_cpu(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

// The least memory a piece of a streaming loop (one that reads each byte once) should cover to be
// worth a thread: handing a piece to LibTorch's OpenMP team costs a few microseconds (its threads
// spin between regions), waking a pool thread about 70 us. Measured with kernels::gemv, one bf16
// row, 2 threads: on the team a 512 KB weight ran 1.5x faster split in two, 4 MB 2.2x; on the
// pool a 512 KB one ran 5.6x slower split, 4 MB even, 16 MB 1.5x faster.
int64_t parallel_min_piece_bytes();

}  // namespace glmimage
