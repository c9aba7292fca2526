// Builder passes, each alone, and "the optimized plan computes what the unoptimized one does".
#include <gtest/gtest.h>

#include "engine/network_internal.h"
#include "engine/plan_impl.h"
#include "filecheck.h"
#include "runtime_test_util.h"
#include "test_networks.h"

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;


TEST(BuilderPasses, FoldConstantsEvaluatesConstantSubgraphs) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {4});
  Tensor* a = net.add_constant("a", weights({4}, {1, 2, 3, 4}))->output();
  Tensor* b = net.add_constant("b", weights({4}, {10, 20, 30, 40}))->output();
  Tensor* ab = net.add_elementwise("ab", a, b, BinaryOp::kAdd)->output();
  Tensor* sh = net.add_shape("shape", x)->output();  // static shape: folds without data
  Tensor* y = net.add_elementwise("y", x, ab, BinaryOp::kMul)->output();
  net.mark_output(y, "y");
  net.mark_output(sh, "shape");
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK: %ab: f32[4] = Elementwise[add](%a, %b)  # ab
    CHECK: %shape: i64[1] = Shape(%x)  # shape
  )"));
  EXPECT_EQ(passes::fold_constants(net), 2u);
  // a + b and the shape of x are constants now; a and b are left for dead-layer elimination.
  ASSERT_TRUE(filecheck(net.str(), R"(
    CHECK:      input %x: f32[4]
    CHECK-NEXT: %a: f32[4] = Constant[f32[4]]()  # a
    CHECK-NEXT: %b: f32[4] = Constant[f32[4]]()  # b
    CHECK-NEXT: %ab_1: f32[4] = Constant[f32[4]]()  # ab_1
    CHECK-NEXT: %y: f32[4] = Elementwise[mul](%x, %ab_1)  # y
    CHECK-NEXT: %shape_1: i64[1] = Constant[i64[1]]()  # shape_1
    CHECK-NEXT: output y = %y
    CHECK-NEXT: output shape = %shape_1
  )"));
  const float* v = y->producer()->inputs()[1]->producer()->as<ConstantParams>()->weights.as<float>();
  EXPECT_EQ(v[0], 11);
  EXPECT_EQ(v[3], 44);
  EXPECT_EQ(passes::eliminate_dead_layers(net), 2u);
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK:      input %x: f32[4]
    CHECK-NEXT: %ab_1: f32[4] = Constant[f32[4]]()  # ab_1
    CHECK-NEXT: %y: f32[4] = Elementwise[mul](%x, %ab_1)  # y
    CHECK-NEXT: %shape_1: i64[1] = Constant[i64[1]]()  # shape_1
  )"));
  net.verify();
}

// A broadcast too large for fold_constants (a fill of 2^17 zeros) still has a value at build
// time; anything reading a network input has none, nor does a value over the byte limit.
TEST(BuilderPasses, EvaluateAtBuildTimeSeesThroughUnfoldedBroadcasts) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {4});
  Tensor* a = net.add_constant("a", weights({4}, {1, 2, 3, 4}))->output();
  FillParams f;
  f.dims = {32768, 4};
  Tensor* zeros = net.add_fill("zeros", f)->output();
  Tensor* wide = net.add_elementwise("wide", zeros, a, BinaryOp::kAdd)->output();
  Tensor* y = net.add_elementwise("y", wide, x, BinaryOp::kMul)->output();
  net.mark_output(y, "y");
  EXPECT_EQ(passes::fold_constants(net), 0u);
  const auto v = passes::evaluate_at_build_time(wide, size_t{1} << 20);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->dims, (std::vector<int64_t>{32768, 4}));
  EXPECT_EQ(v->as<float>()[4 * 32767 + 3], 4.f);
  EXPECT_FALSE(passes::evaluate_at_build_time(y, size_t{1} << 20));
  EXPECT_FALSE(passes::evaluate_at_build_time(wide, size_t{1} << 16));
}

TEST(BuilderPasses, DeadLayerElimination) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {4});
  Tensor* dead = net.add_unary("exp", x, UnaryOp::kExp)->output();
  net.add_activation("dead2", dead, ActivationOp::kRelu);
  net.mark_output(net.add_unary("neg", x, UnaryOp::kNeg)->output(), "y");
  EXPECT_EQ(passes::eliminate_dead_layers(net), 2u);
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK:      input %x: f32[4]
    CHECK-NEXT: %neg: f32[4] = Unary[neg](%x)  # neg
    CHECK-NEXT: output y = %neg
  )"));
}

// y = relu(x @ W + b) as converters emit it
Network matmul_bias_relu(bool fuse_shape_1d) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("batch"), 16});
  Tensor* w = net.add_constant("w", weights({16, 8}, random_floats(128, 1)))->output();
  Tensor* b = net.add_constant("b", weights(fuse_shape_1d ? std::vector<int64_t>{8} : std::vector<int64_t>{1, 8},
                                            random_floats(8, 2)))->output();
  Tensor* mm = net.add_matmul("mm", x, w)->output();
  Tensor* add = net.add_elementwise("bias", mm, b, BinaryOp::kAdd)->output();
  Tensor* y = net.add_activation("relu", add, ActivationOp::kRelu)->output();
  net.mark_output(y, "y");
  return net;
}

TEST(BuilderPasses, MatMulEpilogueFusion) {
  for (bool one_d : {true, false}) {
    Network net = matmul_bias_relu(one_d);
    EXPECT_TRUE(filecheck(net.str(), R"(
      CHECK:      %mm: f32[batch, 8] = MatMul[a b](%x, %w)
      CHECK-NEXT: %bias: f32[batch, 8] = Elementwise[add](%mm, %b)
      CHECK-NEXT: %relu: f32[batch, 8] = Activation[relu](%bias)
    )"));
    EXPECT_EQ(passes::fuse_epilogues(net), 1u);
    passes::fold_constants(net);
    passes::eliminate_dead_layers(net);
    // The bias (a [1, 8] one flattened to [8]) and the relu are the matmul's epilogue.
    const std::string bias = one_d ? "%b" : "%b_flat_1";
    EXPECT_TRUE(filecheck(net.str(), R"(
      CHECK:      input %x: f32[batch, 16]
      CHECK-NEXT: %w: f32[16, 8] = Constant[f32[16,8]]()
      CHECK-NEXT: )" + bias + R"(: f32[8] = Constant[f32[8]]()
      CHECK-NEXT: %mm_1: f32[batch, 8] = MatMul[a b +bias relu](%x, %w, )" + bias + R"()
      CHECK-NEXT: output y = %mm_1
    )"));
  }
  // a bias that varies along rows is not an epilogue
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {4, 16});
  Tensor* w = net.add_constant("w", weights({16, 8}, random_floats(128, 1)))->output();
  Tensor* b = net.add_constant("b", weights({4, 1}, random_floats(4, 2)))->output();
  Tensor* y = net.add_elementwise("add", net.add_matmul("mm", x, w)->output(), b, BinaryOp::kAdd)->output();
  net.mark_output(y, "y");
  EXPECT_EQ(passes::fuse_epilogues(net), 0u);
}

TEST(BuilderPasses, FusedMatMulPlanMatchesUnfused) {
  BuilderConfig cfg;
  cfg.profile["batch"] = {1, 4, 16};
  BuilderConfig cfg_ref = no_opt();
  cfg_ref.profile = cfg.profile;
  Plan ref = build(matmul_bias_relu(false), cfg_ref);
  Plan opt = build(matmul_bias_relu(false), cfg);
  EXPECT_TRUE(filecheck(opt.network().str(), R"(
    CHECK:      input %x: f32[batch, 16]
    CHECK-NEXT: = Constant[f32[16,8]]()  # w
    CHECK-NEXT: = Constant[f32[8]]()
    CHECK-NEXT: = MatMul[a b +bias relu](%x,
    CHECK-NEXT: output y =
  )"));
  HostTensor x{{5, 16}, random_floats(80, 3)};
  expect_close(run_plan(opt, {{"x", x}})[0], run_plan(ref, {{"x", x}})[0]);
}

// gelu(reshape(x2d @ W + b)) as the addmm + view converters emit a [batch, seq, features] MLP:
// the activation moves into the matmul and the reshape follows the fused layer.
Network addmm_view_gelu() {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("batch"), 3, 16});
  ShuffleParams flat;
  flat.reshape = Shape{-1, 16};
  Tensor* x2 = net.add_shuffle("flat", x, flat)->output();
  Tensor* w = net.add_constant("w", weights({16, 8}, random_floats(128, 1)))->output();
  Tensor* b = net.add_constant("b", weights({8}, random_floats(8, 2)))->output();
  Tensor* add = net.add_elementwise("bias", net.add_matmul("mm", x2, w)->output(), b, BinaryOp::kAdd)->output();
  ShuffleParams back;
  back.reshape = Shape{DimExpr::symbol("batch"), 3, 8};
  Tensor* y3 = net.add_shuffle("view", add, back)->output();
  net.mark_output(net.add_activation("gelu", y3, ActivationOp::kGeluErf)->output(), "y");
  return net;
}

TEST(BuilderPasses, EpilogueActivationSeesThroughAReshape) {
  Network net = addmm_view_gelu();
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK:      %mm: f32[batch*3, 8] = MatMul[a b](%flat, %w)
    CHECK-NEXT: %bias: f32[batch*3, 8] = Elementwise[add](%mm, %b)
    CHECK-NEXT: %view: f32[batch, 3, 8] = Shuffle[reshape=[batch, 3, 8]](%bias)
    CHECK-NEXT: %gelu: f32[batch, 3, 8] = Activation[gelu_erf](%view)
  )"));
  EXPECT_EQ(passes::fuse_epilogues(net), 1u);
  net.verify();
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK:      %b: f32[8] = Constant[f32[8]]()  # b
    CHECK-NEXT: %mm_1: f32[batch*3, 8] = MatMul[a b +bias gelu_erf](%flat, %w, %b)
    CHECK-NEXT: %view_1: f32[batch, 3, 8] = Shuffle[reshape=[batch, 3, 8]](%mm_1)
    CHECK-NEXT: output y = %view_1
  )"));

  BuilderConfig cfg;
  cfg.profile["batch"] = {1, 2, 8};
  BuilderConfig cfg_ref = no_opt();
  cfg_ref.profile = cfg.profile;
  Plan opt = build(addmm_view_gelu(), cfg), ref = build(addmm_view_gelu(), cfg_ref);
  HostTensor x{{2, 3, 16}, random_floats(96, 3)};
  expect_close(run_plan(opt, {{"x", x}})[0], run_plan(ref, {{"x", x}})[0]);
}

