#include <gtest/gtest.h>

#include "ir/schema.h"

using namespace kiln::ir;

TEST(Schema, ParsesTypesDefaultsAndKwargOnly) {
  OpSchema s = parse_schema("aten.test.default",
                            "test(Tensor(a!) self, SymInt[] normalized_shape, Tensor? weight, int[2] stride=1, "
                            "str approximate='none', ScalarType? dtype=None, *, bool[3] mask=[True, False, True], "
                            "Scalar alpha=1, float? scale=None, float eps=1e-05, MemoryFormat? memory_format=None, "
                            "MemoryFormat fmt=contiguous_format, int[1] dim=[]) -> (Tensor(a!), Tensor[])");
  ASSERT_EQ(s.args.size(), 13u);
  EXPECT_TRUE(s.is_inplace());
  EXPECT_TRUE(s.args[0].is_tensor());
  EXPECT_TRUE(s.args[1].is_list());
  EXPECT_TRUE(s.args[2].is_optional());
  EXPECT_TRUE(s.args[2].is_tensor());
  EXPECT_FALSE(s.args[2].default_value.has_value());
  EXPECT_EQ(s.args[3].default_value->str(), "[1, 1]");  // int[2] stride=1 broadcasts
  EXPECT_EQ(s.args[4].default_value->as<std::string>(), "none");
  EXPECT_TRUE(s.args[5].default_value->is_none());
  EXPECT_FALSE(s.args[5].kwarg_only);
  EXPECT_TRUE(s.args[6].kwarg_only);
  EXPECT_EQ(s.args[6].default_value->str(), "[True, False, True]");
  EXPECT_EQ(s.args[7].default_value->as<int64_t>(), 1);
  EXPECT_DOUBLE_EQ(s.args[9].default_value->as<double>(), 1e-05);
  EXPECT_EQ(s.args[11].default_value->as<MemoryFormat>(), MemoryFormat::Contiguous);
  EXPECT_TRUE(s.args[12].default_value->list().empty());
  EXPECT_EQ(s.returns, (std::vector<std::string>{"Tensor", "Tensor[]"}));
  EXPECT_EQ(s.index_of("alpha"), 7);
  EXPECT_EQ(s.find("nope"), nullptr);
}

TEST(Schema, SyntaxErrorsNameThePosition) {
  try {
    parse_schema("aten.bad.default", "bad(Tensor self, int = 3) -> Tensor");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("aten.bad.default"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("position"), std::string::npos);
  }
  EXPECT_THROW(parse_schema("x", "x(Tensor self -> Tensor"), std::invalid_argument);
  EXPECT_THROW(parse_schema("x", "x(Tensor self)"), std::invalid_argument);
}

TEST(Schema, TableCoversCommonOps) {
  for (const char* op : {"aten.gelu.default", "aten.native_layer_norm.default", "aten.convolution.default",
                         "aten.add_.Tensor", "aten.scaled_dot_product_attention.default", "aten.sym_size.int",
                         "aten.upsample_nearest2d.vec", "aten._native_batch_norm_legit_no_training.default",
                         "aten.var.correction", "aten.max_pool2d_with_indices.default", "prims.iota.default",
                         "aten.split.Tensor", "aten.to.dtype_layout", "aten._assert_tensor_metadata.default"})
    EXPECT_NE(find_schema(op), nullptr) << op;
  EXPECT_NE(find_schema("torch.ops.aten.gelu.default"), nullptr);
  EXPECT_EQ(find_schema("_operator.mul"), nullptr);
  EXPECT_GE(known_ops().size(), 250u);
  EXPECT_EQ(find_schema("aten.split.Tensor")->returns, std::vector<std::string>{"Tensor[]"});
  EXPECT_EQ(find_schema("aten.native_layer_norm.default")->returns.size(), 3u);
  EXPECT_EQ(find_schema("aten.sym_size.int")->returns, std::vector<std::string>{"SymInt"});
  EXPECT_TRUE(find_schema("aten.relu_.default")->is_inplace());
  EXPECT_FALSE(find_schema("aten.relu.default")->is_inplace());
  // Views are what the schema's read-only alias annotation on the return says they are.
  for (const char* view : {"aten.transpose.int", "aten.split.Tensor", "aten.contiguous.default", "aten.detach.default",
                           "aten.slice.Tensor", "aten.swapaxes.default", "aten.diagonal.default"})
    EXPECT_TRUE(find_schema(view)->view) << view;
  for (const char* fresh : {"aten.clone.default", "aten.add.Tensor", "aten.relu_.default", "aten.native_layer_norm.default"})
    EXPECT_FALSE(find_schema(fresh)->view) << fresh;
}

