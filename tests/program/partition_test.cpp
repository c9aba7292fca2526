// The partitioner on hand-built graphs, with a private registry: which nodes are "convertible" is
// decided here, so the tests do not depend on the built-in converters.
#include <gtest/gtest.h>

#include "partition/partition.h"

namespace kiln {
namespace {

using conversion::CompilationSettings;
using conversion::ConverterRegistry;
using conversion::ConverterSpec;
using ir::Node;
using ir::NodeKind;

ir::TensorMeta f32(std::vector<int64_t> dims) {
  ir::TensorMeta m;
  for (int64_t d : dims) m.sizes.push_back(d);
  return m;
}

// A converter that is never called: the partitioner only reads verdicts.
ConverterSpec spec(const std::string& target, conversion::CapabilityValidator validator = {}, std::string vname = "") {
  ConverterSpec c;
  c.target = target;
  c.fn = [](conversion::ConversionContext&, const std::string&, const std::vector<conversion::Value>&,
            const conversion::Kwargs&, const std::string&) -> conversion::Value { return {}; };
  c.validator = std::move(validator);
  c.validator_name = std::move(vname);
  return c;
}

struct Fixture {
  ir::Graph g;
  ConverterRegistry reg;
  Node* x = nullptr;

  Fixture() {
    for (const char* op : {"aten.relu.default", "aten.add.Tensor", "aten.mul.Tensor", "aten.view.default",
                           "aten.permute.default", "aten.sigmoid.default"})
      reg.add(spec(op));
    x = g.create(NodeKind::Placeholder, "x", "x");
    x->meta = ir::ValueMeta::of_tensor(f32({2, 3}));
  }
  Node* op(const std::string& name, const std::string& target, std::vector<ir::Argument> args) {
    Node* n = g.create(NodeKind::CallFunction, name, target, std::move(args));
    n->meta = ir::ValueMeta::of_tensor(f32({2, 3}));
    return n;
  }
  void output(std::vector<Node*> outs) {
    ir::Argument::List l;
    for (Node* n : outs) l.push_back(n);
    g.create(NodeKind::Output, "output", "output", {ir::Argument(l)});
  }
  partition::Partition run(int64_t min_block = 1, std::set<std::string> forced = {}, bool full = false) {
    CompilationSettings s;
    s.min_block_size = min_block;
    s.torch_executed_ops = std::move(forced);
    s.require_full_compilation = full;
    return partition::partition_graph(g, s, reg);
  }
};

int segment_of(const partition::Partition& p, const Node* n) {
  for (const auto& s : p.segments)
    for (const Node* m : s.nodes)
      if (m == n) return s.index;
  return -1;
}

TEST(Partition, ChainSplitsAroundFallback) {
  Fixture f;
  Node* a = f.op("a", "aten.relu.default", {f.x});
  Node* b = f.op("b", "aten.sigmoid.default", {a});
  Node* c = f.op("c", "aten.erfinv.default", {b});  // no converter
  Node* d = f.op("d", "aten.relu.default", {c});
  f.output({d});
  auto p = f.run();
  ASSERT_EQ(p.segments.size(), 2u);
  EXPECT_EQ(segment_of(p, a), segment_of(p, b));
  EXPECT_EQ(segment_of(p, c), -1);
  EXPECT_NE(segment_of(p, d), segment_of(p, a));
  ASSERT_EQ(p.order.size(), 3u);
  EXPECT_EQ(p.order[0].kind, partition::Item::Kind::kSegment);
  EXPECT_EQ(p.order[1].node, c);
  EXPECT_EQ(p.order[2].kind, partition::Item::Kind::kSegment);
  EXPECT_EQ(p.segments[0].outputs, std::vector<const Node*>{b});
  EXPECT_EQ(p.segments[1].inputs, std::vector<const Node*>{c});
  EXPECT_EQ(p.verdict_of(c)->verdict, conversion::Verdict::kNoConverter);
}

// a -> f (fallback) -> c and a -> c: putting a and c together would need f both after and before it.
TEST(Partition, NoCycleThroughFallbackNode) {
  Fixture f;
  Node* a = f.op("a", "aten.relu.default", {f.x});
  Node* fb = f.op("f", "aten.erfinv.default", {a});
  Node* c = f.op("c", "aten.add.Tensor", {a, fb});
  f.output({c});
  auto p = f.run();
  ASSERT_EQ(p.segments.size(), 2u);
  EXPECT_NE(segment_of(p, a), segment_of(p, c));
  EXPECT_EQ(p.order[1].node, fb);
}

// Independent supported branches and a fallback node that depends only on the input: one segment.
TEST(Partition, MergesIndependentBranchesMaximally) {
  Fixture f;
  Node* fb = f.op("f", "aten.erfinv.default", {f.x});
  Node* a = f.op("a", "aten.relu.default", {f.x});
  Node* b = f.op("b", "aten.sigmoid.default", {fb});
  Node* c = f.op("c", "aten.add.Tensor", {a, b});
  f.output({c});
  auto p = f.run();
  ASSERT_EQ(p.segments.size(), 1u);
  EXPECT_EQ(p.segments[0].nodes.size(), 3u);
  EXPECT_EQ(p.order[0].node, fb);  // the fallback node runs first, the segment reads it
}

TEST(Partition, MinBlockSizeSendsSmallSegmentsBack) {
  Fixture f;
  Node* a = f.op("a", "aten.relu.default", {f.x});
  Node* v = f.op("v", "aten.view.default", {a, ir::Argument(ir::Argument::List{int64_t{6}})});
  Node* fb = f.op("f", "aten.erfinv.default", {v});
  Node* b = f.op("b", "aten.relu.default", {fb});
  Node* c = f.op("c", "aten.sigmoid.default", {b});
  Node* d = f.op("d", "aten.mul.Tensor", {c, b});
  f.output({d});
  auto p = f.run(/*min_block=*/2);
  ASSERT_EQ(p.segments.size(), 1u);  // {a, v}: one compute op (views do not count) < 2
  EXPECT_EQ(p.segments[0].compute_ops, 3u);
  EXPECT_EQ(segment_of(p, a), -1);
  EXPECT_NE(p.verdict_of(a)->reason.find("min_block_size"), std::string::npos);
  EXPECT_EQ(p.total_compute, 5u);
  EXPECT_EQ(p.accelerated_compute, 3u);
}

TEST(Partition, TorchExecutedOpsAreForced) {
  Fixture f;
  Node* a = f.op("a", "aten.relu.default", {f.x});
  Node* b = f.op("b", "aten.sigmoid.default", {a});
  f.output({b});
  auto p = f.run(1, {"aten.relu.default"});
  EXPECT_EQ(p.verdict_of(a)->verdict, conversion::Verdict::kTorchExecuted);
  EXPECT_EQ(segment_of(p, a), -1);
  EXPECT_EQ(segment_of(p, b), 0);
  const std::string report = p.report();
  EXPECT_NE(report.find("coverage: 1/2"), std::string::npos) << report;
  EXPECT_NE(report.find("%a (aten.relu.default): torch_executed_ops"), std::string::npos) << report;
}

TEST(Partition, RequireFullCompilationListsEveryOp) {
  Fixture f;
  Node* a = f.op("a", "aten.erfinv.default", {f.x});
  Node* b = f.op("b", "aten.relu.default", {a});
  Node* c = f.op("c", "aten.lgamma.default", {b});
  f.output({c});
  try {
    f.run(5, {"aten.relu.default"}, true);
    FAIL() << "expected PartitionError";
  } catch (const partition::PartitionError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("3 op(s)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("%a (aten.erfinv.default): no converter"), std::string::npos) << msg;
    EXPECT_NE(msg.find("%b (aten.relu.default): torch_executed_ops"), std::string::npos) << msg;
    EXPECT_NE(msg.find("%c (aten.lgamma.default)"), std::string::npos) << msg;
  }
  (void)b;
}

TEST(Partition, ValidatorAndDynamicShapeVerdicts) {
  Fixture f;
  f.reg.add(spec("aten.gelu.default",
                 [](const Node& n, const CompilationSettings&) { return n.kwarg("approximate") != nullptr; },
                 "needs_approximate"));
  Node* a = f.op("a", "aten.gelu.default", {f.x});
  Node* y = f.g.create(NodeKind::Placeholder, "y", "y");
  ir::TensorMeta dyn;
  dyn.sizes = {ir::SymInt(ir::SymExpr::symbol("s0")), 3};
  y->meta = ir::ValueMeta::of_tensor(dyn);
  f.reg.add(spec("aten.tanh.default"));  // static shapes only
  Node* t = f.g.create(NodeKind::CallFunction, "t", "aten.tanh.default", {y});
  t->meta = ir::ValueMeta::of_tensor(dyn);
  f.output({a, t});
  auto p = f.run();
  EXPECT_EQ(p.verdict_of(a)->verdict, conversion::Verdict::kValidatorRejected);
  EXPECT_EQ(p.verdict_of(t)->verdict, conversion::Verdict::kDynamicShape);
  EXPECT_TRUE(p.segments.empty());
}

TEST(Partition, ComputeOpClassification) {
  Fixture f;
  Node* v = f.op("v", "aten.view.default", {f.x});
  Node* r = f.op("r", "aten.relu.default", {v});
  Node* s = f.g.create(NodeKind::CallFunction, "s", "aten.sym_size.int", {f.x, int64_t{0}});
  s->meta.kind = ir::ValueMeta::Kind::SymInt;
  EXPECT_FALSE(partition::is_compute_op(*v));
  EXPECT_TRUE(partition::is_compute_op(*r));
  EXPECT_FALSE(partition::is_compute_op(*s));
  EXPECT_TRUE(partition::is_symbolic(*s));
}

}  // namespace
}  // namespace kiln
