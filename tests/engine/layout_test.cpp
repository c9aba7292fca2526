// The channels-last rewrite on the blocks of mobile networks (depthwise convolution, squeeze-and-
// excite with its broadcast scale, global pooling) checked against the network as written, on the
// CPU backend: the rewritten network must compute the same thing, and the transposes must cancel.
#include <gtest/gtest.h>

#include "engine/builder.h"
#include "engine/network_internal.h"
#include "filecheck.h"
#include "runtime_test_util.h"

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;

// x -> depthwise 3x3 (bias) -> silu -> squeeze-and-excite (global average pool, 1x1 down, silu,
// 1x1 up, sigmoid, times the block's input) -> 1x1 projection + residual, in fp16.
Network squeeze_excite_block(int64_t channels) {
  Network net;
  const int64_t c = channels, squeezed = channels / 4;
  Tensor* x = net.add_cast("x16", net.add_input("x", DataType::kFloat32, {2, c, 9, 9}), DataType::kFloat16)->output();
  auto constant16 = [&](const std::string& name, std::vector<int64_t> dims, uint32_t seed) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    Tensor* w = net.add_constant(name, weights(dims, random_floats(size_t(n), seed, -0.5f, 0.5f)))->output();
    return net.add_cast(name + "16", w, DataType::kFloat16)->output();
  };
  ConvolutionParams dw;
  dw.padding = {1, 1};
  dw.groups = c;
  Tensor* a = net.add_convolution("dw", x, constant16("dw_w", {c, 1, 3, 3}, 1), constant16("dw_b", {c}, 2), dw)->output();
  a = net.add_activation("silu", a, ActivationOp::kSilu)->output();
  PoolingParams pool;
  pool.type = PoolType::kAverage;
  pool.adaptive_output = {1, 1};
  Tensor* s = net.add_pooling("squeeze", a, pool)->output();
  ConvolutionParams one;
  s = net.add_convolution("fc1", s, constant16("fc1_w", {squeezed, c, 1, 1}, 3), constant16("fc1_b", {squeezed}, 4), one)->output();
  s = net.add_activation("silu_se", s, ActivationOp::kSilu)->output();
  s = net.add_convolution("fc2", s, constant16("fc2_w", {c, squeezed, 1, 1}, 5), constant16("fc2_b", {c}, 6), one)->output();
  s = net.add_activation("gate", s, ActivationOp::kSigmoid)->output();
  Tensor* scaled = net.add_elementwise("excite", a, s, BinaryOp::kMul)->output();
  Tensor* y = net.add_convolution("proj", scaled, constant16("proj_w", {c, c, 1, 1}, 7), nullptr, one)->output();
  y = net.add_elementwise("residual", y, x, BinaryOp::kAdd)->output();
  net.mark_output(net.add_cast("y32", y, DataType::kFloat32)->output(), "y");
  return net;
}

// Transposes other than those of the network's input (into NHWC).
size_t shuffles_after_input(const Network& net) {
  size_t n = 0;
  for (const Layer* l : net.layers())
    if (l->as<ShuffleParams>() && l->inputs()[0]->name() != "x16") ++n;
  return n;
}

TEST(ChannelsLast, SqueezeExciteRunsChannelsLastAndMatches) {
  for (int64_t channels : {8, 16}) {
    for (bool fused : {false, true}) {
      Network net = squeeze_excite_block(channels);
      passes::fold_constants(net);
      if (fused) {
        passes::fuse_epilogues(net);
        passes::fold_constants(net);
        passes::eliminate_dead_layers(net);
        passes::fuse_pointwise(net);
      }
      passes::to_channels_last(net);
      passes::fold_constants(net);
      passes::eliminate_dead_layers(net);
      // Into NHWC at the input and back to NCHW once, at the output: the broadcast scale of the
      // excitation no longer sends the block back to NCHW in the middle.
      EXPECT_EQ(shuffles_after_input(net), 1u) << net.str();
      Plan opt = build(std::move(net), no_opt());
      Plan ref = build(squeeze_excite_block(channels), no_opt());
      HostTensor x{{2, channels, 9, 9}, random_floats(size_t(2 * channels * 81), 11)};
      expect_close(run_plan(opt, {{"x", x}})[0], run_plan(ref, {{"x", x}})[0], 2e-2f);
    }
  }
}

// A fire module (squeezenet's; inception and dense blocks have the same shape): a 1x1 squeeze,
// two expands concatenated along the channels, max pooling, another convolution. The
// concatenation runs channels last on the convolutions' NHWC outputs, so the only transposes left
// are at the network's input and output, and the result matches the network as written, fp32 on
// the CPU backend.
Network fire_module() {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {2, 8, 10, 10});
  auto conv = [&](const std::string& name, Tensor* in, int64_t cin, int64_t cout, int64_t k, uint32_t seed) {
    ConvolutionParams p;
    p.padding = {k / 2, k / 2};
    p.activation = ActivationParams{ActivationOp::kRelu};
    Tensor* w = net.add_constant(name + "_w", weights({cout, cin, k, k}, random_floats(size_t(cout * cin * k * k), seed, -0.4f, 0.4f)))->output();
    Tensor* b = net.add_constant(name + "_b", weights({cout}, random_floats(size_t(cout), seed + 1)))->output();
    return net.add_convolution(name, in, w, b, p)->output();
  };
  Tensor* squeeze = conv("squeeze", x, 8, 4, 1, 1);
  Tensor* cat = net.add_concat("cat", {conv("expand1", squeeze, 4, 6, 1, 3), conv("expand3", squeeze, 4, 10, 3, 5)}, 1)->output();
  PoolingParams pool;
  pool.type = PoolType::kMax;
  pool.kernel = {3, 3};
  pool.stride = {2, 2};
  pool.ceil_mode = true;
  Tensor* pooled = net.add_pooling("pool", cat, pool)->output();
  net.mark_output(conv("after", pooled, 16, 8, 1, 7), "y");
  return net;
}

TEST(ChannelsLast, ConcatenationsRunChannelsLast) {
  Network net = fire_module();
  passes::fuse_epilogues(net);
  passes::to_channels_last(net, /*for_cpu=*/true);
  passes::fold_constants(net);
  passes::eliminate_dead_layers(net);
  EXPECT_TRUE(filecheck(net.str(), R"(
CHECK-COUNT-1: Shuffle[perm=0,2,3,1](%x)
CHECK: Concat[axis=3]
CHECK: Pooling[max k=3,3 s=2,2 p=0,0 ceil NHWC]
CHECK: Shuffle[perm=0,3,1,2]
CHECK-NOT: Shuffle
)")) << net.str();
  Plan opt = build(std::move(net), no_opt());
  Plan ref = build(fire_module(), no_opt());
  HostTensor x{{2, 8, 10, 10}, random_floats(2 * 8 * 100, 11)};
  expect_close(run_plan(opt, {{"x", x}})[0], run_plan(ref, {{"x", x}})[0], 1e-4f);
}

}  // namespace
}  // namespace kiln::engine
