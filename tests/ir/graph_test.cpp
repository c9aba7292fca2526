#include <gtest/gtest.h>

#include "ir/graph.h"

using namespace kiln::ir;

namespace {

TensorMeta f32(std::vector<SymInt> sizes) {
  TensorMeta m;
  m.sizes = std::move(sizes);
  return m;
}

}  // namespace

TEST(Graph, PrintsLikeFx) {
  Graph g;
  Node* x = g.create(NodeKind::Placeholder, "x", "x");
  x->meta = ValueMeta::of_tensor(f32({2, 3}));
  Node* gelu = g.create(NodeKind::CallFunction, "gelu", "aten.gelu.default", {x}, {{"approximate", "tanh"}});
  gelu->meta = ValueMeta::of_tensor(f32({2, 3}));
  g.create(NodeKind::Output, "output", "output", {gelu});
  EXPECT_EQ(gelu->str(), "%gelu : call_function[target=aten.gelu.default](args = (%x,), kwargs = {approximate: tanh})");
  EXPECT_EQ(x->str(), "%x : [num_users=1] = placeholder[target=x]");
  EXPECT_NO_THROW(g.verify());
  EXPECT_NE(g.str().find("return (%gelu,)"), std::string::npos);
  Argument list(Argument::List{Argument(x), Argument(-1), Argument(None{}), Argument(1e-05), Argument(2.0)});
  EXPECT_EQ(list.str(), "[%x, -1, None, 1e-05, 2.0]");
  EXPECT_EQ(Argument(ScalarType::Half).str(), "torch.float16");
}

TEST(Graph, UsersStayConsistent) {
  Graph g;
  Node* x = g.create(NodeKind::Placeholder, "x", "x");
  x->meta = ValueMeta::of_tensor(f32({4}));
  Node* a = g.create(NodeKind::CallFunction, "relu", "aten.relu.default", {x});
  a->meta = x->meta;
  Node* b = g.create(NodeKind::CallFunction, "add", "aten.add.Tensor", {a, a});
  b->meta = x->meta;
  Node* out = g.create(NodeKind::Output, "output", "output", {b});
  EXPECT_EQ(a->users().size(), 1u);  // used twice by one node: one user
  // A name taken gets a suffix, as in fx.
  Node* a2 = g.create(NodeKind::CallFunction, "relu", "aten.relu.default", {x}, {}, b);
  a2->meta = x->meta;
  EXPECT_EQ(a2->name, "relu_1");
  g.replace_all_uses_with(a, a2);
  EXPECT_TRUE(a->users().empty());
  EXPECT_EQ(a2->users(), std::vector<Node*>{b});
  EXPECT_EQ(b->args[0].node(), a2);
  EXPECT_THROW(g.erase(a2), std::logic_error);
  EXPECT_EQ(g.eliminate_dead_code(), 1u);  // the old relu
  EXPECT_EQ(g.find("relu"), nullptr);
  EXPECT_NO_THROW(g.verify());
  g.set_args(out, {x});
  EXPECT_EQ(g.eliminate_dead_code(), 2u);  // add, then relu_1
  EXPECT_EQ(x->users(), std::vector<Node*>{out});
  EXPECT_NO_THROW(g.verify());
}

TEST(Graph, VerifyNamesTheNode) {
  Graph g;
  Node* x = g.create(NodeKind::Placeholder, "x", "x");
  x->meta = ValueMeta::of_tensor(f32({4}));
  Node* a = g.create(NodeKind::CallFunction, "neg", "aten.neg.default", {x});
  a->meta = x->meta;
  // Inserted before its input: use before definition.
  Node* early = g.create(NodeKind::CallFunction, "early", "aten.neg.default", {a}, {}, a);
  early->meta = x->meta;
  g.create(NodeKind::Output, "output", "output", {early});
  try {
    g.verify();
    FAIL();
  } catch (const VerifyError& e) {
    EXPECT_NE(std::string(e.what()).find("%early"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("before it is defined"), std::string::npos) << e.what();
  }
}

TEST(Graph, VerifyNeedsMetaAndOneOutput) {
  Graph g;
  Node* x = g.create(NodeKind::Placeholder, "x", "x");
  EXPECT_THROW(g.verify(), VerifyError);  // no meta, no output
  x->meta = ValueMeta::of_tensor(f32({1}));
  EXPECT_THROW(g.verify(), VerifyError);  // no output
  g.create(NodeKind::Output, "output", "output", {x});
  EXPECT_NO_THROW(g.verify());
}

TEST(Weight, ExtentAndContiguity) {
  Weight w;
  w.meta = f32({2, 3});
  w.meta.strides = {3, 1};
  EXPECT_TRUE(w.is_contiguous());
  EXPECT_EQ(w.nbytes(), 24u);
  w.meta.strides = {1, 2};
  EXPECT_FALSE(w.is_contiguous());
  EXPECT_EQ(w.nbytes(), (1 + 1 + 2 * 2) * 4u);
}

TEST(Graph, OutputTupleForm) {
  Graph g;
  Node* x = g.create(NodeKind::Placeholder, "x", "x");
  x->meta = ValueMeta::of_tensor(f32({1}));
  Node* out = g.create(NodeKind::Output, "output", "output", {Argument(Argument::List{x, x})});
  EXPECT_EQ(out->str(), "return (%x, %x)");
  EXPECT_EQ(g.output_values().size(), 2u);
  EXPECT_EQ(x->users(), std::vector<Node*>{out});
  EXPECT_NO_THROW(g.verify());
}