// `fused` loses its adds and activation to one fused layer, printed as `fused_layer`; `kept` keeps
// one add the pass must not take.
void expect_one_fusion_keeping_one_add(Network fused, const std::string& fused_layer, Network kept) {
  EXPECT_EQ(passes::fuse_epilogues(fused), 1u);
  fused.verify();
  EXPECT_TRUE(filecheck(fused.str(), R"(
    CHECK-NOT: Elementwise
    CHECK-NOT: Activation
    CHECK:     )" + fused_layer + R"(
    CHECK-NOT: Elementwise
    CHECK-NOT: Activation
  )"));
  passes::fuse_epilogues(kept);
  EXPECT_TRUE(filecheck(kept.str(), R"(
    CHECK-COUNT-1: = Elementwise[add]
    CHECK-NOT:     = Elementwise
  )"));
}

// A matmul's bias behind a reshape that keeps the last dim (ConvNeXt's MLP: mm viewed back to
// [N, H, W, C], then + b and GELU; later a residual of the viewed shape) folds into the matmul, the
// reshape moving after it. A reshape that changes the last dim keeps its add.
TEST(BuilderPasses, BiasBehindAReshapeFoldsIntoMatMul) {
  auto net_of = [](bool keep_last_dim) {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {12, 16});
    Tensor* r = net.add_input("r", DataType::kFloat32, {1, 3, 4, 8});
    Tensor* w = net.add_constant("w", weights({16, 8}, random_floats(128, 70)))->output();
    Tensor* y = net.add_layer("mm", {x, w}, MatMulParams{})->output();
    ShuffleParams view;
    view.reshape = keep_last_dim ? Shape{1, 3, 4, 8} : Shape{1, 3, 8, 4};
    y = net.add_shuffle("view", y, view)->output();
    Tensor* b = net.add_constant("b", weights(keep_last_dim ? std::vector<int64_t>{8} : std::vector<int64_t>{4},
                                               random_floats(keep_last_dim ? 8 : 4, 71)))->output();
    y = net.add_elementwise("bias", y, b, BinaryOp::kAdd)->output();
    if (keep_last_dim) y = net.add_elementwise("residual", y, r, BinaryOp::kAdd)->output();
    net.mark_output(net.add_activation("gelu", y, ActivationOp::kGeluErf)->output(), "y");
    return net;
  };
  expect_one_fusion_keeping_one_add(net_of(true), "= MatMul[a b +bias +residual gelu_erf](%x, %w, %b, %r_as_mm)",
                                    net_of(false));
  std::map<std::string, HostTensor> in{{"x", HostTensor{{12, 16}, random_floats(192, 72)}},
                                       {"r", HostTensor{{1, 3, 4, 8}, random_floats(96, 73)}}};
  expect_close(run_plan(build(net_of(true), {}), in)[0], run_plan(build(net_of(true), no_opt()), in)[0], 1e-5f);
  std::map<std::string, HostTensor> in2{{"x", HostTensor{{12, 16}, random_floats(192, 72)}},
                                        {"r", HostTensor{{1, 3, 4, 8}, random_floats(96, 73)}}};
  expect_close(run_plan(build(net_of(false), {}), in2)[0], run_plan(build(net_of(false), no_opt()), in2)[0], 1e-5f);
}

// Residual connections fold into the layer before them: x @ w (+ b) viewed [B, L, N] + r -> relu
// (the add behind a reshape, as GPT-2's addmm), and conv + b + r -> relu (a ResNet block end, also
// in the channels-last rewrite, which then re-lays the residual). Only an add of exactly the
// output's shape counts: a broadcast operand stays an add.
TEST(BuilderPasses, ResidualAddsFoldIntoMatMulAndConvolution) {
  auto mm_net = [](bool broadcast_residual) {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {6, 16});
    Tensor* r = net.add_input("r", DataType::kFloat32, {2, broadcast_residual ? int64_t(1) : int64_t(3), 8});
    Tensor* w = net.add_constant("w", weights({16, 8}, random_floats(128, 60)))->output();
    Tensor* b = net.add_constant("b", weights({8}, random_floats(8, 61)))->output();
    MatMulParams mp;
    mp.has_bias = true;
    Tensor* y = net.add_layer("mm", {x, w, b}, mp)->output();
    ShuffleParams view;
    view.reshape = Shape{2, 3, 8};
    y = net.add_shuffle("view", y, view)->output();
    y = net.add_elementwise("residual", y, r, BinaryOp::kAdd)->output();
    net.mark_output(net.add_activation("relu", y, ActivationOp::kRelu)->output(), "y");
    return net;
  };
  expect_one_fusion_keeping_one_add(mm_net(false), "= MatMul[a b +bias +residual relu](%x, %w, %b, %r_as_mm)",
                                    mm_net(true));
  std::map<std::string, HostTensor> in{{"x", HostTensor{{6, 16}, random_floats(96, 62)}},
                                       {"r", HostTensor{{2, 3, 8}, random_floats(48, 63)}}};
  expect_close(run_plan(build(mm_net(false), {}), in)[0], run_plan(build(mm_net(false), no_opt()), in)[0], 1e-5f);

  auto conv_net = [](bool half = false) {  // half: fp16 inside (what channels-last takes)
    Network net;
    auto in = [&](Tensor* t) { return half ? net.add_cast(t->name() + "16", t, DataType::kFloat16)->output() : t; };
    Tensor* x = in(net.add_input("x", DataType::kFloat32, {2, 4, 5, 5}));
    Tensor* r = in(net.add_input("r", DataType::kFloat32, {2, 8, 5, 5}));
    Tensor* w = in(net.add_constant("w", weights({8, 4, 3, 3}, random_floats(288, 64)))->output());
    Tensor* b = in(net.add_constant("b", weights({8}, random_floats(8, 65)))->output());
    ConvolutionParams cp;
    cp.padding = {1};
    cp.has_bias = true;
    Tensor* y = net.add_convolution("conv", x, w, b, cp)->output();
    y = net.add_elementwise("residual", r, y, BinaryOp::kAdd)->output();
    y = net.add_activation("relu", y, ActivationOp::kRelu)->output();
    net.mark_output(half ? net.add_cast("y32", y, DataType::kFloat32)->output() : y, "y");
    return net;
  };
  Network conv = conv_net();
  EXPECT_EQ(passes::fuse_epilogues(conv), 1u);
  EXPECT_TRUE(filecheck(conv.str(), R"(
    CHECK:      = Convolution[stride=1,1 pad=1,1 dil=1,1 groups=1 +bias +residual relu](%x, %w, %b, %r)
    CHECK-NEXT: output y
  )"));
  std::map<std::string, HostTensor> cin{{"x", HostTensor{{2, 4, 5, 5}, random_floats(200, 66)}},
                                        {"r", HostTensor{{2, 8, 5, 5}, random_floats(400, 67)}}};
  const HostTensor want = run_plan(build(conv_net(), no_opt()), cin)[0];
  expect_close(run_plan(build(conv_net(), {}), cin)[0], want, 1e-5f);
  // channels last (the CUDA layout; the CPU runs it through permutes): the residual is re-laid too
  Network nhwc = conv_net(true);
  passes::fold_constants(nhwc);
  EXPECT_EQ(passes::fuse_epilogues(nhwc), 1u);
  EXPECT_GT(passes::to_channels_last(nhwc), 0u);
  passes::fold_constants(nhwc);
  passes::eliminate_dead_layers(nhwc);
  EXPECT_TRUE(filecheck(nhwc.str(), R"(
    CHECK:      %conv_1_residual_nhwc: f16[2, 5, 5, 8] = Shuffle[perm=0,2,3,1](%r16)
    CHECK-NEXT: = Convolution[stride=1,1 pad=1,1 dil=1,1 groups=1 NHWC +bias +residual relu]
    CHECK-SAME: (%conv_1_nhwc, %conv_1_krsc, %b16_1, %conv_1_residual_nhwc)
  )"));
  expect_close(run_plan(build(std::move(nhwc), no_opt()), cin)[0], run_plan(build(conv_net(true), no_opt()), cin)[0], 2e-3f);
}

// The second epilogue pass (after the transpose motion) meets layers that already have a
// residual: an activation that a cancelled transpose pair hid, then a bias, still fold in, and the
// residual stays the last input.
TEST(BuilderPasses, SecondEpiloguePassKeepsTheResidual) {
  auto make = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {4, 8});
    Tensor* r = net.add_input("r", DataType::kFloat32, {4, 8});
    Tensor* w = net.add_constant("w", weights({8, 8}, random_floats(64, 70)))->output();
    Tensor* y = net.add_elementwise("res", net.add_layer("mm", {x, w}, MatMulParams{})->output(), r, BinaryOp::kAdd)->output();
    ShuffleParams t;
    t.first_perm = {1, 0};
    y = net.add_shuffle("t2", net.add_shuffle("t1", y, t)->output(), t)->output();
    net.mark_output(net.add_activation("relu", y, ActivationOp::kRelu)->output(), "y");
    return net;
  };
  std::map<std::string, HostTensor> in{{"x", HostTensor{{4, 8}, random_floats(32, 71)}},
                                       {"r", HostTensor{{4, 8}, random_floats(32, 72)}}};
  Plan opt = build(make(), {});
  for (Layer* l : opt.network().layers())
    if (auto* p = l->as<MatMulParams>()) {
      EXPECT_TRUE(p->has_residual);
      EXPECT_TRUE(p->activation);
    }
  expect_close(run_plan(opt, in)[0], run_plan(build(make(), no_opt()), in)[0], 1e-5f);
  // a bias found after the residual goes before it
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {4, 8});
  Tensor* r = net.add_input("r", DataType::kFloat32, {4, 8});
  Tensor* w = net.add_constant("w", weights({8, 8}, random_floats(64, 70)))->output();
  Tensor* b = net.add_constant("b", weights({8}, random_floats(8, 73)))->output();
  MatMulParams with_residual;
  with_residual.has_residual = true;
  Tensor* y = net.add_layer("mm", {x, w, r}, with_residual)->output();
  net.mark_output(net.add_elementwise("bias", y, b, BinaryOp::kAdd)->output(), "y");
  EXPECT_EQ(passes::fuse_epilogues(net), 1u);
  net.verify();
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK:     = MatMul[a b +bias +residual](%x, %w, %b, %r)
    CHECK-NOT: Elementwise
  )"));
}

