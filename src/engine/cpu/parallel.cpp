// The worker pool behind parallel_for (see parallel.h).
#include "engine/cpu/parallel.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::engine::cpu {
namespace {

thread_local bool t_in_job = false;  // this thread is running a chunk (nested calls run inline)

int configured_threads() {
  for (const char* var : {"KILN_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);  // "4" or OpenMP's "4,2": the first level
      if (n > 0) return n;
    }
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// How long an idle worker (or a caller waiting for its job) keeps polling before it sleeps. A
// futex wake-up costs tens of microseconds (more in a VM), too much between the many small
// layers of a network; polling yields the core at every turn (sched_yield), so OpenBLAS's
// threads, runnable while a GEMM runs, take it instead of fighting for it.
constexpr auto kSpin = std::chrono::microseconds(1000);

template <class Ready>
bool spin_until(Ready ready) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (ready()) return true;
    if ((i & 15) == 15 && std::chrono::steady_clock::now() > until) return false;
    std::this_thread::yield();
  }
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int w = 1; w < threads_; ++w) workers_.emplace_back([this, w] { work(w); });
  }

  // False when another job holds the pool (the caller then runs its range inline).
  bool run(int64_t n, const std::function<void(int64_t, int64_t)>& body) {
    std::unique_lock<std::mutex> job(job_, std::try_to_lock);
    if (!job.owns_lock()) return false;
    const int parts = static_cast<int>(std::min<int64_t>(n, threads_));
    {
      // Under the lock: a worker not in the previous job may still be reading its part count
      // (work() reads it with the generation, under this lock), and one between its check and its
      // sleep must see the new generation.
      std::lock_guard<std::mutex> lock(m_);
      body_ = &body;
      n_ = n;
      parts_ = parts;
      error_ = nullptr;
      pending_.store(parts - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_part(0);
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(m_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    body_ = nullptr;
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void run_part(int part) {
    const int64_t lo = n_ * part / parts_, hi = n_ * (part + 1) / parts_;
    t_in_job = true;
    try {
      if (lo < hi) (*body_)(lo, hi);
    } catch (...) {
      std::lock_guard<std::mutex> lock(m_);
      if (!error_) error_ = std::current_exception();
    }
    t_in_job = false;
  }

  void work(int index) {
    uint64_t seen = 0;
    for (;;) {
      auto fresh = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, fresh);
      }
      int parts;
      {
        std::lock_guard<std::mutex> lock(m_);  // the generation and its part count, together
        seen = generation_.load(std::memory_order_acquire);
        parts = parts_;
      }
      if (index >= parts) continue;  // a job with fewer parts than threads
      // A part of job `seen`: the caller waits for it, so the job's fields stay put meanwhile.
      run_part(index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(m_);  // the caller is spinning, or asleep on done_
        done_.notify_one();
      }
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex job_;  // one job at a time
  std::mutex m_;
  std::condition_variable wake_, done_;
  // Written by the caller under m_ with the generation; read by the workers of that job.
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::exception_ptr error_;
};

std::mutex g_pool_mutex;

// The process's pool, made on first use. Never destroyed (its sleeping workers need no shutdown
// at exit); a child process after fork() has none of the parent's threads and makes its own.
Pool& pool() {
  static Pool* p = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!p || owner != getpid()) {
    p = new Pool(configured_threads());
    owner = getpid();
  }
  return *p;
}

}  // namespace

int max_threads() {
  static const int n = configured_threads();
  return n;
}

std::atomic<TeamRunner> g_busy_team{nullptr};

void set_busy_team_runner(TeamRunner runner) { g_busy_team.store(runner); }

void parallel_chunks(int64_t n, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  if (t_in_job || max_threads() < 2) return body(0, n);
  if (TeamRunner team = g_busy_team.load(std::memory_order_relaxed)) {
    std::mutex m;
    std::exception_ptr error;
    const std::function<void(int64_t, int64_t)> part = [&](int64_t lo, int64_t hi) {
      t_in_job = true;
      try {
        body(lo, hi);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m);
        if (!error) error = std::current_exception();
      }
      t_in_job = false;
    };
    if (team(n, part)) {
      if (error) std::rethrow_exception(error);
      return;
    }
  }
  if (!pool().run(n, body)) body(0, n);
}

}  // namespace kiln::engine::cpu
