// Network definition: symbolic dims, per-layer checks and their messages, shape inference of the
// trickier kinds, naming, printing, verification, rewrites and plugins.
#include <gtest/gtest.h>

#include <algorithm>

#include "engine/network.h"
#include "runtime_test_util.h"

namespace kiln::engine {
namespace {

using testing::weights;

DimExpr S(const char* n) { return DimExpr::symbol(n); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(NetworkDimExpr, CanonicalFormsCompareEqualAndPrintReadably) {
  DimExpr s0 = S("s0"), s1 = S("s1");
  EXPECT_EQ((s0 * 3).str(), "s0*3");
  EXPECT_TRUE((3 * s0).same_as(s0 * 3));
  EXPECT_EQ(((s0 + 1) + 2).str(), "s0 + 3");
  EXPECT_TRUE((s1 + s0).same_as(s0 + s1));
  EXPECT_EQ((s0 - s0).constant(), 0);
  EXPECT_EQ((s0 * 2 - 1).str(), "s0*2 - 1");
  EXPECT_EQ(floor_div(s0 * 12, 4).str(), "s0*3");
  EXPECT_TRUE(floor_div(s0 * s1 * 6, s1 * 2).same_as(s0 * 3));
  EXPECT_EQ((DimExpr(4) * 5 + 1).constant(), 21);
  EXPECT_EQ(max(s0, s0).str(), "s0");
}

TEST(NetworkDimExpr, EvaluateAndErrors) {
  DimExpr e = ceil_div(S("s0") + 1, 2) + mod(S("s0"), 3);
  EXPECT_EQ(e.evaluate({{"s0", 6}}), 4 + 0);
  EXPECT_EQ(floor_div(DimExpr(-7), 2).constant(), -4);  // python semantics
  std::string msg = error_of([&] { e.evaluate({}); });
  EXPECT_NE(msg.find("'s0'"), std::string::npos) << msg;
  EXPECT_THROW(floor_div(S("a"), S("b")).evaluate({{"a", 1}, {"b", 0}}), ShapeError);
  std::vector<std::string> syms;
  (S("x") * S("y") + S("x")).collect_symbols(syms);
  EXPECT_EQ(syms.size(), 2u);
}

TEST(NetworkChecks, DtypeMismatchNamesLayerAndInput) {
  Network net;
  Tensor* a = net.add_input("a", DataType::kFloat32, {2, 3});
  Tensor* b = net.add_input("b", DataType::kInt64, {3, 4});
  std::string msg = error_of([&] { net.add_matmul("mm", a, b); });
  EXPECT_EQ(msg, "layer 'mm' (MatMul): input 1 has dtype i64, expected f32");
}

TEST(NetworkChecks, RefusesBadLayers) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {2, 3});
  Tensor* y = net.add_input("y", DataType::kFloat32, {4, 3});
  Tensor* i = net.add_input("i", DataType::kInt32, {5});
  EXPECT_THROW(net.add_elementwise("add", x, y, BinaryOp::kAdd), NetworkError);       // 2 vs 4
  EXPECT_THROW(net.add_matmul("mm", x, y), NetworkError);                             // 3 vs 4
  EXPECT_THROW(net.add_activation("act", i, ActivationOp::kRelu), NetworkError);      // int
  EXPECT_THROW(net.add_softmax("sm", x, 2), NetworkError);                            // axis
  EXPECT_THROW(net.add_concat("cat", {x, i}, 0), NetworkError);                       // dtype
  ShuffleParams sp;
  sp.reshape = Shape{5, -1};
  EXPECT_THROW(net.add_shuffle("r", x, sp), NetworkError);                            // 6 % 5
  sp.first_perm = {0, 0};
  sp.reshape.reset();
  EXPECT_THROW(net.add_shuffle("p", x, sp), NetworkError);                            // not a permutation
  EXPECT_THROW(net.add_gather("g", x, y, GatherMode::kAxis, 0), NetworkError);        // float indices
  std::string msg = error_of([&] { net.add_elementwise("bad_add", x, y, BinaryOp::kAdd); });
  EXPECT_NE(msg.find("layer 'bad_add' (Elementwise)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 3]"), std::string::npos) << msg;
  EXPECT_THROW(net.add_input("x", DataType::kFloat32, {1}), NetworkError);  // duplicate input name
}

TEST(NetworkInference, BroadcastWithSymbols) {
  Network net;
  Tensor* a = net.add_input("a", DataType::kFloat32, {S("s0"), 3});
  Tensor* b = net.add_input("b", DataType::kFloat32, {1, 3});
  Tensor* c = net.add_input("c", DataType::kFloat32, {S("s1"), 1});
  Tensor* ab = net.add_elementwise("ab", a, b, BinaryOp::kAdd)->output();
  EXPECT_EQ(to_string(ab->shape()), "[s0, 3]");
  Tensor* abc = net.add_elementwise("abc", ab, c, BinaryOp::kMul)->output();
  EXPECT_EQ(to_string(abc->shape()), "[s0, 3]");  // s0 vs s1: one is picked, the runtime checks
  Tensor* cmp = net.add_elementwise("cmp", a, b, BinaryOp::kLess)->output();
  EXPECT_EQ(cmp->dtype(), DataType::kBool);
}

TEST(NetworkInference, ConvPoolAndTransposedConv) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {S("n"), 3, 32, 32});
  Tensor* w = net.add_constant("w", weights({8, 3, 3, 3}, std::vector<float>(8 * 27)))->output();
  ConvolutionParams cp;
  cp.stride = {2};
  cp.padding = {1};
  Tensor* y = net.add_convolution("conv", x, w, nullptr, cp)->output();
  EXPECT_EQ(to_string(y->shape()), "[n, 8, 16, 16]");
  PoolingParams pp;
  pp.kernel = {3};
  pp.stride = {2};
  pp.ceil_mode = true;
  Tensor* p = net.add_pooling("pool", y, pp)->output();
  EXPECT_EQ(to_string(p->shape()), "[n, 8, 8, 8]");  // ceil((16-3)/2)+1 = 8
  Tensor* wt = net.add_constant("wt", weights({8, 4, 4, 4}, std::vector<float>(8 * 64)))->output();
  ConvolutionParams tp;
  tp.transposed = true;
  tp.stride = {2};
  tp.padding = {1};
  Tensor* up = net.add_convolution("deconv", y, wt, nullptr, tp)->output();
  EXPECT_EQ(to_string(up->shape()), "[n, 4, 32, 32]");  // (16-1)*2 - 2 + 3 + 1
}

