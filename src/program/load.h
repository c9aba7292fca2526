// What the CLI commands (and the Python module) share: open a model given as .pt2 or .kiln, and
// read inputs.
#pragma once

#include <string>
#include <vector>

#include "program/program.h"

namespace kiln::program {

// A .kiln file is loaded; anything else is read as a .pt2 and compiled with `options`. A missing
// file is an InputError naming it.
CompiledProgram open_model(const std::string& path, const CompileOptions& options);

// Reads the .npy files; an unreadable one is an InputError naming it.
std::vector<HostTensor> read_inputs(const std::vector<std::string>& paths);

}  // namespace kiln::program
