// Coverage: every op of the project's fixtures has a built-in converter, and every built-in aten
// converter's op has a schema (converters read arguments by schema name).
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "conversion/registry.h"
#include "frontend/pt2.h"
#include "lowering/passes.h"
#include "ir/schema.h"

namespace kiln::conversion {
namespace {

TEST(Coverage, EveryBuiltinAtenTargetHasASchema) {
  register_builtin_converters();
  std::vector<std::string> missing;
  for (const std::string& t : ConverterRegistry::global().targets())
    if (t.rfind("aten.", 0) == 0 && !ir::find_schema(t)) missing.push_back(t);
  std::string list;
  for (const auto& m : missing) list += m + " ";
  EXPECT_TRUE(missing.empty()) << "no schema for: " << list;
}

// Every op the project's own fixtures (tests/data: PyTorch 2.11 exports of real architectures,
// both the training-IR and the core-ATen form) call after lowering has a converter.
TEST(Coverage, FixtureOpsHaveConverters) {
  register_builtin_converters();
  std::set<std::string> targets;
  for (const auto& t : ConverterRegistry::global().targets()) targets.insert(t);
  size_t programs = 0;
  for (const auto& dir : std::filesystem::directory_iterator(KILN_TEST_DATA)) {
    for (const char* form : {"export.pt2", "core_aten.pt2"}) {
      const std::filesystem::path file = dir.path() / form;
      if (!std::filesystem::exists(file)) continue;
      ir::ExportedProgram program = frontend::load_pt2(file.string());
      lowering::run_passes(program);  // what conversion sees: in-place ops made functional, no-ops gone
      ++programs;
      for (const ir::Node* n : program.graph.nodes())
        if (n->kind == ir::NodeKind::CallFunction)
          EXPECT_TRUE(targets.count(n->target)) << file << ": no converter for " << n->target;
    }
  }
  EXPECT_GE(programs, 10u) << "tests/data holds fewer fixtures than expected";
}

}  // namespace
}  // namespace kiln::conversion