TEST(BuilderPasses, ConvEpilogueFusion) {
  auto make = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {2, 3, 8, 8});
    Tensor* w = net.add_constant("w", weights({4, 3, 3, 3}, random_floats(108, 4)))->output();
    Tensor* b = net.add_constant("b", weights({1, 4, 1, 1}, random_floats(4, 5)))->output();
    ConvolutionParams cp;
    cp.padding = {1};
    Tensor* c = net.add_convolution("conv", x, w, nullptr, cp)->output();
    Tensor* y = net.add_elementwise("bias", b, c, BinaryOp::kAdd)->output();
    net.mark_output(net.add_activation("silu", y, ActivationOp::kSilu)->output(), "y");
    return net;
  };
  Network net = make();
  EXPECT_EQ(passes::fuse_epilogues(net), 1u);
  // The [1, 4, 1, 1] bias (added on the left), flattened, and the silu are the convolution's epilogue.
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK:      %b_flat: f32[4] = Shuffle[reshape=[4]](%b)
    CHECK-NEXT: %conv_1: f32[2, 4, 8, 8] = Convolution[stride=1,1 pad=1,1 dil=1,1 groups=1 +bias silu](%x, %w, %b_flat)
    CHECK-NEXT: output y = %conv_1
  )"));
  Plan opt = build(make(), {});
  Plan ref = build(make(), no_opt());
  EXPECT_TRUE(filecheck(opt.network().str(), R"(
    CHECK-NOT:  Elementwise
    CHECK:      = Convolution[
    CHECK-SAME: +bias silu]
    CHECK-NOT:  Elementwise
    CHECK-NOT:  Convolution
  )"));
  HostTensor x{{2, 3, 8, 8}, random_floats(384, 6)};
  expect_close(run_plan(opt, {{"x", x}})[0], run_plan(ref, {{"x", x}})[0], 1e-4f);
}

