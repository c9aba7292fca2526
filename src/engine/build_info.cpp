// What this kiln was built with (backend.h: build_libraries).
#include "engine/backend.h"
#include "engine/cpu/onednn.h"

namespace kiln::engine {

std::vector<std::string> build_libraries() {
  std::vector<std::string> out;
  if (std::string v = cpu::onednn_version(); !v.empty()) out.push_back("oneDNN " + v);
  for (std::string& lib : cuda_libraries()) out.push_back(std::move(lib));
  return out;
}

}  // namespace kiln::engine