TEST(NetworkInference, CeilModePoolingDropsWindowStartingInPadding) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {1, 1, 5, S("w")});
  PoolingParams pp;
  pp.kernel = {2};
  pp.stride = {2};
  pp.padding = {1};
  pp.ceil_mode = true;
  Tensor* p = net.add_pooling("pool", x, pp)->output();
  EXPECT_EQ(p->shape()[2].constant(), 3);  // PyTorch: 3, not ceil(5/2)+1 = 4
  EXPECT_EQ(p->shape()[3].evaluate({{"w", 5}}), 3);
  EXPECT_EQ(p->shape()[3].evaluate({{"w", 6}}), 4);
}

TEST(NetworkInference, ReshapeInfersSymbolicMinusOne) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {S("s0"), 4, 6});
  ShuffleParams sp;
  sp.reshape = Shape{-1, 8};
  Tensor* y = net.add_shuffle("r", x, sp)->output();
  EXPECT_EQ(to_string(y->shape()), "[s0*3, 8]");
  sp.reshape = Shape{S("s0"), -1};
  sp.second_perm = {1, 0};
  Tensor* z = net.add_shuffle("r2", x, sp)->output();
  EXPECT_EQ(to_string(z->shape()), "[24, s0]");
}

TEST(NetworkInference, ReduceGatherTopKSliceNonzero) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {2, S("s"), 5});
  Tensor* idx = net.add_input("idx", DataType::kInt64, {7});
  ReduceParams rp;
  rp.axes = {-1};
  rp.keep_dims = true;
  EXPECT_EQ(to_string(net.add_reduce("sum", x, rp)->output()->shape()), "[2, s, 1]");
  rp.op = ReduceOp::kArgMax;
  rp.keep_dims = false;
  Layer* am = net.add_reduce("argmax", x, rp);
  EXPECT_EQ(am->output()->dtype(), DataType::kInt64);
  EXPECT_EQ(to_string(net.add_gather("g", x, idx, GatherMode::kAxis, 1)->output()->shape()), "[2, 7, 5]");
  TopKParams tk;
  tk.k = 3;
  Layer* topk = net.add_topk("topk", x, tk);
  ASSERT_EQ(topk->outputs().size(), 2u);
  EXPECT_EQ(to_string(topk->output(1)->shape()), "[2, s, 3]");
  EXPECT_EQ(topk->output(1)->dtype(), DataType::kInt64);
  SliceParams sl{{0, 1, 0}, {2, S("s") - 1, 5}, {1, 1, 1}};
  EXPECT_EQ(to_string(net.add_slice("slice", x, sl)->output()->shape()), "[2, s - 1, 5]");
  Layer* nz = net.add_nonzero("nz", x);
  ASSERT_EQ(nz->output()->rank(), 2u);
  EXPECT_EQ(nz->output()->shape()[0].op(), DimExpr::Op::Sym);
  EXPECT_EQ(nz->output()->shape()[1].constant(), 3);
  Layer* nz2 = net.add_nonzero("nz", x);
  EXPECT_NE(nz2->name(), nz->name());  // unique names
  EXPECT_NE(nz2->output()->shape()[0].symbol_name(), nz->output()->shape()[0].symbol_name());
}