// conv (with and without bias, grouped) -> inference batch norm -> relu: the norm folds into the
// conv's weights, the relu then becomes its epilogue; a conv whose output is also used elsewhere
// keeps its norm.
TEST(BuilderPasses, BatchNormFoldsIntoConvolution) {
  for (int64_t groups : {1, 4})
    for (bool conv_bias : {false, true}) {
      auto make = [&](bool second_use, DataType t = DataType::kFloat32) {
        Network net;
        auto weights = [&](std::vector<int64_t> dims, const std::vector<float>& v) {
          std::vector<uint16_t> h(v.size());
          if (t == DataType::kFloat32) return testing::weights(dims, v);
          detail::convert_elements(v.data(), DataType::kFloat32, h.data(), t, int64_t(v.size()));
          return Weights::copy_of(t, dims, h.data());
        };
        Tensor* x = net.add_input("x", t, {2, 4, 6, 6});
        Tensor* w = net.add_constant("w", weights({8, 4 / groups, 3, 3}, random_floats(8 * 4 / groups * 9, 20)))->output();
        Tensor* b = conv_bias ? net.add_constant("b", weights({8}, random_floats(8, 21)))->output() : nullptr;
        ConvolutionParams cp;
        cp.padding = {1};
        cp.groups = groups;
        Tensor* c = net.add_convolution("conv", x, w, b, cp)->output();
        std::vector<float> var = random_floats(8, 22);
        for (float& v : var) v = 0.1f + std::abs(v);
        std::vector<Tensor*> in{c, net.add_constant("mean", weights({8}, random_floats(8, 23)))->output(),
                                net.add_constant("var", weights({8}, var))->output(),
                                net.add_constant("gamma", weights({8}, random_floats(8, 24)))->output(),
                                net.add_constant("beta", weights({8}, random_floats(8, 25)))->output()};
        NormalizationParams np;
        np.kind = NormKind::kBatch;
        np.has_scale = np.has_bias = true;
        np.epsilon = 1e-3;
        Tensor* y = net.add_normalization("bn", in, np)->output();
        net.mark_output(net.add_activation("relu", y, ActivationOp::kRelu)->output(), "y");
        if (second_use) net.mark_output(c, "conv_out");
        return net;
      };
      SCOPED_TRACE("groups " + std::to_string(groups) + (conv_bias ? ", conv bias" : ""));
      Network net = make(false);
      EXPECT_EQ(passes::fold_batch_norms(net), 1u);
      // The convolution reads folded weights and a bias (of the model's dtype); the relu now
      // follows it directly.
      auto folded = [](const std::string& dt) {
        return "CHECK-NOT:  Normalization\n"
               "CHECK:      %conv_w_bn: " + dt + "[8,\n"
               "CHECK-NEXT: %conv_b_bn: " + dt + "[8] = Constant[" + dt + "[8]]()\n"
               "CHECK-NEXT: = Convolution[\n"
               "CHECK-SAME: +bias](%x, %conv_w_bn, %conv_b_bn)\n"
               "CHECK-NEXT: = Activation[relu]\n"
               "CHECK-NEXT: output y\n";
      };
      EXPECT_TRUE(filecheck(net.str(), folded("f32")));
      Network shared = make(true);
      EXPECT_EQ(passes::fold_batch_norms(shared), 1u);
      // The convolution's output is also an output: the norm does not fold into it, and becomes
      // a per-channel scale and shift instead (pointwise: it fuses with the relu after it).
      EXPECT_TRUE(filecheck(shared.str(), R"(
        CHECK-NOT:  Normalization
        CHECK:      %bn_s: f32[1, 8, 1, 1] = Constant[f32[1,8,1,1]]()
        CHECK-NEXT: %bn_t: f32[1, 8, 1, 1] = Constant[f32[1,8,1,1]]()
        CHECK-NEXT: %bn_scale: f32[2, 8, 6, 6] = Elementwise[mul](%conv, %bn_s)
        CHECK-NEXT: %bn_shift: f32[2, 8, 6, 6] = Elementwise[add](%bn_scale, %bn_t)
        CHECK-NEXT: %relu: f32[2, 8, 6, 6] = Activation[relu](%bn_shift)
      )"));
      {
        Plan opt_shared = build(make(true), {});
        Plan ref_shared = build(make(true), no_opt());
        HostTensor x{{2, 4, 6, 6}, random_floats(288, 27)};
        const auto got = run_plan(opt_shared, {{"x", x}}), want = run_plan(ref_shared, {{"x", x}});
        for (size_t o = 0; o < want.size(); ++o) expect_close(got[o], want[o], 1e-4f);
      }
      Plan opt = build(make(false), {});
      Plan ref = build(make(false), no_opt());
      EXPECT_TRUE(filecheck(opt.network().str(), R"(
        CHECK-NOT: Normalization
        CHECK-NOT: Activation
        CHECK:     = Convolution[
        CHECK-SAME: +bias relu]
        CHECK-NOT: Normalization
        CHECK-NOT: Activation
      )"));
      EXPECT_TRUE(filecheck(ref.network().str(), "CHECK: = Normalization[batch"));
      HostTensor x{{2, 4, 6, 6}, random_floats(288, 26)};
      expect_close(run_plan(opt, {{"x", x}})[0], run_plan(ref, {{"x", x}})[0], 1e-4f);
      // A model cast to fp16 before compiling has fp16 weights and statistics: they fold too,
      // into fp16 weights (the arithmetic is the same, in double).
      Network half = make(false, DataType::kFloat16);
      EXPECT_EQ(passes::fold_batch_norms(half), 1u);
      EXPECT_TRUE(filecheck(half.str(), folded("f16")));
    }
}

// A dead channel (variance 0) with a large scale: folded into fp16 weights it would be inf (and a
// zero input then NaN), so the norm stays; in fp32 it folds.
TEST(BuilderPasses, BatchNormStaysWhenFoldedWeightsWouldOverflow) {
  for (DataType t : {DataType::kFloat16, DataType::kFloat32}) {
    Network net;
    auto constant = [&](const std::string& name, float v, std::vector<int64_t> dims = {1}) {
      if (t == DataType::kFloat32) return net.add_constant(name, testing::weights(dims, {v}))->output();
      uint16_t h = 0;  // one fp16 element: converting into it only for 2-byte types
      detail::convert_elements(&v, DataType::kFloat32, &h, t, 1);
      return net.add_constant(name, Weights::copy_of(t, dims, &h))->output();
    };
    Tensor* x = net.add_input("x", t, {1, 1, 2, 2});
    Tensor* w = constant("w", 1.f, {1, 1, 1, 1});
    Tensor* c = net.add_convolution("conv", x, w, nullptr, {})->output();
    NormalizationParams np;
    np.kind = NormKind::kBatch;
    np.has_scale = np.has_bias = true;
    np.epsilon = 1e-5;
    net.mark_output(net.add_normalization("bn", {c, constant("mean", 0), constant("var", 0), constant("gamma", 300),
                                                  constant("beta", 0)}, np)->output(), "y");
    EXPECT_EQ(passes::fold_batch_norms(net), t == DataType::kFloat32 ? 1u : 0u) << to_string(t);
  }
  // An fp32 model built in fp16: the folded weights would be cast to fp16 later, so the norm
  // stays there too; and, with no convolution before it, it is not rewritten as a scale either.
  for (bool after_conv : {true, false}) {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {1, 1, 2, 2});
    Tensor* in = x;
    if (after_conv)
      in = net.add_convolution("conv", x, net.add_constant("w", testing::weights({1, 1, 1, 1}, {1.f}))->output(),
                               nullptr, {})->output();
    NormalizationParams np;
    np.kind = NormKind::kBatch;
    np.has_scale = np.has_bias = true;
    auto c = [&](const std::string& name, float v) { return net.add_constant(name, testing::weights({1}, {v}))->output(); };
    net.mark_output(net.add_normalization("bn", {in, c("mean", 0), c("var", 0), c("gamma", 300), c("beta", 0)}, np)->output(), "y");
    EXPECT_EQ(passes::fold_batch_norms(net, Precision::kFP16), 0u) << (after_conv ? "after a convolution" : "alone");
    EXPECT_TRUE(filecheck(net.str(), "CHECK: = Normalization[batch")) << net.str();
  }
}

// A fused qkv projection split in three, read by causal attention (test_networks.h).
Network qkv_attention(int64_t heads, int64_t head) {
  Network net;
  add_qkv_attention(net, net.add_input("qkv", DataType::kFloat32, {2, 10, 3 * heads * head}), heads, head);
  return net;
}

TEST(BuilderPasses, AttentionReadsPermutedSlicesInPlace) {
  Network net = qkv_attention(2, 16);
  EXPECT_EQ(passes::absorb_attention_views(net), 1u);
  Plan opt = build(qkv_attention(2, 16), {});
  Plan ref = build(qkv_attention(2, 16), no_opt());
  // Unoptimized: three slices, each with its head split, and the head merge after the attention.
  EXPECT_TRUE(filecheck(ref.network().str(), R"(
    CHECK:      = Slice[start=[0, 0, 0] size=[2, 10, 32] stride=[1, 1, 1]](%qkv)
    CHECK-NEXT: = Shuffle[reshape=[2, 10, 2, 16] perm2=0,2,1,3](%split0)
    CHECK-NEXT: = Slice[start=[0, 0, 32] size=[2, 10, 32] stride=[1, 1, 1]](%qkv)
    CHECK-NEXT: = Shuffle[reshape=[2, 10, 2, 16] perm2=0,2,1,3](%split1)
    CHECK-NEXT: = Slice[start=[0, 0, 64] size=[2, 10, 32] stride=[1, 1, 1]](%qkv)
    CHECK-NEXT: = Shuffle[reshape=[2, 10, 2, 16] perm2=0,2,1,3](%split2)
    CHECK-NEXT: = Attention[causal](%heads0, %heads1, %heads2)
    CHECK-NEXT: = Shuffle[perm=0,2,1,3 reshape=[2, 10, 32]](%sdpa)
  )"));
  // Optimized: the attention reads q, k and v in place and writes the merged heads' layout; the
  // merge's reshape is left, an alias.
  EXPECT_TRUE(filecheck(opt.network().str(), R"(
    CHECK:      input %qkv: f32[2, 10, 96]
    CHECK-NEXT: %sdpa_1: f32[2, 10, 2, 16] = Attention[causal q-view k-view v-view out-perm=0,2,1,3](%qkv, %qkv, %qkv)
    CHECK-NEXT: %merge_heads_1: f32[2, 10, 32] = Shuffle[reshape=[2, 10, 32]](%sdpa_1)
    CHECK-NEXT: output y = %merge_heads_1
  )"));
  HostTensor x{{2, 10, 96}, random_floats(1920, 30)};
  expect_close(run_plan(opt, {{"qkv", x}})[0], run_plan(ref, {{"qkv", x}})[0], 1e-5f);
  // a view survives the plan's serialization
  const std::vector<uint8_t> bytes = opt.serialize();
  Plan loaded = Plan::deserialize(bytes.data(), bytes.size());
  expect_close(run_plan(loaded, {{"qkv", x}})[0], run_plan(ref, {{"qkv", x}})[0], 1e-5f);
}

// q, k, v inputs [2, 3, 6, 8] and a constant mask of `mask_dims` with `value(i, j)` everywhere.
Network masked_attention(DataType mask_type, std::vector<int64_t> mask_dims, const std::function<float(int64_t, int64_t)>& value) {
  Network net;
  Tensor* q = net.add_input("q", DataType::kFloat32, {2, 3, 6, 8});
  Tensor* k = net.add_input("k", DataType::kFloat32, {2, 3, 6, 8});
  Tensor* v = net.add_input("v", DataType::kFloat32, {2, 3, 6, 8});
  std::vector<float> vals;
  int64_t n = 1;
  for (int64_t d : mask_dims) n *= d;
  for (int64_t x = 0; x < n; ++x) vals.push_back(value(x / 6 % 6, x % 6));
  Weights w = weights(mask_dims, vals);
  if (mask_type == DataType::kBool) {
    std::vector<uint8_t> b(vals.begin(), vals.end());
    w = Weights::copy_of(DataType::kBool, mask_dims, b.data());
  }
  Tensor* m = net.add_constant("mask", std::move(w))->output();
  net.mark_output(net.add_attention("sdpa", q, k, v, m, {})->output(), "y");
  return net;
}

// A constant causal mask (GPT-2's where(k <= q, 0, lowest), folded) becomes the causal flag; a
// mask that keeps everything is dropped; any other mask stays. Results agree with the mask read
// as data.
TEST(BuilderPasses, ConstantCausalMasksBecomeTheFlag) {
  const float lowest = -3.4028234663852886e38f;
  auto causal = [&](int64_t i, int64_t j) { return j <= i ? 0.f : lowest; };
  auto causal_keep = [](int64_t i, int64_t j) { return j <= i ? 1.f : 0.f; };
  auto shifted = [&](int64_t i, int64_t j) { return j <= i + 1 ? 0.f : lowest; };
  auto small = [](int64_t i, int64_t j) { return j <= i ? 0.f : -100.f; };  // not far enough down to hide
  auto keep_all = [](int64_t, int64_t) { return 0.f; };
  // The attention after the pass: the causal flag, no mask at all, or the mask as it was.
  const std::string flag = "CHECK: = Attention[causal](%q, %k, %v)";
  const std::string dropped = "CHECK: = Attention(%q, %k, %v)";
  const std::string kept = "CHECK: = Attention[mask](%q, %k, %v, %mask)";
  struct Case {
    DataType type;
    std::vector<int64_t> dims;
    std::function<float(int64_t, int64_t)> value;
    bool changed;
    std::string after;
  };
  const Case cases[] = {{DataType::kFloat32, {2, 1, 6, 6}, causal, true, flag},
                        {DataType::kBool, {6, 6}, causal_keep, true, flag},
                        {DataType::kFloat32, {1, 6, 6}, keep_all, true, dropped},
                        {DataType::kFloat32, {6, 6}, shifted, false, kept},
                        {DataType::kFloat32, {6, 6}, small, false, kept}};
  std::map<std::string, HostTensor> in;
  for (const char* name : {"q", "k", "v"}) in[name] = HostTensor{{2, 3, 6, 8}, random_floats(288, uint32_t(name[0]))};
  for (const Case& c : cases) {
    Network net = masked_attention(c.type, c.dims, c.value);
    EXPECT_EQ(passes::simplify_attention_masks(net), c.changed ? 1u : 0u);
    EXPECT_TRUE(filecheck(net.str(), c.after));
    Plan opt = build(masked_attention(c.type, c.dims, c.value), {});
    Plan ref = build(masked_attention(c.type, c.dims, c.value), no_opt());
    EXPECT_TRUE(filecheck(opt.network().str(), c.after));
    expect_close(run_plan(opt, in)[0], run_plan(ref, in)[0], 1e-5f);
  }
}

// A decoder exported with a dynamic length S builds its mask from aranges: keep = arange(S)[None, :]
// <= arange(S)[:, None], broadcast over the batch, then where(keep, 0, lowest) (or the bool keep
// itself). Nothing has a value at build time, yet the construction says causal: the flag. A
// shifted comparison (k <= q + 1) is no causal mask and stays. Checked against the mask read as
// data at two lengths.
TEST(BuilderPasses, SymbolicCausalMasksAreRecognisedByConstruction) {
  auto make = [](bool bool_mask, double shift, float hidden = -3.4028234663852886e38f,
                 DataType positions = DataType::kInt64) {
    Network net;
    const DimExpr s = DimExpr::symbol("S");
    Tensor* q = net.add_input("q", DataType::kFloat32, {2, 3, s, 8});
    Tensor* k = net.add_input("k", DataType::kFloat32, {2, 3, s, 8});
    Tensor* v = net.add_input("v", DataType::kFloat32, {2, 3, s, 8});
    FillParams ar;
    ar.op = FillOp::kArange;
    ar.dims = {s};
    ar.dtype = positions;
    Tensor* pos = net.add_fill("arange", ar)->output();
    auto view = [&](const std::string& name, Tensor* t, Shape to) {
      ShuffleParams p;
      p.reshape = std::move(to);
      return net.add_shuffle(name, t, p)->output();
    };
    Tensor* key = view("k_pos", pos, {1, s});
    Tensor* query = view("q_pos", pos, {s, 1});
    if (shift != 0) {
      Weights c = positions == DataType::kInt64 ? Weights::copy_of(DataType::kInt64, {}, std::vector<int64_t>{int64_t(shift)}.data())
                                                : weights({}, {float(shift)});
      query = net.add_elementwise("shift", query, net.add_constant("one", std::move(c))->output(), BinaryOp::kAdd)->output();
    }
    Tensor* keep = view("rank4", net.add_elementwise("le", key, query, BinaryOp::kLessEqual)->output(), {1, 1, s, s});
    FillParams zeros;
    zeros.dims = {2, 1, s, s};
    zeros.dtype = DataType::kBool;
    keep = net.add_elementwise("expand", keep, net.add_fill("zeros", zeros)->output(), BinaryOp::kOr)->output();
    Tensor* mask = keep;
    if (!bool_mask)
      mask = net.add_select("where", keep, net.add_constant("zero", weights({}, {0.f}))->output(),
                            net.add_constant("lowest", weights({}, {hidden}))->output())->output();
    net.mark_output(net.add_attention("sdpa", q, k, v, mask, {})->output(), "y");
    return net;
  };
  for (bool bool_mask : {false, true})
    for (double shift : {0.0, 1.0}) {
      Network net = make(bool_mask, shift);
      EXPECT_EQ(passes::simplify_attention_masks(net), shift == 0 ? 1u : 0u);
      const std::string after = shift == 0 ? "CHECK: = Attention[causal](%q, %k, %v)"
                                           : "CHECK: = Attention[mask](%q, %k, %v, %";
      EXPECT_TRUE(filecheck(net.str(), after));
      BuilderConfig cfg;
      cfg.profile["S"] = {1, 6, 8};
      BuilderConfig ref_cfg = no_opt();
      ref_cfg.profile = cfg.profile;
      Plan opt = build(make(bool_mask, shift), cfg), ref = build(make(bool_mask, shift), ref_cfg);
      EXPECT_TRUE(filecheck(opt.network().str(), after));
      for (int64_t len : {5, 7}) {
        std::map<std::string, HostTensor> in;
        for (const char* name : {"q", "k", "v"})
          in[name] = HostTensor{{2, 3, len, 8}, random_floats(size_t(48 * len), uint32_t(name[0] + len))};
        expect_close(run_plan(opt, in)[0], run_plan(ref, in)[0], 1e-5f);
      }
    }
  // Not recognised: NaN as the hidden value (PyTorch gives NaN rows), float positions (they round
  // at large values).
  Network nan_hidden = make(false, 0, std::nanf(""));
  EXPECT_EQ(passes::simplify_attention_masks(nan_hidden), 0u);
  Network float_positions = make(false, 0, -3.4028234663852886e38f, DataType::kFloat32);
  EXPECT_EQ(passes::simplify_attention_masks(float_positions), 0u);
}

// x [-> permute perm_in] -> reshape to rows -> @ w -> reshape to out -> permute perm_out: a
// projection between reshapes, as converters emit an [L, B, E] linear.
Network projection_between_reshapes(std::vector<int64_t> x_dims, std::vector<int64_t> perm_in, Shape rows,
                                    std::vector<int64_t> w_dims, Shape out, std::vector<int64_t> perm_out) {
  Network net;
  Tensor* t = net.add_input("x", DataType::kFloat32, Shape(x_dims.begin(), x_dims.end()));
  if (!perm_in.empty()) {
    ShuffleParams p;
    p.first_perm = perm_in;
    t = net.add_shuffle("permute_in", t, p)->output();
  }
  ShuffleParams to_rows;
  to_rows.reshape = rows;
  t = net.add_shuffle("to_rows", t, to_rows)->output();
  Tensor* w = net.add_constant("w", weights(w_dims, random_floats(w_dims[0] * w_dims[1], 53)))->output();
  t = net.add_layer("proj", {t, w}, MatMulParams{})->output();
  ShuffleParams back;
  back.reshape = out;
  t = net.add_shuffle("from_rows", t, back)->output();
  ShuffleParams p;
  p.first_perm = perm_out;
  net.mark_output(net.add_shuffle("permute_out", t, p)->output(), "y");
  return net;
}

// [L, B, E] <-> [B, L, E] transposes around projections (torchvision's MultiheadAttention): one
// before a matmul moves after it; one after reshape-matmul-reshape moves before and merges with
// the head permute already there.
TEST(BuilderPasses, PermutesMoveAcrossRowWiseMatMuls) {
  auto before = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {2, 5, 16});
    ShuffleParams t;
    t.first_perm = {1, 0, 2};
    Tensor* lbe = net.add_shuffle("transpose", x, t)->output();
    Tensor* w = net.add_constant("w", weights({16, 24}, random_floats(384, 50)))->output();
    Tensor* b = net.add_constant("b", weights({24}, random_floats(24, 51)))->output();
    MatMulParams mp;
    mp.has_bias = true;
    net.mark_output(net.add_layer("proj", {lbe, w, b}, mp)->output(), "y");
    return net;
  };
  Network a = before();
  EXPECT_TRUE(filecheck(a.str(), R"(
    CHECK:      %transpose: f32[5, 2, 16] = Shuffle[perm=1,0,2](%x)
    CHECK:      %proj: f32[5, 2, 24] = MatMul[a b +bias](%transpose, %w, %b)
  )"));
  EXPECT_EQ(passes::move_permutes_across_matmuls(a), 1u);
  // The projection reads x as it is; the transpose moves to its output.
  EXPECT_TRUE(filecheck(a.str(), R"(
    CHECK-NOT:  Shuffle
    CHECK:      %proj_1: f32[2, 5, 24] = MatMul[a b +bias](%x, %w, %b)
    CHECK-NEXT: %transpose_1: f32[5, 2, 24] = Shuffle[perm=1,0,2](%proj_1)
    CHECK-NEXT: output y = %transpose_1
  )"));
  HostTensor x{{2, 5, 16}, random_floats(160, 52)};
  expect_close(run_plan(build(std::move(a), no_opt()), {{"x", x}})[0], run_plan(build(before(), no_opt()), {{"x", x}})[0], 1e-5f);

  // attention out [B, H, L, D] -> [L, B, H, D] -> rows -> out_proj -> [L, B, E] -> [B, L, E]
  auto after = [] { return projection_between_reshapes({2, 3, 5, 4}, {2, 0, 1, 3}, Shape{10, 12}, {12, 12}, Shape{5, 2, 12}, {1, 0, 2}); };
  Network c = after();
  EXPECT_TRUE(filecheck(c.str(), R"(
    CHECK:      = Shuffle[perm=2,0,1,3](%x)
    CHECK-NEXT: = Shuffle[reshape=[10, 12]](%permute_in)
    CHECK:      = MatMul[a b](%to_rows, %w)
    CHECK-NEXT: = Shuffle[reshape=[5, 2, 12]](%proj)
    CHECK-NEXT: = Shuffle[perm=1,0,2](%from_rows)
  )"));
  EXPECT_GE(passes::move_permutes_across_matmuls(c), 2u);
  passes::eliminate_dead_layers(c);
  // One permute is left, the two merged into the head permute [B, H, L, D] -> [B, L, H, D] before
  // the rows are made: the matmul's rows are then already in the output's order.
  EXPECT_TRUE(filecheck(c.str(), R"(
    CHECK-NOT:  Shuffle
    CHECK:      %permute_out_1_1: f32[2, 5, 3, 4] = Shuffle[perm=0,2,1,3](%x)
    CHECK-NEXT: %to_rows_1: f32[10, 12] = Shuffle[reshape=[10, 12]](%permute_out_1_1)
    CHECK-NEXT: %proj_1: f32[10, 12] = MatMul[a b](%to_rows_1, %w)
    CHECK-NEXT: %from_rows_1: f32[2, 5, 12] = Shuffle[reshape=[2, 5, 12]](%proj_1)
    CHECK-NEXT: output y = %from_rows_1
  )"));
  HostTensor o{{2, 3, 5, 4}, random_floats(120, 54)};
  expect_close(run_plan(build(std::move(c), no_opt()), {{"x", o}})[0], run_plan(build(after(), no_opt()), {{"x", o}})[0], 1e-5f);
}

// A matmul over rows that a reshape made from only part of the leading dims (a per-sample linear
// over flattened heads) must keep its permute after it: moving it would mix samples.
TEST(BuilderPasses, PermutesStayWhenRowsAreNotTheLeadingDims) {
  auto make = [] { return projection_between_reshapes({2, 3, 4}, {}, Shape{2, 12}, {12, 6}, Shape{2, 3, 2}, {1, 0, 2}); };
  Network net = make();
  EXPECT_EQ(passes::move_permutes_across_matmuls(net), 0u);
  HostTensor x{{2, 3, 4}, random_floats(24, 56)};
  expect_close(run_plan(build(make(), {}), {{"x", x}})[0], run_plan(build(make(), no_opt()), {{"x", x}})[0], 1e-5f);
}

TEST(BuilderPasses, AttentionViewsAreChecked) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {2, 10, 96});
  AttentionParams ap;
  ap.views.assign(3, StridedView{0, {2, 2, 10, 16}, {960, 16, 96, 1}});
  EXPECT_NO_THROW(net.add_attention("ok", x, x, x, nullptr, ap));
  ap.views[1] = StridedView{70, {2, 2, 10, 16}, {960, 16, 96, 1}};  // past the end
  EXPECT_THROW(net.add_attention("past", x, x, x, nullptr, ap), NetworkError);
  ap.views[1] = StridedView{0, {2, 2, 10, 16}, {960, -16, 96, 1}};  // before the start
  EXPECT_THROW(net.add_attention("before", x, x, x, nullptr, ap), NetworkError);
  ap.views[1] = StridedView{0, {2, 2, 10, 16}, {960, 16, 1, 96}};  // last stride not 1
  EXPECT_THROW(net.add_attention("strided", x, x, x, nullptr, ap), NetworkError);
  ap.views.resize(2);
  EXPECT_THROW(net.add_attention("two", x, x, x, nullptr, ap), NetworkError);
}

// A residual block in fp16: conv -> relu -> conv (+bias, grouped) -> + shortcut -> relu -> conv.
Network residual_convs() {
  Network net;
  Tensor* x = net.add_cast("x16", net.add_input("x", DataType::kFloat32, {2, 8, 6, 6}), DataType::kFloat16)->output();
  auto conv = [&](const std::string& name, Tensor* in, int64_t groups, bool bias, uint32_t seed) {
    Tensor* w = net.add_constant(name + "_w", weights({8, 8 / groups, 3, 3}, random_floats(8 * 8 / groups * 9, seed)))->output();
    w = net.add_cast(name + "_w16", w, DataType::kFloat16)->output();
    Tensor* b = nullptr;
    if (bias) b = net.add_cast(name + "_b16", net.add_constant(name + "_b", weights({8}, random_floats(8, seed + 1)))->output(),
                               DataType::kFloat16)->output();
    ConvolutionParams cp;
    cp.padding = {1};
    cp.groups = groups;
    return net.add_convolution(name, in, w, b, cp)->output();
  };
  Tensor* a = net.add_activation("relu1", conv("c1", x, 1, false, 40), ActivationOp::kRelu)->output();
  PoolingParams pool;
  pool.kernel = {3, 3};
  pool.stride = {2, 2};
  pool.padding = {1, 1};
  a = net.add_pooling("pool", a, pool)->output();
  Tensor* s = net.add_elementwise("residual", conv("c2", a, 4, true, 42), a, BinaryOp::kAdd)->output();
  Tensor* r = net.add_activation("relu2", s, ActivationOp::kRelu)->output();
  Tensor* c3 = conv("c3", r, 1, true, 44);
  ReduceParams mean;  // a global average pool: [N, C]
  mean.op = ReduceOp::kMean;
  mean.axes = {2, 3};
  net.mark_output(net.add_cast("y32", net.add_reduce("mean", c3, mean)->output(), DataType::kFloat32)->output(), "y");
  ReduceParams across;  // over channels, dims kept: [N, 1, H, W]
  across.op = ReduceOp::kMax;
  across.axes = {1};
  across.keep_dims = true;
  net.mark_output(net.add_cast("z32", net.add_reduce("max", c3, across)->output(), DataType::kFloat32)->output(), "z");
  return net;
}

TEST(BuilderPasses, ChannelsLastConvolutionsCancelTheirTransposes) {
  Network net = residual_convs();
  passes::fold_constants(net);
  EXPECT_GT(passes::to_channels_last(net), 3u);
  passes::fold_constants(net);
  passes::eliminate_dead_layers(net);
  // Into NHWC at the input, back to NCHW only for the output z: the pooling runs channels last,
  // the reductions take the NHWC axes (the mean over H, W gives [N, C] as it is).
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK-NOT:  Shuffle
    CHECK:      %c1_nhwc: f16[2, 6, 6, 8] = Shuffle[perm=0,2,3,1](%x16)
    CHECK-NOT:  Shuffle
    CHECK:      = Convolution[stride=1,1 pad=1,1 dil=1,1 groups=1 NHWC](%c1_nhwc, %c1_krsc)
    CHECK-NOT:  Shuffle
    CHECK:      %pool_1: f16[2, 3, 3, 8] = Pooling[max k=3,3 s=2,2 p=1,1 NHWC](%relu1_1)
    CHECK-NEXT: = Convolution[stride=1,1 pad=1,1 dil=1,1 groups=4 NHWC +bias](%pool_1, %c2_krsc, %c2_b16_1)
    CHECK-NEXT: = Elementwise[add]
    CHECK-NEXT: = Activation[relu]
    CHECK-NEXT: = Convolution[stride=1,1 pad=1,1 dil=1,1 groups=1 NHWC +bias](%relu2_1, %c3_krsc, %c3_b16_1)
    CHECK-NEXT: %mean_1: f16[2, 8] = Reduce[mean axes=1,2](%c3_1)
    CHECK-NEXT: %y32: f32[2, 8] = Cast[f32](%mean_1)
    CHECK-NEXT: %max_1: f16[2, 3, 3, 1] = Reduce[max axes=3 keep](%c3_1)
    CHECK-NEXT: %z32_1: f32[2, 3, 3, 1] = Cast[f32](%max_1)
    CHECK-NEXT: %z32_out: f32[2, 1, 3, 3] = Shuffle[perm=0,3,1,2](%z32_1)
    CHECK-NEXT: output y = %y32
    CHECK-NEXT: output z = %z32_out
  )"));
  Plan opt = build(std::move(net), no_opt());
  Plan ref = build(residual_convs(), no_opt());
  HostTensor x{{2, 8, 6, 6}, random_floats(576, 46)};
  for (size_t i = 0; i < 2; ++i) expect_close(run_plan(opt, {{"x", x}})[i], run_plan(ref, {{"x", x}})[i], 2e-3f);
}

// gelu-tanh written out as converters emit it, plus a broadcast operand
Network pointwise_graph() {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("n"), 6});
  Tensor* s = net.add_input("s", DataType::kFloat32, {6});
  Tensor* half = net.add_constant("half", weights({}, {0.5f}))->output();
  Tensor* c = net.add_constant("c", weights({1}, {0.7978845608f}))->output();
  Tensor* k = net.add_constant("k", weights({1}, {0.044715f}))->output();
  Tensor* one = net.add_constant("one", weights({1}, {1.f}))->output();
  Tensor* x3 = net.add_elementwise("x2", x, x, BinaryOp::kMul)->output();
  x3 = net.add_elementwise("x3", x3, x, BinaryOp::kMul)->output();
  Tensor* inner = net.add_elementwise("kx3", x3, k, BinaryOp::kMul)->output();
  inner = net.add_elementwise("sum", x, inner, BinaryOp::kAdd)->output();
  inner = net.add_elementwise("scale", inner, c, BinaryOp::kMul)->output();
  Tensor* t = net.add_unary("tanh", inner, UnaryOp::kTanh)->output();
  t = net.add_elementwise("onep", t, one, BinaryOp::kAdd)->output();
  Tensor* g = net.add_elementwise("xh", x, half, BinaryOp::kMul)->output();
  g = net.add_elementwise("gelu", g, t, BinaryOp::kMul)->output();
  Tensor* y = net.add_elementwise("shift", g, s, BinaryOp::kSub)->output();
  Tensor* mask = net.add_elementwise("pos", y, net.add_constant("zero", weights({}, {0.f}))->output(),
                                     BinaryOp::kGreater)->output();
  y = net.add_select("where", mask, y, net.add_unary("neg", y, UnaryOp::kNeg)->output())->output();
  net.mark_output(y, "y");
  return net;
}

