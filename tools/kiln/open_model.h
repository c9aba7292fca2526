// What `kiln run` and `kiln bench` share: the model opened (a .pt2 compiled on the fly, or a .kiln)
// with its inputs read and the device chosen.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "program/load.h"

namespace kiln::cli {

struct OpenedModel {
  program::CompiledProgram program;
  program::RunOptions run_options;
  std::vector<program::HostTensor> inputs;
};

// device: "", "cpu" or "cuda"; "" runs a .kiln where it was built for. Throws program::InputError
// for a CUDA request without a GPU, and whatever reading the files throws.
OpenedModel open_model_for_run(const std::string& model, const std::vector<std::string>& input_paths,
                               const std::string& device, std::ostream* log);

}  // namespace kiln::cli