TEST(NetworkInference, AttentionAndFusedPointwise) {
  Network net;
  Tensor* q = net.add_input("q", DataType::kFloat32, {S("b"), 4, 10, 16});
  Tensor* k = net.add_input("k", DataType::kFloat32, {S("b"), 4, 12, 16});
  Tensor* v = net.add_input("v", DataType::kFloat32, {S("b"), 4, 12, 8});
  EXPECT_EQ(to_string(net.add_attention("attn", q, k, v, nullptr, {})->output()->shape()), "[b, 4, 10, 8]");
  Tensor* bias = net.add_input("bias", DataType::kFloat32, {16});
  FusedPointwiseParams fp;
  PointwiseInstr add{};
  add.kind = PointwiseInstr::Kind::kBinary;
  add.binary = BinaryOp::kAdd;
  add.operands = {0, 1};
  PointwiseInstr cmp{};
  cmp.kind = PointwiseInstr::Kind::kBinary;
  cmp.binary = BinaryOp::kGreater;
  cmp.dtype = DataType::kBool;
  cmp.operands = {2, 0};
  fp.program = {add, cmp};
  fp.outputs = {2, 3};
  Layer* f = net.add_layer("fused", {q, bias}, fp);
  EXPECT_EQ(to_string(f->output(0)->shape()), "[b, 4, 10, 16]");
  EXPECT_EQ(f->output(1)->dtype(), DataType::kBool);
  fp.program[1].operands = {5, 0};
  EXPECT_THROW(net.add_layer("bad", {q, bias}, fp), NetworkError);
}

TEST(NetworkStructure, PrintVerifyAndRewrites) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {S("s0"), 8});
  Layer* r = net.add_activation("relu", x, ActivationOp::kRelu);
  Layer* r2 = net.add_activation("relu", x, ActivationOp::kRelu);
  EXPECT_NE(r->name(), r2->name());
  EXPECT_THROW(net.verify(), NetworkError);  // no outputs yet
  net.mark_output(r->output(), "y");
  net.verify();
  std::string s = net.str();
  EXPECT_NE(s.find("%relu: f32[s0, 8] = Activation[relu](%x)  # relu"), std::string::npos) << s;
  EXPECT_THROW(net.remove_layer(r), NetworkError);  // its output is a network output
  net.replace_all_uses(r->output(), r2->output());
  EXPECT_EQ(net.outputs()[0].second, r2->output());
  net.remove_layer(r);
  EXPECT_EQ(net.layers().size(), 1u);
  EXPECT_EQ(net.consumers(x).size(), 1u);
  EXPECT_EQ(net.input_symbols(), std::vector<std::string>{"s0"});
}

