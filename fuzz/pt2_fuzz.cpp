// libFuzzer target for the .pt2 reader: any input must either load (and then print and read its
// weights without touching memory outside them) or fail with frontend::Pt2Error. Any other
// exception, a crash, a sanitizer report, a hang or a huge allocation is a bug.
//
// Build and run: fuzz/run.sh (make fuzz); seeds: the .pt2 fixtures of tests/data.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "frontend/pt2.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    kiln::ir::ExportedProgram p = kiln::frontend::load_pt2_from_memory(data, size, "fuzz.pt2");
    volatile size_t sink = p.graph.str().size();
    for (const auto& [name, w] : p.weights) {
      const size_t n = w.nbytes();
      if (n) sink = sink + w.data()[0] + w.data()[n - 1];
    }
    (void)sink;
  } catch (const kiln::frontend::Pt2Error&) {
    // Expected for malformed input.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pt2_fuzz: unexpected exception (must be Pt2Error): %s\n", e.what());
    std::abort();
  }
  return 0;
}
