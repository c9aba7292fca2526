// kiln's CPU worker threads. Kernels split an index range over them with parallel_for; between
// jobs the workers poll for a millisecond, yielding the core at every turn, then sleep on a
// condition variable. (OpenMP's workers spin without yielding after every region, and OpenBLAS's
// own threads poll after every GEMM: with as many threads as cores the two pools took the cores
// from each other, 3-4x slower on a transformer encoder than either alone.)
//
// Threads: KILN_NUM_THREADS, else OMP_NUM_THREADS, else every core; the calling thread is one of
// them. A parallel_for inside a job, or while another thread's job runs, runs inline.
#pragma once

#include <cstdint>
#include <functional>

namespace kiln::engine::cpu {

int max_threads();

// Another library's thread team that can run parallel_chunks' work instead of kiln's pool while
// its threads are busy-waiting on the cores (oneDNN's OpenMP team after a convolution or matmul):
// kiln's workers would otherwise fight them for the cores. A runner calls part(lo, hi) over
// disjoint ranges covering [0, n), one per team thread, and returns true; or false (nothing run)
// when its team is idle. part never throws.
using TeamRunner = bool (*)(int64_t n, const std::function<void(int64_t, int64_t)>& part);
void set_busy_team_runner(TeamRunner runner);

// Runs body(lo, hi) over [0, n) in contiguous chunks, one per thread, and returns when all are done;
// the first exception a chunk throws is rethrown here.
void parallel_chunks(int64_t n, const std::function<void(int64_t, int64_t)>& body);

// body(lo, hi) over [0, n) in contiguous ranges, one per worker thread when `parallel` (the
// caller's judgement that the work is worth it), else body(0, n) inline: for loops whose inner
// work is itself vectorized over a range.
template <class F>
void parallel_ranges(int64_t n, bool parallel, F&& body) {
  if (n <= 0) return;
  if (!parallel || n < 2 || max_threads() < 2) return body(int64_t(0), n);
  parallel_chunks(n, [&body](int64_t lo, int64_t hi) { body(lo, hi); });
}

// fn(i) for every i in [0, n): over the worker threads when `parallel`, else inline.
template <class F>
void parallel_for(int64_t n, bool parallel, F&& fn) {
  parallel_ranges(n, parallel, [&fn](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) fn(i);
  });
}

}  // namespace kiln::engine::cpu
