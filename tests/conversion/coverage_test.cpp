// Coverage: every op of the shared fixtures has a built-in converter, and every built-in aten
// converter's op has a schema (converters read arguments by schema name).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "conversion/registry.h"
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

TEST(Coverage, SharedFixtureOpsHaveConverters) {
  register_builtin_converters();
  std::ifstream f("/work/shared/fixtures/ops.json");
  if (!f) GTEST_SKIP() << "shared fixtures not present";
  nlohmann::json j = nlohmann::json::parse(f);
  std::set<std::string> targets;
  for (const auto& t : ConverterRegistry::global().targets()) targets.insert(t);
  for (auto& [model, forms] : j.items())
    for (auto& [form, ops] : forms.items())
      for (const auto& op : ops) {
        std::string o = op.get<std::string>();
        if (o == "<built-in function getitem>") o = "getitem";
        EXPECT_TRUE(targets.count(o)) << model << "/" << form << ": " << o;
      }
}

}  // namespace
}  // namespace kiln::conversion
