// Where in the user's code a node came from, read from the `stack_trace` metadata torch.export
// records: what errors and profiles point a user at.
#pragma once

#include <string>

#include "ir/graph.h"

namespace kiln::ir {

// "model.py:42": the innermost frame of the node's stack trace outside PyTorch's own package
// (whose frames, torch.nn.functional's say, are the same for every model); a PyTorch frame when
// there is no other; "" without a stack trace.
std::string user_source_line(const Node& n);

// "aten.conv2d.default at model.py:42", or the target alone without a source line.
std::string target_and_source(const Node& n);

}  // namespace kiln::ir
