// The CPU kernels' single entry point. The CPU Backend (backend.cpp) and the builder's constant
// folding both call `execute`; the kernels dispatch on the layer's params themselves, so adding a
// layer kind touches only src/engine/cpu/.
//
// Contract with the callers:
// - Every TensorView in `call.inputs` / `call.outputs` is contiguous (strides empty) and lives in
//   host memory; outputs are preallocated with their resolved dims, except the outputs of
//   data-dependent layers (NonZero, plugins whose shapes depend on data): those have data ==
//   nullptr and the kernel obtains them through `call.allocate_output(i, dims)`.
// - Float types (f16, bf16) are computed through fp32; reductions, softmax, normalization and
//   attention accumulate in fp32 (or wider).
// - `call.workspace` holds at least `workspace_bytes(call.layer, call.inputs)` bytes.
// - Errors (a kernel not implemented for a dtype, out-of-range indices) throw
//   engine::NetworkError / engine::ShapeError naming the layer.
#pragma once

#include <cstddef>
#include <vector>

#include "engine/backend.h"

namespace kiln::engine::cpu {

void execute(LayerCall& call);
size_t workspace_bytes(const Layer& layer, const std::vector<TensorView>& inputs);
// Writes the kernel choices timed since the last call (oneDNN's convolution tactics) to the timing
// cache's file (timing_cache.h); cheap when there are none. The backend calls it after each run.
void flush_timing_choices();

}  // namespace kiln::engine::cpu
