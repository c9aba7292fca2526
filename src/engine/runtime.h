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
  // Runs the plan. Outputs live in the context until the next execute (or are copied into views
  // given by set_output_buffer).
  void execute();
  const TensorView& output(const std::string& name) const;
  const TensorView& output(size_t index) const;
  void set_output_buffer(const std::string& name, const TensorView& view);
  Backend& backend();
  size_t arena_bytes() const;  // activation arena of the last execute

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::engine
