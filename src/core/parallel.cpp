#include "core/parallel.h"

#include <ATen/Parallel.h>
#include <c10/core/thread_pool.h>

#ifdef GLMI_PARALLEL_OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>

namespace glmimage {
namespace {

std::exception_ptr run_piece(const std::function<void(int64_t, int64_t)>& f, int64_t begin, int64_t end) {
    try {
        f(begin, end);
    } catch (...) {
        return std::current_exception();
    }
    return nullptr;
}

#ifdef GLMI_PARALLEL_OPENMP

// LibTorch's own OpenMP team (this file is compiled with OpenMP and linked to LibTorch's runtime:
// CMakeLists.txt): its threads are the ones LibTorch's ops use, already awake between ops, and no
// third thread competes with them for the cores.
void run_split(int64_t n, int64_t threads, const std::function<void(int64_t, int64_t)>& f) {
    std::exception_ptr first;
    std::mutex mutex;
    // No num_threads clause: a team of another size would be built anew (LibTorch avoids it too).
#pragma omp parallel
    {
        const int64_t pieces = std::min<int64_t>(threads, omp_get_num_threads());
        const int64_t chunk = (n + pieces - 1) / pieces;
        const int64_t begin = omp_get_thread_num() * chunk;
        if (begin < n) {
            if (auto e = run_piece(f, begin, std::min(n, begin + chunk))) {
                std::lock_guard<std::mutex> lock(mutex);
                if (!first) first = e;
            }
        }
    }
    if (first) std::rethrow_exception(first);
}

#else

// The pool, grown when a call asks for more workers than it has. A caller holds the pool it handed
// its pieces to (shared_ptr) until they are done, so replacing it never strands a running call.
// Never destroyed: joining its threads at exit would race the process's teardown.
std::shared_ptr<c10::ThreadPool> worker_pool(size_t workers) {
    static std::mutex mutex;
    static auto* pool = new std::shared_ptr<c10::ThreadPool>();
    std::lock_guard<std::mutex> lock(mutex);
    if (!*pool || (*pool)->size() < workers) *pool = std::make_shared<c10::ThreadPool>(static_cast<int>(workers));
    return *pool;
}

// What the caller waits on: the pieces still running and the first exception thrown.
struct Pending {
    std::mutex mutex;
    std::condition_variable done;
    int64_t left = 0;
    std::exception_ptr error;

    void finish(std::exception_ptr e) {
        // Notified under the lock: once the caller sees left == 0 it may destroy this.
        std::lock_guard<std::mutex> lock(mutex);
        if (e && !error) error = e;
        if (--left == 0) done.notify_one();
    }
};

void run_split(int64_t n, int64_t threads, const std::function<void(int64_t, int64_t)>& f) {
    const int64_t chunk = (n + threads - 1) / threads;
    const int64_t pieces = (n + chunk - 1) / chunk;
    auto pool = worker_pool(static_cast<size_t>(pieces - 1));
    Pending pending;
    pending.left = pieces - 1;
    for (int64_t p = 1; p < pieces; ++p) {
        const int64_t begin = p * chunk, end = std::min(n, begin + chunk);
        pool->run([&f, &pending, begin, end] { pending.finish(run_piece(f, begin, end)); });
    }
    const auto mine = run_piece(f, 0, std::min(n, chunk));
    std::unique_lock<std::mutex> lock(pending.mutex);
    pending.done.wait(lock, [&] { return pending.left == 0; });
    if (mine) std::rethrow_exception(mine);
    if (pending.error) std::rethrow_exception(pending.error);
}

#endif  // GLMI_PARALLEL_OPENMP

}  // namespace

int64_t parallel_min_piece_bytes() {
#ifdef GLMI_PARALLEL_OPENMP
    return int64_t{256} << 10;
#else
    return int64_t{4} << 20;
#endif
}

void parallel_for_cpu(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    const int64_t threads = std::min<int64_t>(at::get_num_threads(), (n + grain - 1) / grain);
    if (threads <= 1 || at::in_parallel_region()) {
        f(0, n);
        return;
    }
    run_split(n, threads, f);
}

}  // namespace glmimage
