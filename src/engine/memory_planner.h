// Offsets of buffers with known lifetimes in one arena: greedy placement, best fit among the gaps
// left by buffers whose lifetimes overlap, largest first or (ArenaSearch::kThorough) from the best
// of a few orders, then a bounded search over the order while the arena is larger than the most
// bytes alive at one step. Used by the builder (report at opt shapes) and by the
// runtime (per input shape).
#pragma once

#include <cstddef>
#include <cstdint>
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

class Network;
struct ConvolutionParams;

// A 2-d 1x1 channels-last convolution with unit strides, no padding and one group (weights
// [K, 1, 1, C]): the CUDA backend runs it as a matmul over rows of channels, which is why its output
// may take its residual's buffer there. The backend and the planner ask this one rule.
bool is_pointwise_channels_last(const ConvolutionParams& p, const std::vector<int64_t>& weight_dims);

// How hard to pack. kThorough costs up to tens of milliseconds on thousands of buffers, paid once
// for a network of one shape; kQuick (largest first alone) is for networks planned again at each
// new input shape, where that cost would land on a user's call.
enum class ArenaSearch { kQuick, kThorough };

ArenaPlan plan_arena(const std::vector<BufferRequest>& requests, ArenaSearch search = ArenaSearch::kThorough);

// kThorough for a network whose inputs have one shape, kQuick otherwise.
ArenaSearch arena_search_for(const Network& net);

// The most bytes (aligned) alive at one step: no placement needs less.
size_t peak_live_bytes(const std::vector<BufferRequest>& requests);

}  // namespace kiln::engine