TEST(NetworkStructure, InputBoundSizes) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {S("s0"), 8});
  Layer* nz = net.add_nonzero("nz", x);  // rows: a count the layer computes when the plan runs
  const DimExpr count = nz->output()->shape()[0];
  EXPECT_TRUE(net.input_bound(DimExpr(int64_t{8})));
  EXPECT_TRUE(net.input_bound(S("s0") * 2 + 1));
  EXPECT_FALSE(net.input_bound(count));
  EXPECT_FALSE(net.input_bound(S("s0") + count));
  EXPECT_TRUE(net.input_bound(x->shape()));
  EXPECT_FALSE(net.input_bound(nz->output()->shape()));
  EXPECT_TRUE(net.input_bound(Shape{}));
}

TEST(NetworkPlugins, RegistryAndInference) {
  PluginKernel k;
  k.infer = [](const std::vector<const Tensor*>& in, const std::string& attrs) {
    if (attrs == "refuse") throw std::runtime_error("bad attributes");
    return std::vector<std::pair<DataType, Shape>>{{in[0]->dtype(), in[0]->shape()}};
  };
  register_plugin("test_identity_plugin", k);
  ASSERT_NE(find_plugin("test_identity_plugin"), nullptr);
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {3});
  Layer* p = net.add_plugin("p", {x}, {"test_identity_plugin", ""});
  EXPECT_EQ(to_string(p->output()->shape()), "[3]");
  EXPECT_THROW(net.add_plugin("q", {x}, {"no_such_plugin", ""}), NetworkError);
  std::string msg = error_of([&] { net.add_plugin("r", {x}, {"test_identity_plugin", "refuse"}); });
  EXPECT_NE(msg.find("bad attributes"), std::string::npos) << msg;
}

// A layer whose output size is a data-dependent count (a Fill of [count]) has no tensor input,
// yet must run after the NonZero that binds the count: the topological order keeps it there
// (torch.unique's counts are such a Fill; before, it ran first and read an unbound size).
TEST(NetworkRewrites, TopologicalOrderWaitsForDataDependentSizes) {
  Network n;
  Tensor* mask = n.add_input("mask", DataType::kBool, {DimExpr(int64_t{6})});
  FillParams fp;
  fp.dims = {S("nz_count")};
  fp.dtype = DataType::kInt64;
  Layer* fill = n.add_fill("zeros_of_count", fp);
  NonZeroParams nz;
  nz.count_symbol = "nz_count";
  Layer* where = n.add_layer("where", {mask}, nz);
  n.mark_output(fill->output(), "zeros");
  n.mark_output(where->output(), "where");
  n.topological_sort();
  const std::vector<Layer*> order = n.layers();
  const auto pos = [&](const Layer* l) { return std::find(order.begin(), order.end(), l) - order.begin(); };
  EXPECT_LT(pos(where), pos(fill));
}

// Every layer kind prints its parameters (describe ends in a static_assert; Pad and Resize
// printed nothing before it).
TEST(NetworkPrinting, PadAndResizeShowTheirParameters) {
  Network n;
  Tensor* x = n.add_input("x", DataType::kFloat32, {DimExpr(int64_t{1}), DimExpr(int64_t{2}), DimExpr(int64_t{4}),
                                                    DimExpr(int64_t{5})});
  PadParams pad;
  pad.pre = {0, 0, 1, 2};
  pad.post = {0, 0, 2, 0};
  pad.mode = PadMode::kReflect;
  ResizeParams resize;
  resize.mode = ResizeMode::kLinear;
  resize.output_spatial = {DimExpr(int64_t{8}), DimExpr(int64_t{10})};
  resize.align_corners = true;
  const std::string padded = n.add_pad("pad", x, pad)->str();
  const std::string resized = n.add_resize("up", x, resize)->str();
  EXPECT_NE(padded.find("Pad[reflect pre=0,0,1,2 post=0,0,2,0]"), std::string::npos) << padded;
  EXPECT_NE(resized.find("Resize[linear out=[8, 10] align_corners]"), std::string::npos) << resized;
}

}  // namespace
}  // namespace kiln::engine
