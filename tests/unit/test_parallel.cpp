// parallel_for_cpu: every index once, pieces really on more than one thread when LibTorch is
// asked for two (at::parallel_for in this library's own code ran on one: see core/parallel.h),
// one thread when one piece suffices, the first exception rethrown, and a forked child that runs.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/parallel.h"

namespace glmimage {
namespace {

struct Seen {
    std::vector<std::atomic<int>> hits;
    std::mutex mutex;
    std::set<std::thread::id> threads;
    explicit Seen(int64_t n) : hits(static_cast<size_t>(n)) {}

    std::function<void(int64_t, int64_t)> body() {
        return [this](int64_t b, int64_t e) {
            {
                std::lock_guard<std::mutex> lock(mutex);
                threads.insert(std::this_thread::get_id());
            }
            // Long enough that the caller cannot finish every piece before a worker wakes.
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
        };
    }
    bool each_once() const {
        for (const auto& h : hits)
            if (h.load() != 1) return false;
        return true;
    }
};

class ParallelForCpu : public ::testing::Test {
   protected:
    void SetUp() override {
        saved_ = at::get_num_threads();
        at::set_num_threads(2);
    }
    void TearDown() override { at::set_num_threads(saved_); }
    int saved_ = 1;
};

TEST_F(ParallelForCpu, EveryIndexOnceOnTwoThreads) {
    for (int64_t n : {2, 3, 17, 1000}) {
        Seen seen(n);
        parallel_for_cpu(n, 1, seen.body());
        EXPECT_TRUE(seen.each_once()) << n;
        EXPECT_EQ(seen.threads.size(), 2u) << n;
    }
}

TEST_F(ParallelForCpu, OnePieceStaysOnTheCaller) {
    Seen seen(100);
    parallel_for_cpu(100, 100, seen.body());
    EXPECT_TRUE(seen.each_once());
    ASSERT_EQ(seen.threads.size(), 1u);
    EXPECT_EQ(*seen.threads.begin(), std::this_thread::get_id());
    parallel_for_cpu(0, 1, [](int64_t, int64_t) { FAIL() << "called on an empty range"; });
}

TEST_F(ParallelForCpu, RethrowsAPiecesException) {
    EXPECT_THROW(parallel_for_cpu(10, 1,
                                  [](int64_t b, int64_t) {
                                      if (b > 0) throw std::runtime_error("worker piece");
                                  }),
                 std::runtime_error);
    EXPECT_THROW(parallel_for_cpu(10, 1,
                                  [](int64_t b, int64_t) {
                                      if (b == 0) throw std::runtime_error("caller piece");
                                  }),
                 std::runtime_error);
    // The pool still works after pieces threw.
    Seen seen(8);
    parallel_for_cpu(8, 1, seen.body());
    EXPECT_TRUE(seen.each_once());
}

// After fork() a child must not wait on threads it does not have. LibTorch's own ops hang there
// when the parent ran an OpenMP region on two threads (libgomp keeps no team across fork; tried:
// at::sum in such a child never returns), so a child sets one thread, as PyTorch's DataLoader
// workers do; these loops then run on the caller.
TEST_F(ParallelForCpu, ChildAfterForkWithOneThreadRuns) {
    Seen warm(4);
    parallel_for_cpu(4, 1, warm.body());  // the parent's threads exist
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        alarm(20);  // a child that waits on the parent's threads dies of SIGALRM
        at::set_num_threads(1);
        Seen seen(64);
        parallel_for_cpu(64, 1, seen.body());
        _exit(seen.each_once() && seen.threads.size() == 1 ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace glmimage
