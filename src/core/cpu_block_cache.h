// Reuse of large CPU tensor blocks within a generation.
//
// A DiT step at 1024² allocates about 45 GB of activations one block after another, each of them
// above glibc's mmap threshold (32 MB at most): every one came back from the kernel as fresh pages,
// faulted in 4 KiB at a time and zeroed, and went back to it when freed. Measured on one
// real-width DiT block (2 x 4106 tokens, bf16, 2 threads): 680k page faults and about 1 s of system
// time a call, 3.12 s a call against 2.52 s with this cache, and the same bits.
//
// While a CpuBlockCacheScope is alive on a thread, that thread's CPU allocations of 1 MiB or more
// come from a cache of blocks freed earlier with the same size (or are new when none is there);
// blocks freed while any scope is alive, on any thread, go back to the cache (its oldest evicted
// above a cap); when the last scope ends, the cache is emptied. Outside scopes nothing changes:
// allocations go to the allocator that was there before (LibTorch's, or whatever the process set).
// The cache is installed as LibTorch's CPU allocator the first time a scope is made.
#pragma once

#include <cstddef>
#include <cstdint>

namespace glmimage {

class CpuBlockCacheScope {
  public:
    CpuBlockCacheScope();
    ~CpuBlockCacheScope();
    CpuBlockCacheScope(const CpuBlockCacheScope&) = delete;
    CpuBlockCacheScope& operator=(const CpuBlockCacheScope&) = delete;
};

// While alive on a thread, that thread's new blocks do not raise the bytes of the cache's blocks
// (in use + cached) above the most of them in use at once since the outermost such scope on the
// thread began (or a later one on another thread: concurrent calls share one count, which can
// only make the cache free more). The oldest cached blocks are freed first, so inside it the
// cache adds nothing to the peak. For a stage whose activations change size as it goes and whose
// work per byte is high enough that a new block's page faults cost little: the VAE, where the
// blocks of one resolution level were otherwise held while the next level's ran (replaying the
// allocations of a 1024² decode on a CPU: up to 7.8 GB held against 4.35 GB ever in use; VAE time
// unchanged). The denoising loop is left unbound: its sizes repeat every layer and step, and it
// holds about twice its peak in use to serve every block again; bound, it took a new block for
// about half of its allocations (one layer at 1024²: 39 new blocks a step against 0.3).
class CpuBlockCachePeakBound {
  public:
    CpuBlockCachePeakBound();
    ~CpuBlockCachePeakBound();
    CpuBlockCachePeakBound(const CpuBlockCachePeakBound&) = delete;
    CpuBlockCachePeakBound& operator=(const CpuBlockCachePeakBound&) = delete;
};

struct CpuBlockCacheStats {
    uint64_t reused = 0;           // allocations served from the cache
    uint64_t fresh = 0;            // allocations in a scope that found no block of their size
    uint64_t evicted = 0;          // blocks freed because the cache was at its cap
    uint64_t trimmed = 0;          // blocks freed inside a CpuBlockCachePeakBound
    size_t cached_bytes = 0;       // held for reuse now
    size_t peak_cached_bytes = 0;  // since the process started
    size_t in_use_bytes = 0;       // the cache's blocks in use now
    // The most of them in use at once since the latest outermost CpuBlockCachePeakBound began
    // (since the process started before any): what a stage's activations need at once, counted
    // by the allocator whatever made them.
    size_t peak_in_use_bytes = 0;
};

CpuBlockCacheStats cpu_block_cache_stats();

// Frees the blocks held for reuse now (blocks in use are untouched; scopes stay as they are). A
// generation calls it where it moves on to a stage whose activations have other sizes (the AR
// stage to the decoder, the condition images' VAE encoding and cache pass to the denoising loop,
// that loop to the VAE decode): the earlier stage's blocks would otherwise be held, unused, until
// the call ends. A no-op on a thread outside any scope (a call with the cache off). With concurrent
// sessions it also frees blocks another call could have reused: that costs it fresh pages, not bits.
void release_cached_cpu_blocks();

// Blocks of at least this size are cached.
inline constexpr size_t kCpuBlockCacheMinBytes = size_t{1} << 20;
// The most the cache holds, its oldest blocks freed first above it: 4 GiB unless set (tests set less).
void set_cpu_block_cache_cap(size_t bytes);

}  // namespace glmimage