TEST(BuilderPasses, PointwiseFusionOfADag) {
  Network net = pointwise_graph();
  EXPECT_EQ(passes::fuse_pointwise(net), 1u);
  passes::eliminate_dead_layers(net);
  // One layer reading x and s; the scalar constants are inlined into its program.
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK:      input %x: f32[n, 6]
    CHECK-NEXT: input %s: f32[6]
    CHECK-NEXT: %fused_where: f32[n, 6] = FusedPointwise[
    CHECK-SAME: instrs](%x, %s)
    CHECK-NEXT: output y = %fused_where
  )"));
  for (Layer* l : net.layers())
    if (auto* fp = l->as<FusedPointwiseParams>()) {
      EXPECT_GE(fp->program.size(), 14u);
    }
  BuilderConfig cfg;
  cfg.profile["n"] = {1, 3, 8};
  BuilderConfig ref_cfg = no_opt();
  ref_cfg.profile = cfg.profile;
  Plan opt = build(pointwise_graph(), cfg);
  Plan ref = build(pointwise_graph(), ref_cfg);
  HostTensor x{{5, 6}, random_floats(30, 7, -3, 3)}, s{{6}, random_floats(6, 8)};
  expect_close(run_plan(opt, {{"x", x}, {"s", s}})[0], run_plan(ref, {{"x", x}, {"s", s}})[0]);
}

