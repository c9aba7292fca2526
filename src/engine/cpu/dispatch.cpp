// The CPU backend's single entry: visits the layer's params over the `run` overloads of
// kernels.h. There is deliberately no catch-all: a new layer kind does not compile until it has
// a CPU kernel.
#include "engine/cpu/cpu_kernels.h"

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"

namespace kiln::engine::cpu {

void execute(LayerCall& call) {
  std::visit([&](const auto& params) { run(params, call); }, call.layer.params());
}

size_t workspace_bytes(const Layer& layer, const std::vector<TensorView>& inputs) {
  if (const auto* conv = layer.as<ConvolutionParams>()) return convolution_workspace(*conv, inputs);
  return 0;
}

}  // namespace kiln::engine::cpu
