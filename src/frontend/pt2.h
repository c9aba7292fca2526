// The torch.export archive (.pt2, PyTorch 2.8-2.11, schema 8.x) -> ir::ExportedProgram, without
// PyTorch and without unpickling anything. Facts of the format: docs/pt2-format.md (shared).
//
// - user inputs become placeholders, parameters / buffers / constants get_attr nodes whose target
//   is the state-dict name; their bytes are zero-copy views of the memory-mapped file;
// - tuple- and list-returning ops get `getitem` nodes, as torch.fx has them;
// - symbolic sizes become ir::SymExpr, range_constraints program.ranges;
// - the program is verified (ir::Graph::verify) before it is returned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "ir/graph.h"

namespace kiln::frontend {

// Bad input. The message is one line naming the file, and the entry / node / field at fault.
struct Pt2Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

ir::ExportedProgram load_pt2(const std::string& path);
// The same from bytes in memory (copied once; the program's weights view the copy). `label`
// names the input in error messages.
ir::ExportedProgram load_pt2_from_memory(const void* data, size_t size, const std::string& label = "<memory>");

}  // namespace kiln::frontend