TEST(BuilderPasses, PointwiseFusionRespectsBroadcastAndOutsideUses) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {4, 1});
  Tensor* z = net.add_input("z", DataType::kFloat32, {4, 5});
  Tensor* e = net.add_unary("exp", x, UnaryOp::kExp)->output();       // [4,1]: computed once per row
  Tensor* m = net.add_elementwise("mul", e, z, BinaryOp::kMul)->output();
  Tensor* r = net.add_activation("relu", m, ActivationOp::kRelu)->output();
  Tensor* q = net.add_unary("neg", z, UnaryOp::kNeg)->output();      // used twice outside
  net.mark_output(r, "r");
  net.mark_output(q, "q");
  net.mark_output(net.add_elementwise("qq", q, r, BinaryOp::kAdd)->output(), "qq");
  passes::fuse_pointwise(net);
  // exp stays (shape [4,1]); mul+relu fuse; neg stays (network output); qq alone stays
  EXPECT_TRUE(filecheck(net.str(), R"(
    CHECK:      input %z: f32[4, 5]
    CHECK-NEXT: %exp: f32[4, 1] = Unary[exp](%x)
    CHECK-NEXT: %neg: f32[4, 5] = Unary[neg](%z)
    CHECK-NEXT: %fused_relu: f32[4, 5] = FusedPointwise[2 instrs](%exp, %z)
    CHECK-NEXT: %qq: f32[4, 5] = Elementwise[add](%neg, %fused_relu)
    CHECK-NEXT: output r = %fused_relu
  )"));
  net.verify();
}

