// Registry semantics, to the letter of the seed: priority order, validator fall-through,
// dynamic-shape disabling, assume_dynamic_shape_support, torch_executed_ops; and the driver's
// promise that a converter runs once per node per compile.
#include <gtest/gtest.h>

#include "conversion/impl/impl.h"
#include "harness.h"

namespace kiln::conversion {
namespace {

using testing::Case;
using testing::random_array;

const std::string kOp = "test.fake_op.default";  // a target no built-in uses

ConverterFn returns_input(int* calls = nullptr) {
  return [calls](ConversionContext& ctx, const std::string&, const std::vector<Value>& args, const Kwargs&,
                 const std::string& name) -> Value {
    if (calls) ++*calls;
    return ctx.net.add_identity(ctx.layer_name("identity"), args.at(0).tensor())->output(0);
  };
}

ConverterSpec spec(const std::string& origin, ConverterPriority p, CapabilityValidator v = {}, bool dyn = false) {
  ConverterSpec s;
  s.target = kOp;
  s.fn = returns_input();
  s.validator = std::move(v);
  s.priority = p;
  s.supports_dynamic_shapes = dyn;
  s.origin = "test:" + origin;
  return s;
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override { register_builtin_converters(); }
  void TearDown() override { ConverterRegistry::global().remove_by_origin("test:"); }
  ConverterRegistry& reg = ConverterRegistry::global();

  // A node of kOp over one input of the given sizes.
  ir::Node* make_node(Case& c, std::vector<ir::SymInt> sizes) {
    ir::Node* x = c.input("x", random_array(ir::ScalarType::Float, {2, 3}, 1), sizes);
    return c.call(kOp, {x}, {}, ir::ScalarType::Float, sizes);
  }
};

TEST_F(RegistryTest, HighGoesFirstStandardLast) {
  reg.add(spec("s1", ConverterPriority::STANDARD));
  reg.add(spec("h1", ConverterPriority::HIGH));
  reg.add(spec("s2", ConverterPriority::STANDARD));
  reg.add(spec("h2", ConverterPriority::HIGH));
  std::vector<std::string> order;
  for (const ConverterSpec* c : reg.candidates(kOp)) order.push_back(c->origin);
  EXPECT_EQ(order, (std::vector<std::string>{"test:h2", "test:h1", "test:s1", "test:s2"}));
}

TEST_F(RegistryTest, FirstPassingValidatorWins) {
  Case c;
  ir::Node* n = make_node(c, {2, 3});
  CompilationSettings s;
  reg.add(spec("std", ConverterPriority::STANDARD));
  reg.add(spec("picky", ConverterPriority::HIGH, [](const ir::Node&, const CompilationSettings&) { return false; }));
  Capability cap = reg.lookup(*n, s);
  ASSERT_EQ(cap.verdict, Verdict::kConvertible);
  EXPECT_EQ(cap.converter->origin, "test:std");  // fell through the rejecting HIGH one
  reg.add(spec("happy", ConverterPriority::HIGH, [](const ir::Node&, const CompilationSettings&) { return true; }));
  EXPECT_EQ(reg.lookup(*n, s).converter->origin, "test:happy");
}

TEST_F(RegistryTest, AllValidatorsRejectMeansTorch) {
  Case c;
  ir::Node* n = make_node(c, {2, 3});
  reg.add(spec("no", ConverterPriority::STANDARD, [](const ir::Node&, const CompilationSettings&) { return false; }));
  Capability cap = reg.lookup(*n, CompilationSettings{});
  EXPECT_EQ(cap.verdict, Verdict::kValidatorRejected);
  EXPECT_EQ(cap.converter, nullptr);
  EXPECT_NE(cap.reason.find("rejected"), std::string::npos) << cap.reason;
}

TEST_F(RegistryTest, ValidatorThatThrowsRejects) {
  Case c;
  ir::Node* n = make_node(c, {2, 3});
  reg.add(spec("throws", ConverterPriority::STANDARD, [](const ir::Node&, const CompilationSettings&) -> bool {
    throw std::runtime_error("boom");
  }));
  Capability cap = reg.lookup(*n, CompilationSettings{});
  EXPECT_EQ(cap.verdict, Verdict::kValidatorRejected);
  EXPECT_NE(cap.reason.find("boom"), std::string::npos);
}

TEST_F(RegistryTest, DynamicShapesDisableConvertersWithoutSupport) {
  Case c;
  ir::SymInt s0(ir::SymExpr::symbol("s0"));
  ir::Node* n = make_node(c, {s0, 3});
  reg.add(spec("static_only", ConverterPriority::STANDARD));
  CompilationSettings s;
  EXPECT_TRUE(node_has_dynamic_shape(*n));
  EXPECT_EQ(reg.lookup(*n, s).verdict, Verdict::kDynamicShape);
  s.assume_dynamic_shape_support = true;
  EXPECT_EQ(reg.lookup(*n, s).verdict, Verdict::kConvertible);
  s.assume_dynamic_shape_support = false;
  reg.add(spec("dynamic", ConverterPriority::STANDARD, {}, /*dyn=*/true));
  Capability cap = reg.lookup(*n, s);
  ASSERT_EQ(cap.verdict, Verdict::kConvertible);
  EXPECT_EQ(cap.converter->origin, "test:dynamic");  // the static-only one is skipped
}

TEST_F(RegistryTest, StaticNodeUsesStaticOnlyConverter) {
  Case c;
  ir::Node* n = make_node(c, {2, 3});
  reg.add(spec("static_only", ConverterPriority::STANDARD));
  EXPECT_FALSE(node_has_dynamic_shape(*n));
  EXPECT_EQ(reg.lookup(*n, CompilationSettings{}).verdict, Verdict::kConvertible);
}

TEST_F(RegistryTest, TorchExecutedOpsWin) {
  Case c;
  ir::Node* n = make_node(c, {2, 3});
  reg.add(spec("std", ConverterPriority::HIGH));
  CompilationSettings s;
  s.torch_executed_ops = {kOp};
  EXPECT_EQ(reg.lookup(*n, s).verdict, Verdict::kTorchExecuted);
}

TEST_F(RegistryTest, UnknownOpHasNoConverter) {
  Case c;
  ir::Node* x = c.input("x", random_array(ir::ScalarType::Float, {2}, 1));
  ir::Node* n = c.call("test.unknown.default", {x}, {}, ir::ScalarType::Float, {2});
  EXPECT_EQ(reg.lookup(*n, CompilationSettings{}).verdict, Verdict::kNoConverter);
  EXPECT_EQ(reg.lookup(*x, CompilationSettings{}).verdict, Verdict::kNotAnOp);
}

TEST_F(RegistryTest, RemoveByOrigin) {
  reg.add(spec("a", ConverterPriority::STANDARD));
  reg.add(spec("b", ConverterPriority::STANDARD));
  EXPECT_EQ(reg.remove_by_origin("test:a"), 1u);
  EXPECT_EQ(reg.candidates(kOp).size(), 1u);
}

TEST_F(RegistryTest, ConverterRunsOncePerNodeValidatorsMayRunMore) {
  int calls = 0, validations = 0;
  ConverterSpec s = spec("counted", ConverterPriority::HIGH, [&](const ir::Node&, const CompilationSettings&) {
    ++validations;
    return true;
  });
  s.fn = returns_input(&calls);
  reg.add(s);
  Case c;
  ir::Node* x = c.input("x", random_array(ir::ScalarType::Float, {2, 3}, 1));
  ir::Node* a = c.call(kOp, {x}, {}, ir::ScalarType::Float, {2, 3});
  ir::Node* b = c.call(kOp, {a}, {}, ir::ScalarType::Float, {2, 3});
  ir::Node* d = c.call(kOp, {b}, {}, ir::ScalarType::Float, {2, 3});
  for (const ir::Node* n : {a, b, d}) reg.lookup(*n, c.settings);  // the partitioner's pass
  ConvertedSegment seg = c.convert({d});
  EXPECT_EQ(calls, 3);
  EXPECT_GE(validations, 3);
  ASSERT_EQ(seg.used.size(), 3u);
  for (const auto& [node, conv] : seg.used) EXPECT_EQ(conv->origin, "test:counted");
}

TEST_F(RegistryTest, ConverterErrorsNameTheNode) {
  ConverterSpec s = spec("fails", ConverterPriority::HIGH);
  s.fn = [](ConversionContext&, const std::string&, const std::vector<Value>&, const Kwargs&,
            const std::string&) -> Value { throw ConversionError("unsupported thing"); };
  reg.add(s);
  Case c;
  ir::Node* x = c.input("x", random_array(ir::ScalarType::Float, {2}, 1));
  ir::Node* n = c.call(kOp, {x}, {}, ir::ScalarType::Float, {2});
  n->metadata["stack_trace"] = "  File \"/home/me/net.py\", line 7, in forward\n    return self.op(x)\n";
  try {
    c.convert({n});
    FAIL() << "expected an error";
  } catch (const ConversionError& e) {
    EXPECT_NE(std::string(e.what()).find("%" + n->name), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(" at net.py:7)"), std::string::npos) << e.what();  // the user's line
    EXPECT_NE(std::string(e.what()).find("unsupported thing"), std::string::npos) << e.what();
  }
}

TEST_F(RegistryTest, LayerNamesTraceToNodes) {
  Case c;
  ir::Node* x = c.input("x", random_array(ir::ScalarType::Float, {2, 3}, 1));
  ir::Node* g = c.call("aten.gelu.default", {x}, {{"approximate", "tanh"}}, ir::ScalarType::Float, {2, 3});
  ir::Node* m = c.call("aten.mul.Tensor", {g, 0.5}, {}, ir::ScalarType::Float, {2, 3});
  ConvertedSegment seg = c.convert({m});
  std::set<std::string> names;
  for (const engine::Layer* l : seg.network->layers()) {
    EXPECT_TRUE(names.insert(l->name()).second) << "duplicate layer name " << l->name();
    const bool traced = l->name().rfind(g->name, 0) == 0 || l->name().rfind(m->name, 0) == 0 ||
                        l->name().rfind("x", 0) == 0 || l->name().find("output") != std::string::npos;
    EXPECT_TRUE(traced) << l->name();
  }
}

}  // namespace
}  // namespace kiln::conversion