TEST(Schema, RegisterAtRunTime) {
  register_schema("mylib.op.default", "op(Tensor x, int k=3) -> Tensor");
  const OpSchema* s = find_schema("mylib.op.default");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->args[1].default_value->as<int64_t>(), 3);
  register_schema("mylib.op.default", "op(Tensor x, int k=4) -> Tensor");
  EXPECT_EQ(find_schema("mylib.op.default"), s);  // same address, new content
  EXPECT_EQ(s->args[1].default_value->as<int64_t>(), 4);
}

TEST(BoundArgs, FillsDefaultsAndMatchesByName) {
  Graph g;
  Node* x = g.create(NodeKind::Placeholder, "x", "x");
  Node* w = g.create(NodeKind::Placeholder, "w", "w");
  const OpSchema* conv = find_schema("aten.conv2d.default");
  ASSERT_NE(conv, nullptr);
  Node* n = g.create(NodeKind::CallFunction, "conv2d", "aten.conv2d.default", {x, w}, {{"padding", Argument::List{1, 1}}});
  BoundArgs b(*n, *conv);
  EXPECT_EQ(b["input"].node(), x);
  EXPECT_TRUE(b["bias"].is_none());
  EXPECT_EQ(b["stride"].str(), "[1, 1]");
  EXPECT_EQ(b["padding"].str(), "[1, 1]");
  EXPECT_EQ(b["groups"].as<int64_t>(), 1);
  EXPECT_TRUE(b.given("padding"));
  EXPECT_FALSE(b.given("stride"));
  EXPECT_EQ(b.positional().size(), 7u);
  EXPECT_TRUE(b.keyword().empty());
  EXPECT_THROW(b["nope"], std::out_of_range);

  const OpSchema* gelu = find_schema("aten.gelu.default");
  Node* ge = g.create(NodeKind::CallFunction, "gelu", "aten.gelu.default", {x});
  BoundArgs bg(*ge, *gelu);
  EXPECT_EQ(bg["approximate"].as<std::string>(), "none");
  ASSERT_EQ(bg.keyword().size(), 1u);
  EXPECT_EQ(bg.keyword()[0].first, "approximate");

  Node* bad = g.create(NodeKind::CallFunction, "bad", "aten.gelu.default", {x}, {{"approx", "tanh"}});
  try {
    BoundArgs bb(*bad, *gelu);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("%bad"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("approx"), std::string::npos);
  }
  Node* twice = g.create(NodeKind::CallFunction, "twice", "aten.gelu.default", {x}, {{"self", x}});
  EXPECT_THROW(BoundArgs(*twice, *gelu), std::invalid_argument);
  Node* missing = g.create(NodeKind::CallFunction, "missing", "aten.gelu.default", {});
  EXPECT_THROW(BoundArgs(*missing, *gelu), std::invalid_argument);
}

TEST(Schema, EveryTableEntryPrintsAndReparses) {
  for (const auto& op : known_ops()) {
    const OpSchema* s = find_schema(op);
    ASSERT_NE(s, nullptr);
    OpSchema again = parse_schema(op, s->str());
    EXPECT_EQ(again.args.size(), s->args.size()) << op;
    EXPECT_EQ(again.returns, s->returns) << op;
  }
}