TEST(BuilderPrecision, Fp16PlanKeepsF32InterfaceAndIsClose) {
  auto make = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {4, 32});
    Tensor* w = net.add_constant("w", weights({32, 16}, random_floats(512, 9)))->output();
    Tensor* y = net.add_matmul("mm", x, w)->output();
    y = net.add_softmax("sm", y, -1)->output();
    net.mark_output(y, "y");
    return net;
  };
  for (Precision p : {Precision::kFP16, Precision::kBF16}) {
    Network net = make();
    EXPECT_GT(passes::apply_precision(net, p), 0u);
    // Casts in at the input and out at the output; the weight, the matmul and the softmax are 16-bit.
    const std::string low = p == Precision::kFP16 ? "f16" : "bf16";
    EXPECT_TRUE(filecheck(net.str(), R"(
      CHECK:      input %x: f32[4, 32]
      CHECK-NEXT: %w: )" + low + R"([32, 16] = Constant[)" + low + R"([32,16]]()
      CHECK-NEXT: %x_to_)" + low + ": " + low + R"([4, 32] = Cast[)" + low + R"(](%x)
      CHECK-NEXT: %mm: )" + low + R"([4, 16] = MatMul[a b](%x_to_)" + low + R"(, %w)
      CHECK-NEXT: %sm: )" + low + R"([4, 16] = Softmax[axis=1](%mm)
      CHECK-NEXT: %y_to_f32: f32[4, 16] = Cast[f32](%sm)
      CHECK-NEXT: output y = %y_to_f32
    )"));
    BuilderConfig cfg;
    cfg.precision = p;
    Plan low_plan = build(make(), cfg);
    Plan ref = build(make(), {});
    HostTensor x{{4, 32}, random_floats(128, 10)};
    expect_close(run_plan(low_plan, {{"x", x}})[0], run_plan(ref, {{"x", x}})[0], 3e-2f);
  }
}

