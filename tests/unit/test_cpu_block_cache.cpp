// The CPU block cache (src/core/cpu_block_cache.h): reuse inside scopes only, the cap, the peak
// bound, the raw interface, the release between stages, the cache emptied when the last scope
// ends, threads.
#include <gtest/gtest.h>

#include <c10/core/CPUAllocator.h>

#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "core/cpu_block_cache.h"

namespace glmimage {
namespace {

constexpr int64_t kFloats = 1 << 20;  // 4 MiB: above the cache's 1 MiB floor

TEST(CpuBlockCache, ReusesAFreedBlockOfTheSameSizeInsideAScope) {
    CpuBlockCacheScope scope;
    const auto before = cpu_block_cache_stats();
    void* first = nullptr;
    {
        auto t = at::empty({kFloats});
        first = t.data_ptr();
    }
    EXPECT_EQ(cpu_block_cache_stats().cached_bytes, before.cached_bytes + kFloats * 4);
    auto again = at::empty({kFloats});
    EXPECT_EQ(again.data_ptr(), first);
    EXPECT_EQ(cpu_block_cache_stats().reused, before.reused + 1);
    auto other_size = at::empty({kFloats + 1});
    EXPECT_NE(other_size.data_ptr(), first);
    EXPECT_EQ(cpu_block_cache_stats().fresh, before.fresh + 2);
}

TEST(CpuBlockCache, SmallBlocksAndBlocksOutsideScopesAreNotItsConcern) {
    const auto before = cpu_block_cache_stats();
    { auto t = at::empty({kFloats}); }  // no scope
    {
        CpuBlockCacheScope scope;
        auto small = at::empty({1000});
    }
    const auto after = cpu_block_cache_stats();
    EXPECT_EQ(after.fresh, before.fresh);
    EXPECT_EQ(after.reused, before.reused);
    EXPECT_EQ(after.cached_bytes, 0u);
}

TEST(CpuBlockCache, EmptiedWhenTheLastScopeEndsAndLaterFreesGoStraightBack) {
    at::Tensor outlives;
    {
        CpuBlockCacheScope outer;
        {
            CpuBlockCacheScope inner;
            { auto t = at::empty({kFloats}); }
        }
        EXPECT_GT(cpu_block_cache_stats().cached_bytes, 0u) << "an outer scope still runs";
        outlives = at::ones({kFloats});
    }
    EXPECT_EQ(cpu_block_cache_stats().cached_bytes, 0u);
    EXPECT_EQ(outlives.sum().item<float>(), static_cast<float>(kFloats));  // still valid memory
    outlives.reset();
    EXPECT_EQ(cpu_block_cache_stats().cached_bytes, 0u);
}

TEST(CpuBlockCache, TheCapEvictsTheOldestBlocks) {
    set_cpu_block_cache_cap(3 * kFloats * 4);  // two of the three blocks below, not all three
    {
        CpuBlockCacheScope scope;
        const auto before = cpu_block_cache_stats();
        {
            auto a = at::empty({kFloats});
            auto b = at::empty({kFloats + 16});
            auto c = at::empty({kFloats + 32});
        }  // freed c, b, a: c, the oldest, goes when a comes
        EXPECT_EQ(cpu_block_cache_stats().evicted, before.evicted + 1);
        EXPECT_LE(cpu_block_cache_stats().cached_bytes, size_t{3} * kFloats * 4);
        auto a = at::empty({kFloats});
        auto c = at::empty({kFloats + 32});
        EXPECT_EQ(cpu_block_cache_stats().reused, before.reused + 1);  // a's block; c's was evicted
        EXPECT_EQ(cpu_block_cache_stats().fresh, before.fresh + 4);
    }
    set_cpu_block_cache_cap(size_t{4} << 30);
}

TEST(CpuBlockCache, InsideAPeakBoundANewBlockNeverRaisesTheBytesHeldAboveTheMostInUse) {
    CpuBlockCacheScope scope;
    CpuBlockCachePeakBound bound;
    const auto before = cpu_block_cache_stats();
    ASSERT_EQ(before.cached_bytes, 0u);
    {
        auto a = at::empty({kFloats});
        auto b = at::empty({kFloats});
        a.reset();  // freed first: the older cached block
    }  // at most 2 blocks of kFloats in use; both cached now
    EXPECT_EQ(cpu_block_cache_stats().cached_bytes, 2u * kFloats * 4);
    {
        // Another size: with both kept, 3 blocks would be held where at most 2 were ever in use,
        // so the older cached one is freed; the other stays for reuse.
        auto c = at::empty({kFloats / 2});
        const auto after = cpu_block_cache_stats();
        EXPECT_EQ(after.trimmed, before.trimmed + 1);
        EXPECT_EQ(after.evicted, before.evicted) << "not an eviction at the cap";
        EXPECT_EQ(after.cached_bytes, kFloats * 4u);
        auto d = at::empty({kFloats});
        EXPECT_EQ(cpu_block_cache_stats().reused, before.reused + 1);
    }
    release_cached_cpu_blocks();  // nothing held now; the most in use is still 2 blocks
    { auto e = at::empty({kFloats}); }
    {
        // With e's block cached, a new one keeps the bytes held under the most in use: nothing freed.
        auto f = at::empty({kFloats / 2});
        EXPECT_EQ(cpu_block_cache_stats().trimmed, before.trimmed + 1);
        EXPECT_EQ(cpu_block_cache_stats().cached_bytes, kFloats * 4u);
    }
}

TEST(CpuBlockCache, CountsTheBytesInUseAndTheMostAtOnceSinceAPeakBoundBegan) {
    CpuBlockCacheScope scope;
    const size_t base = cpu_block_cache_stats().in_use_bytes;  // what earlier tests left alive
    const size_t block = kFloats * 4;
    auto held = at::empty({kFloats});  // in use before the bound began: counted from its start
    CpuBlockCachePeakBound bound;
    EXPECT_EQ(cpu_block_cache_stats().in_use_bytes, base + block);
    EXPECT_EQ(cpu_block_cache_stats().peak_in_use_bytes, base + block);
    {
        auto a = at::empty({kFloats});
        auto b = at::empty({2 * kFloats});
        EXPECT_EQ(cpu_block_cache_stats().in_use_bytes, base + 4 * block);
    }
    { auto c = at::empty({kFloats}); }  // a's block again, with fewer in use than before
    const auto end = cpu_block_cache_stats();
    EXPECT_EQ(end.in_use_bytes, base + block);
    EXPECT_EQ(end.peak_in_use_bytes, base + 4 * block);
}

TEST(CpuBlockCache, OutsideAPeakBoundTheCachedBlocksStayForReuse) {
    CpuBlockCacheScope scope;
    const auto before = cpu_block_cache_stats();
    {
        auto a = at::empty({kFloats});
        auto b = at::empty({kFloats});
    }
    {
        auto c = at::empty({kFloats / 2});  // 3 blocks held where at most 2 were in use
        EXPECT_EQ(cpu_block_cache_stats().trimmed, before.trimmed);
        EXPECT_EQ(cpu_block_cache_stats().cached_bytes, 2u * kFloats * 4);
    }
}

TEST(CpuBlockCache, ReleaseFreesTheHeldBlocksAndLeavesTheLiveOnesAndTheScope) {
    CpuBlockCacheScope scope;
    const auto before = cpu_block_cache_stats();
    auto live = at::full({kFloats}, 7.0f);
    { auto t = at::empty({kFloats + 16}); }
    EXPECT_EQ(cpu_block_cache_stats().cached_bytes, before.cached_bytes + (kFloats + 16) * 4);
    std::thread([] { release_cached_cpu_blocks(); }).join();  // outside any scope (a call with the cache off)
    EXPECT_EQ(cpu_block_cache_stats().cached_bytes, before.cached_bytes + (kFloats + 16) * 4);
    release_cached_cpu_blocks();
    const auto after = cpu_block_cache_stats();
    EXPECT_EQ(after.cached_bytes, 0u);
    EXPECT_EQ(after.evicted, before.evicted) << "a release is not an eviction at the cap";
    EXPECT_EQ(live.sum().item<float>(), 7.0f * kFloats);  // a block in use stays its tensor's
    {
        auto t = at::empty({kFloats + 16});  // nothing to reuse now: a fresh block
        EXPECT_EQ(cpu_block_cache_stats().fresh, after.fresh + 1);
    }
    EXPECT_EQ(cpu_block_cache_stats().cached_bytes, (kFloats + 16) * 4u) << "the scope still caches";
}

TEST(CpuBlockCache, RawAllocateAndDeallocateInAndOutOfScopes) {
    auto* alloc = c10::GetCPUAllocator();
    ASSERT_NE(alloc->raw_deleter(), nullptr);
    void* outside = alloc->raw_allocate(kFloats * 4);
    CpuBlockCacheScope scope;
    void* inside = alloc->raw_allocate(kFloats * 4);
    static_cast<char*>(inside)[kFloats * 4 - 1] = 1;
    alloc->raw_deallocate(outside);
    alloc->raw_deallocate(inside);
    EXPECT_EQ(alloc->raw_allocate(kFloats * 4), inside);  // cached, and served again
    alloc->raw_deallocate(inside);
}

TEST(CpuBlockCache, ThreadsShareTheCacheWithoutMixingBlocks) {
    std::vector<std::thread> threads;
    std::vector<int> bad(4, 0);
    for (int w = 0; w < 4; ++w)
        threads.emplace_back([w, &bad] {
            CpuBlockCacheScope scope;
            std::optional<CpuBlockCachePeakBound> bound;  // one thread frees cached blocks as it goes
            if (w == 0) bound.emplace();
            std::mt19937 rng(w);
            for (int i = 0; i < 200; ++i) {
                const int64_t n = kFloats / 4 + static_cast<int64_t>(rng() % 4) * 1024;
                auto t = at::full({n}, static_cast<float>(w * 1000 + i));
                auto u = at::empty({n});  // may reuse another thread's freed block
                u.fill_(-1.0f);
                if (!at::all(t == static_cast<float>(w * 1000 + i)).item<bool>()) ++bad[w];
            }
        });
    for (auto& t : threads) t.join();
    for (int w = 0; w < 4; ++w) EXPECT_EQ(bad[w], 0) << "thread " << w;
    EXPECT_EQ(cpu_block_cache_stats().cached_bytes, 0u);
}

}  // namespace
}  // namespace glmimage
