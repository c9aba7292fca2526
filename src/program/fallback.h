// Running the nodes no converter took. The program layer only knows this interface; the libtorch
// implementation (src/torch_bridge) registers itself, so a kiln built without libtorch still
// compiles and runs fully-converted programs and refuses the others, listing their ops.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "program/value.h"

namespace kiln::program {

class FallbackExecutor {
 public:
  virtual ~FallbackExecutor() = default;
  virtual std::string name() const = 0;  // "libtorch 2.11.0"
  // Whether it can run this op at all (checked when a program is compiled or loaded).
  virtual bool has_op(const std::string& target) const = 0;
  // Whether run() can work on `device`'s memory (the CPU always; CUDA with a CUDA-enabled libtorch
  // and a GPU).
  virtual bool runs_on(engine::DeviceKind device) const { return device == engine::DeviceKind::kCPU; }
  // Runs one call_function node on `device`. `inputs` are the values of node.inputs(), in that
  // order (tensors on another device are copied over); the node's literal arguments come from the
  // node (a `device=` argument becomes `device`). Returns the node's value, its tensors on `device`
  // and finished (the device synchronized): a tensor, or a list for ops returning tuples or tensor
  // lists. Throws std::runtime_error naming the node.
  virtual RtValue run(const ir::Node& node, const std::vector<RtValue>& inputs, engine::DeviceKind device) = 0;
};

// The process-wide executor (null when none is registered).
void set_fallback_executor(std::shared_ptr<FallbackExecutor> executor);
std::shared_ptr<FallbackExecutor> fallback_executor();

}  // namespace kiln::program
