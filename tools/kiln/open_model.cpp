#include "open_model.h"

#include "engine/backend.h"
#ifdef KILN_HAS_TORCH
#include "torch_bridge/torch_bridge.h"
#endif

namespace kiln::cli {

OpenedModel open_model_for_run(const std::string& model, const std::vector<std::string>& input_paths,
                               const std::string& device, std::ostream* log) {
#ifdef KILN_HAS_TORCH
  torch_bridge::install();  // PyTorch runs the ops no converter takes
#endif
  program::CompileOptions o;
  o.log = log;
  program::RunOptions ro;
  if (device == "cuda") {
    if (!engine::cuda_available()) throw program::InputError("--device cuda: no CUDA device is available here");
    o.settings.device = engine::DeviceKind::kCUDA;
    ro.device = engine::DeviceKind::kCUDA;
  }
  std::vector<program::HostTensor> inputs = program::read_inputs(input_paths);
  program::CompiledProgram prog = program::open_model(model, o);
  if (device.empty()) ro.device = prog.device();  // a .kiln runs where it was built for
  if (ro.device == engine::DeviceKind::kCUDA && !engine::cuda_available())
    throw program::InputError(model + " was compiled for CUDA and no GPU is present here (run it with --device cpu)");
  return {std::move(prog), ro, std::move(inputs)};
}

}  // namespace kiln::cli
