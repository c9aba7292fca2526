#include "program/load.h"

#include <cstring>
#include <fstream>

#include "frontend/pt2.h"
#include "program/file_io.h"
#include "program/npy.h"

namespace kiln::program {

namespace {
bool is_kiln_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);  // a regular file (checked first): the open cannot block
  char magic[8] = {};
  in.read(magic, 8);
  return in.gcount() == 8 && std::memcmp(magic, "KILNPROG", 8) == 0;
}
}  // namespace

CompiledProgram open_model(const std::string& path, const CompileOptions& options) {
  require_regular_file(path);  // "no such file", or a FIFO or device refused before any open
  if (is_kiln_file(path)) {
    StageTimer t(options.log, "load " + path);
    CompiledProgram p = CompiledProgram::load(path);
    check_fallback(p);
    return p;
  }
  ir::ExportedProgram ep;
  {
    StageTimer t(options.log, "load " + path);
    ep = frontend::load_pt2(path);
  }
  return compile(ep, options);
}

std::vector<HostTensor> read_inputs(const std::vector<std::string>& paths) {
  std::vector<HostTensor> out;
  for (const auto& p : paths) {
    try {
      out.push_back(read_npy(p));
    } catch (const NpyError& e) {
      throw InputError(e.what());
    }
  }
  return out;
}

}  // namespace kiln::program
