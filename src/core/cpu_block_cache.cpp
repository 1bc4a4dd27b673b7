#include "core/cpu_block_cache.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace glmimage {
namespace {

thread_local int t_scope_depth = 0;
thread_local int t_peak_bound_depth = 0;

// Blocks this cache made, live or cached. Never destroyed: tensors freed during the process's exit
// may still reach it.
class BlockCache {
  public:
    // bound: hold the bytes of all blocks (in use + cached) to the most in use at once.
    void* take(size_t n, bool bound) {
        {
            std::lock_guard<std::mutex> g(mu_);
            auto it = by_size_.find(n);
            if (it != by_size_.end()) {
                void* p = it->second->second;
                by_age_.erase(it->second);
                by_size_.erase(it);
                stats_.cached_bytes -= n;
                ++stats_.reused;
                live_peak_ = std::max(live_peak_, born_bytes_ - stats_.cached_bytes);
                return p;
            }
            ++stats_.fresh;
            live_peak_ = std::max(live_peak_, born_bytes_ - stats_.cached_bytes + n);
            // The oldest cached blocks go first, until the new one fits under that peak.
            while (bound && stats_.cached_bytes > 0 && born_bytes_ + n > live_peak_) {
                evict_oldest(Why::kPeakBound);
            }
        }
        void* p = c10::alloc_cpu(n);  // LibTorch's aligned allocation; throws when out of memory
        std::lock_guard<std::mutex> g(mu_);
        born_.emplace(p, n);
        born_bytes_ += n;
        return p;
    }

    // False when p is not one of this cache's blocks.
    bool give_back(void* p) {
        std::lock_guard<std::mutex> g(mu_);
        auto it = born_.find(p);
        if (it == born_.end()) return false;
        const size_t n = it->second;
        if (active_scopes_ == 0) {
            born_.erase(it);
            born_bytes_ -= n;
            c10::free_cpu(p);
            return true;
        }
        by_age_.emplace_front(n, p);
        by_size_.emplace(n, by_age_.begin());
        stats_.cached_bytes += n;
        while (stats_.cached_bytes > cap_) evict_oldest(Why::kCap);
        stats_.peak_cached_bytes = std::max(stats_.peak_cached_bytes, stats_.cached_bytes);
        return true;
    }

    void set_cap(size_t bytes) {
        std::lock_guard<std::mutex> g(mu_);
        cap_ = bytes;
        while (stats_.cached_bytes > cap_) evict_oldest(Why::kCap);
    }

    void release_cached() {
        std::lock_guard<std::mutex> g(mu_);
        free_all_cached();
    }

    void enter() {
        std::lock_guard<std::mutex> g(mu_);
        ++active_scopes_;
    }

    void leave() {
        std::lock_guard<std::mutex> g(mu_);
        if (--active_scopes_ > 0) return;
        free_all_cached();
    }

    // The most in use at once counted from now.
    void restart_peak() {
        std::lock_guard<std::mutex> g(mu_);
        live_peak_ = born_bytes_ - stats_.cached_bytes;
    }

    CpuBlockCacheStats stats() {
        std::lock_guard<std::mutex> g(mu_);
        auto s = stats_;
        s.in_use_bytes = born_bytes_ - stats_.cached_bytes;
        s.peak_in_use_bytes = live_peak_;
        return s;
    }

  private:
    // Why a cached block is freed; the first two are counted (evicted, trimmed), a release is not.
    enum class Why { kCap, kPeakBound, kRelease };

    // mu_ held. Every cached block freed.
    void free_all_cached() {
        while (!by_age_.empty()) evict_oldest(Why::kRelease);
    }

    // mu_ held.
    void evict_oldest(Why why) {
        auto [n, p] = by_age_.back();
        for (auto [it, end] = by_size_.equal_range(n); it != end; ++it)
            if (it->second->second == p) {
                by_size_.erase(it);
                break;
            }
        by_age_.pop_back();
        stats_.cached_bytes -= n;
        born_.erase(p);
        born_bytes_ -= n;
        c10::free_cpu(p);
        if (why == Why::kCap) ++stats_.evicted;
        if (why == Why::kPeakBound) ++stats_.trimmed;
    }

    std::mutex mu_;
    std::unordered_map<void*, size_t> born_;
    std::list<std::pair<size_t, void*>> by_age_;  // cached blocks, newest first
    std::multimap<size_t, std::list<std::pair<size_t, void*>>::iterator> by_size_;
    size_t born_bytes_ = 0;  // the blocks in born_: in use + cached
    size_t live_peak_ = 0;   // the most bytes of them in use at once since the last restart_peak
    size_t cap_ = size_t{4} << 30;
    int active_scopes_ = 0;
    CpuBlockCacheStats stats_;
};

BlockCache& cache() {
    static auto* c = new BlockCache;
    return *c;
}

// The allocator that was installed before ours; set once, before ours is installed.
c10::Allocator* g_previous = nullptr;

// Frees either kind of block: one of the cache's, or one the previous allocator made (what
// raw_deallocate hands over).
void release(void* p) {
    if (!p || cache().give_back(p)) return;
    g_previous->raw_deleter()(p);
}

class CachingCpuAllocator final : public c10::Allocator {
  public:
    c10::DataPtr allocate(size_t n) override {
        if (t_scope_depth == 0 || n < kCpuBlockCacheMinBytes) return g_previous->allocate(n);
        void* p = cache().take(n, t_peak_bound_depth > 0);
        return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
    }
    c10::DeleterFnPtr raw_deleter() const override {
        return g_previous->raw_deleter() ? &release : nullptr;
    }
    void copy_data(void* dest, const void* src, std::size_t count) const override {
        default_copy_data(dest, src, count);
    }
};

void install_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_previous = c10::GetCPUAllocator();
        static auto* ours = new CachingCpuAllocator;
        // The highest priority, so that it is installed over any allocator set before (which it then
        // wraps). Were it displaced later, its blocks would still come back to it: each carries
        // `release` as its deleter.
        c10::SetCPUAllocator(ours, /*priority=*/UINT8_MAX);
    });
}

}  // namespace

CpuBlockCacheScope::CpuBlockCacheScope() {
    install_once();
    cache().enter();
    ++t_scope_depth;
}

CpuBlockCacheScope::~CpuBlockCacheScope() {
    --t_scope_depth;
    cache().leave();
}

CpuBlockCachePeakBound::CpuBlockCachePeakBound() {
    if (t_peak_bound_depth++ == 0) cache().restart_peak();
}

CpuBlockCachePeakBound::~CpuBlockCachePeakBound() { --t_peak_bound_depth; }

CpuBlockCacheStats cpu_block_cache_stats() { return cache().stats(); }

void release_cached_cpu_blocks() {
    if (t_scope_depth > 0) cache().release_cached();
}

void set_cpu_block_cache_cap(size_t bytes) { cache().set_cap(bytes); }

}  // namespace glmimage