// A CUDA plan carries its generated kernels, compiled at build time for the architecture asked
// (NVRTC needs no GPU): one per distinct pointwise program and matmul epilogue, machine code
// (ELF), kept through serialization. Without CUDA in this build there is none to carry.
TEST(BuilderDeviceCode, CudaPlansCarryTheirCompiledKernels) {
  auto make = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {4, 8});
    Tensor* w = net.add_constant("w", weights({8, 8}, random_floats(64, 80)))->output();
    Tensor* b = net.add_constant("b", weights({4, 8}, random_floats(32, 81)))->output();  // not a vector: an epilogue pass
    Tensor* y = net.add_elementwise("bias", net.add_layer("mm", {x, w}, MatMulParams{})->output(), b, BinaryOp::kAdd)->output();
    y = net.add_activation("silu", y, ActivationOp::kSilu)->output();
    y = net.add_unary("exp", net.add_elementwise("sq", y, y, BinaryOp::kMul)->output(), UnaryOp::kExp)->output();
    net.mark_output(y, "y");
    return net;
  };
  BuilderConfig cfg;
  cfg.device = DeviceKind::kCUDA;
  cfg.cuda_arch = 90;
  Plan plan = build(make(), cfg);
#ifdef KILN_HAS_CUDA
  const auto& code = plan.impl().device_code;
  ASSERT_FALSE(code.empty());
  for (const auto& [key, cubin] : code) {
    EXPECT_EQ(key.rfind("sm_90:", 0), 0u) << key;
    ASSERT_GT(cubin.size(), 4u);
    EXPECT_EQ(cubin.substr(0, 4), std::string("\x7f" "ELF"));
  }
  EXPECT_NE(plan.summary().find("device code: " + std::to_string(code.size()) + " kernels for sm_90"), std::string::npos);
  const std::vector<uint8_t> bytes = plan.serialize();
  Plan loaded = Plan::deserialize(bytes.data(), bytes.size());
  EXPECT_EQ(loaded.impl().device_code, code);
#else
  EXPECT_TRUE(plan.impl().device_code.empty());
#endif
}

TEST(BuilderMemory, PlannerReusesBuffers) {
  Network net;
  Tensor* t = net.add_input("x", DataType::kFloat32, {256, 256});
  for (int i = 0; i < 8; ++i) {
    t = net.add_unary("exp" + std::to_string(i), t, UnaryOp::kSin)->output();
    ShuffleParams sp;
    sp.first_perm = {1, 0};
    t = net.add_shuffle("t" + std::to_string(i), t, sp)->output();  // keeps fusion from merging all
  }
  net.mark_output(t, "y");
  Plan plan = build(std::move(net), {});
  size_t one = 256 * 256 * 4;
  EXPECT_GE(plan.memory().peak_activation_bytes, 2 * one);
  EXPECT_LE(plan.memory().peak_activation_bytes, 3 * one);  // vs 16 buffers without reuse
  ExecutionContext ctx(plan);
  HostTensor x{{256, 256}, random_floats(65536, 11)};
  ctx.set_input("x", view_of(x));
  ctx.execute();
  EXPECT_LE(ctx.arena_bytes(), 3 * one + 4096);
  EXPECT_NE(plan.summary().find("peak activation bytes"), std::string::npos);
}

TEST(BuilderProfile, RefusesMissingOrBadRanges) {
  auto make = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("b"), 4});
    net.mark_output(net.add_unary("neg", x, UnaryOp::kNeg)->output(), "y");
    return net;
  };
  EXPECT_THROW(build(make(), {}), NetworkError);
  BuilderConfig cfg;
  cfg.profile["b"] = {4, 2, 8};
  EXPECT_THROW(build(make(), cfg), NetworkError);
}

}  // namespace
}  // namespace kiln::engine

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;

// Precision constraints: under a bf16 build, layers added in a Network::Fp32Scope keep fp32 (they
// read the f32 network input unrounded, and the low-precision layers after them get a cast), so
// index math stays exact where bf16 (8 significant bits) could not hold it: 1000 + 1 is 1001 in
// fp32 and rounds to 1000 in bf16.
TEST(BuilderPasses, Fp32ScopeKeepsIndexMathExactUnderBf16) {
  auto make = [](bool constrained) {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {4});
    Tensor* pos;
    {
      std::optional<Network::Fp32Scope> fp32;
      if (constrained) fp32.emplace(net);
      Tensor* one = net.add_constant("one", weights({1}, {1.0f}))->output();
      pos = net.add_elementwise("pos", x, one, BinaryOp::kAdd)->output();
    }
    Tensor* doubled = net.add_elementwise("doubled", pos, pos, BinaryOp::kAdd)->output();  // low precision
    net.mark_output(pos, "pos");
    net.mark_output(doubled, "doubled");
    BuilderConfig cfg;
    cfg.precision = Precision::kBF16;
    return build(std::move(net), cfg);
  };
  HostTensor x{{4}, {1000.0f, 2000.0f, 255.0f, 3.0f}};
  const auto constrained = run_plan(make(true), {{"x", x}});
  EXPECT_EQ(constrained[0].data, (std::vector<float>{1001.0f, 2001.0f, 256.0f, 4.0f}));  // exact
  EXPECT_EQ(constrained[1].data[3], 8.0f);
  const auto plain = run_plan(make(false), {{"x", x}});
  EXPECT_NE(plain[0].data[0], 1001.0f) << "bf16 should have rounded 1001; the test shows nothing otherwise";
  Plan plan = make(true);
  for (const Layer* l : plan.network().layers())
    if (l->name() == "pos") EXPECT_EQ(l->output()->dtype(), DataType::kFloat32) << plan.network().str();
}

}  // namespace
}  // namespace kiln::engine
