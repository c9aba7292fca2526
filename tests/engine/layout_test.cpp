// The channels-last rewrite on the blocks of mobile networks (depthwise convolution, squeeze-and-
// excite with its broadcast scale, global pooling) checked against the network as written, on the
// CPU backend: the rewritten network must compute the same thing, and the transposes must cancel.
#include <gtest/gtest.h>

#include "engine/builder.h"
#include "engine/network_internal.h"
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

}  // namespace
}  // namespace kiln::engine
