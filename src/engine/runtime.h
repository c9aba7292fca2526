// Execution of a plan: an ExecutionContext binds inputs and outputs, resolves symbolic shapes
// from the bound inputs (per-shape state cached by input shape), plans one activation arena by
// tensor lifetimes and runs each layer on its backend.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/plan.h"

namespace kiln::engine {

class ExecutionContext {
 public:
  // The plan must outlive the context. The backend defaults to the plan's device.
  explicit ExecutionContext(const Plan& plan, std::shared_ptr<Backend> backend = nullptr);
  ~ExecutionContext();

  // Throws ShapeError naming the input when dtype, rank or a static dim disagree, or a dynamic dim
  // lies outside its profile range.
  void set_input(const std::string& name, const TensorView& view);
  // Runs the plan and waits for it. Outputs live in the context until the next execute (or are
  // copied into views given by set_output_buffer).
  void execute();
  // The same, enqueued on the backend's stream without waiting (TensorRT's enqueueV3): the outputs
  // are ready in that stream's order, so work the caller queues on the stream after it may read
  // them, and the next execute or enqueue on this context comes after it. On the CPU, which has no
  // stream, it is execute.
  void enqueue();
  const TensorView& output(const std::string& name) const;
  const TensorView& output(size_t index) const;
  void set_output_buffer(const std::string& name, const TensorView& view);
  Backend& backend();
  size_t arena_bytes() const;  // activation arena of the last execute

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  void run(bool wait);
};

}  // namespace kiln::engine
