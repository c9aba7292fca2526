// Plan::refit: a plan takes the constants of one built from the same network with other weights,
// keeps everything else, and gives the results of that plan; networks that differ in anything but
// constant bytes are refused with the plan left as it was.
#include <gtest/gtest.h>

#include "engine/plan_impl.h"
#include "runtime_test_util.h"

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;

// conv (+ batch norm folded into it by the builder) -> relu -> linear: constants the builder
// computes from several weights, so a refit must bring the recomputed ones.
Plan conv_bn_linear(uint32_t seed, DeviceKind device = DeviceKind::kCPU, ActivationOp act = ActivationOp::kRelu) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {2, 3, 8, 8});
  Tensor* w = net.add_constant("w", weights({4, 3, 3, 3}, random_floats(108, seed)))->output();
  Tensor* b = net.add_constant("b", weights({4}, random_floats(4, seed + 1)))->output();
  ConvolutionParams cp;
  cp.padding = {1};
  Tensor* y = net.add_convolution("conv", x, w, b, cp)->output();
  std::vector<float> var = random_floats(4, seed + 2);
  for (float& v : var) v = 0.5f + v * v;
  Tensor* mean = net.add_constant("mean", weights({4}, random_floats(4, seed + 3)))->output();
  Tensor* variance = net.add_constant("var", weights({4}, var))->output();
  Tensor* gamma = net.add_constant("gamma", weights({4}, random_floats(4, seed + 4)))->output();
  Tensor* beta = net.add_constant("beta", weights({4}, random_floats(4, seed + 5)))->output();
  NormalizationParams np;
  np.kind = NormKind::kBatch;
  np.has_scale = np.has_bias = true;
  np.epsilon = 1e-5;
  y = net.add_normalization("bn", {y, mean, variance, gamma, beta}, np)->output();
  y = net.add_activation("act", y, act)->output();
  ShuffleParams sp;
  sp.reshape = Shape{2, -1};
  y = net.add_shuffle("flat", y, sp)->output();
  Tensor* fc = net.add_constant("fc", weights({256, 5}, random_floats(256 * 5, seed + 6)))->output();
  net.mark_output(net.add_matmul("fc", y, fc)->output(), "y");
  BuilderConfig cfg;
  cfg.device = device;
  return build(std::move(net), cfg);
}

HostTensor input() { return HostTensor{{2, 3, 8, 8}, random_floats(2 * 3 * 64, 99)}; }

TEST(PlanRefit, GivesTheResultsOfThePlanBuiltWithTheNewWeights) {
  Plan plan = conv_bn_linear(1);
  const Plan fresh = conv_bn_linear(11);
  const auto before = run_plan(plan, {{"x", input()}});
  const auto expected = run_plan(fresh, {{"x", input()}});
  ASSERT_GT(std::abs(before[0].data[0] - expected[0].data[0]), 1e-3f) << "the two weight sets must differ";
  const std::string structure = plan.network().str();
  EXPECT_EQ(plan.weights_generation(), 0u);
  plan.refit(fresh);
  EXPECT_EQ(plan.weights_generation(), 1u);
  EXPECT_EQ(plan.network().str(), structure);  // same layers: only constants moved
  expect_close(run_plan(plan, {{"x", input()}})[0], expected[0]);
}

TEST(PlanRefit, AnExecutionContextMadeBeforeTheRefitSeesTheNewWeights) {
  Plan plan = conv_bn_linear(1);
  const Plan fresh = conv_bn_linear(11);
  const auto expected = run_plan(fresh, {{"x", input()}});
  ExecutionContext ctx(plan);
  HostTensor x = input();
  ctx.set_input("x", view_of(x));
  ctx.execute();
  plan.refit(fresh);
  ctx.execute();
  const TensorView& out = ctx.output(0);
  HostTensor got{out.dims, std::vector<float>(static_cast<size_t>(out.numel()))};
  ctx.backend().copy(got.data.data(), DeviceKind::kCPU, out.data, out.device, out.nbytes());
  expect_close(got, expected[0]);
}

TEST(PlanRefit, APlanOfAnotherStructureIsRefusedAndNothingChanges) {
  Plan plan = conv_bn_linear(1);
  const auto before = run_plan(plan, {{"x", input()}});
  const Plan other = conv_bn_linear(11, DeviceKind::kCPU, ActivationOp::kSigmoid);
  try {
    plan.refit(other);
    FAIL() << "refit of a plan with another structure was accepted";
  } catch (const PlanError& e) {
    EXPECT_NE(std::string(e.what()).find("refit:"), std::string::npos) << e.what();
  }
  EXPECT_EQ(plan.weights_generation(), 0u);
  expect_close(run_plan(plan, {{"x", input()}})[0], before[0], 0);
}

// A plan loaded from its bytes numbers its tensors afresh: refit compares wiring by position.
TEST(PlanRefit, ALoadedPlanTakesTheWeightsOfAFreshBuild) {
  const std::vector<uint8_t> bytes = conv_bn_linear(1).serialize();
  Plan loaded = Plan::deserialize(bytes.data(), bytes.size());
  const Plan fresh = conv_bn_linear(11);
  loaded.refit(fresh);
  expect_close(run_plan(loaded, {{"x", input()}})[0], run_plan(fresh, {{"x", input()}})[0]);
}

// On the GPU the constants live in device buffers the context uploaded and its recorded CUDA graph
// reads: the refit must reach a replayed graph, not only a layer-by-layer run.
TEST(PlanRefit, ARecordedCudaGraphReadsTheNewWeights) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  Plan plan = conv_bn_linear(1, DeviceKind::kCUDA);
  const Plan fresh = conv_bn_linear(11, DeviceKind::kCUDA);
  const auto expected = run_plan(conv_bn_linear(11), {{"x", input()}});
  ExecutionContext ctx(plan);
  HostTensor x = input();
  ctx.set_input("x", view_of(x));
  for (int run = 0; run < 3; ++run) ctx.execute();  // first run, recording, replay
  plan.refit(fresh);
  for (int run = 0; run < 2; ++run) {
    ctx.execute();
    const TensorView& out = ctx.output(0);
    HostTensor got{out.dims, std::vector<float>(static_cast<size_t>(out.numel()))};
    ctx.backend().copy(got.data.data(), DeviceKind::kCPU, out.data, out.device, out.nbytes());
    expect_close(got, expected[0], 1e-3f);
  }
}

}  // namespace
}  // namespace kiln::engine
