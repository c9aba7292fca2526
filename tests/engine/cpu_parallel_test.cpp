// The CPU kernels' worker pool (engine/cpu/parallel.h): every index runs exactly once, on more
// than one thread when there is more than one, nested calls and concurrent callers run inline
// instead of waiting on each other, and a chunk's exception reaches the caller.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "engine/cpu/parallel.h"

namespace kiln::engine::cpu {
namespace {

// More threads than cores and jobs smaller than the pool, back to back: workers left out of one
// job must not take a part of the next before it is set up. (CTest runs each test in its own
// process, so the thread count set here is the pool's.)
TEST(CpuParallel, SmallJobsOnAWidePool) {
  setenv("KILN_NUM_THREADS", "8", 1);
  if (max_threads() != 8) GTEST_SKIP() << "the pool was made before this test (run alone to use 8 threads)";
  for (int rep = 0; rep < 300; ++rep) {
    const int64_t n = 2 + rep % 9;  // 2..10 items over 8 threads
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    parallel_for(n, true, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "rep " << rep << " n " << n;
  }
}

TEST(CpuParallel, EveryIndexOnceAcrossSizes) {
  for (int64_t n : {0, 1, 2, 3, 7, 64, 1000, 100003}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    parallel_for(n, true, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n " << n << " i " << i;
  }
}

TEST(CpuParallel, SpreadsOverThreadsOnlyWhenAsked) {
  std::mutex m;
  std::set<std::thread::id> seen;
  auto record = [&](int64_t) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));  // long enough for every worker to take part
    std::lock_guard<std::mutex> lock(m);
    seen.insert(std::this_thread::get_id());
  };
  parallel_for(64, false, record);
  EXPECT_EQ(seen, std::set<std::thread::id>{std::this_thread::get_id()});
  seen.clear();
  parallel_for(64, true, record);
  EXPECT_EQ(int(seen.size()), std::min(max_threads(), 64));
}

TEST(CpuParallel, NestedAndConcurrentCallsComplete) {
  std::atomic<int64_t> total{0};
  parallel_for(8, true, [&](int64_t) { parallel_for(100, true, [&](int64_t j) { total += j; }); });
  EXPECT_EQ(total.load(), 8 * 4950);
  total = 0;
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) parallel_for(1000, true, [&](int64_t j) { total += j; });
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(total.load(), 4 * 50 * int64_t(499500));
}

TEST(CpuParallel, ExceptionReachesTheCaller) {
  EXPECT_THROW(parallel_for(1000, true,
                            [](int64_t i) {
                              if (i == 999) throw std::runtime_error("last index");
                            }),
               std::runtime_error);
  std::atomic<int> after{0};  // the pool still works
  parallel_for(100, true, [&](int64_t) { after++; });
  EXPECT_EQ(after.load(), 100);
}

}  // namespace
}  // namespace kiln::engine::cpu
