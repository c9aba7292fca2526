// Offsets of buffers with known lifetimes in one arena: greedy by size, best fit among the gaps
// left by buffers whose lifetimes overlap. Used by the builder (report at opt shapes) and by the
// runtime (per input shape).
#pragma once

#include <cstddef>
#include <vector>

namespace kiln::engine {

struct BufferRequest {
  size_t bytes = 0;
  int first = 0;  // first and last step (inclusive) that use the buffer
  int last = 0;
};

struct ArenaPlan {
  std::vector<size_t> offsets;  // per request
  size_t total_bytes = 0;
};

constexpr size_t kArenaAlignment = 64;

ArenaPlan plan_arena(const std::vector<BufferRequest>& requests);

}  // namespace kiln::engine
