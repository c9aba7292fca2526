// KILN_PROFILE=1: time every layer of every execute (the backend is synchronized around each
// layer, and CUDA graphs are off, so times are per kernel, not overlapped) and print, when the
// execution context goes away, the layers and layer kinds that took the most time. The tool for
// "where do the milliseconds go" on a real model; it slows execution down, so it is opt-in.
// The first execute is reported apart: it pays one-time costs (algorithm searches, lazily made
// kernels, allocations) that would otherwise swamp the steady-state figures.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace kiln::engine::detail {

class LayerProfile {
 public:
  static bool enabled();  // KILN_PROFILE set and not "0"

  // `origin`: what the layer was converted from (Layer::origin), printed beside it; may be empty.
  void add(const std::string& layer, const std::string& kind, const std::string& origin, double ms);
  void count_execute() { ++executes_; }
  // Top `rows` layers by total time, then the totals per layer kind.
  void print(std::ostream& os, const std::string& title, size_t rows = 25) const;
  bool empty() const { return by_layer_.empty() && first_execute_.empty(); }

 private:
  struct Entry {
    std::string kind, origin;
    double total_ms = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Entry> by_layer_;        // executes after the first
  std::map<std::string, double> first_execute_;   // layer -> ms in the first execute
  int64_t executes_ = 0;
};

}  // namespace kiln::engine::detail
