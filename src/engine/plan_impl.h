// What a Plan holds (engine-internal): the optimized network, device, profile and memory report,
// and per-tensor lifetimes the runtime's memory planner uses.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine/builder.h"
#include "engine/plan.h"

namespace kiln::engine {

// Index range [first, last] of layers (positions in Network::layers()) during which a tensor's
// buffer must stay alive. Network inputs and constants are not arena buffers.
struct Lifetime {
  int first = 0;
  int last = 0;
};

struct Plan::Impl {
  std::unique_ptr<Network> network = std::make_unique<Network>();
  DeviceKind device = DeviceKind::kCPU;
  Precision precision = Precision::kFP32;
  std::map<std::string, SymbolRange> profile;
  MemoryReport memory;
  std::map<int, Lifetime> lifetimes;  // by tensor id: arena-planned tensors only
  std::map<int, int> aliases;          // tensor id -> the arena tensor whose bytes it reuses
  std::vector<std::string> build_log;  // what the passes did, for summary()
  std::map<std::string, std::string> device_code;  // CUDA: compiled kernels (compile_device_code)
  int cuda_arch = 0;  // CUDA: the architecture the plan was built for (Plan::cuda_arch)
  size_t workspace_limit = kDefaultWorkspaceLimit;  // Plan::workspace_limit
  uint64_t weights_generation = 0;                  // Plan::refit
};

// A network's buffer plan, in one pass over its layers (two with in-place residuals):
// - `lifetimes`: the tensors that live in the activation arena, produced by a non-constant layer
//   and with a shape over input symbols only (data-dependent shapes are allocated at run time).
// - `aliases`: outputs of layers that move no data (a pure reshape, a Shuffle without
//   permutations, or an Identity of an arena tensor is that tensor's buffer seen with other dims),
//   each mapped to the arena tensor it aliases (chains resolved); they get no buffer of their own,
//   the aliased buffer stays alive through their uses, and the runtime skips those layers.
// The output of a layer whose kernel on `device` reads each residual element before writing that
// output element (CPU convolutions; CUDA matmuls and 1×1 channels-last convolutions) also takes
// its residual's buffer where that is the residual's last use, no other input of the layer shares
// it, and both have the same type and shape; those layers still run.
void compute_buffer_plan(const Network& net, DeviceKind device, std::map<int, Lifetime>* lifetimes,
                         std::map<int, int>* aliases);

// Arena size for these symbol values (builder.cpp).
size_t planned_arena_bytes(const Network& net, const std::map<int, Lifetime>& lifetimes, const SymbolValues& values);

}  // namespace kiln::engine
