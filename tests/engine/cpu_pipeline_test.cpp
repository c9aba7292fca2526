// The CPU kernels through the real machinery: Network -> engine::build -> Plan -> (serialize,
// deserialize) -> ExecutionContext on the CPU backend. Linking this file makes every run_both()
// in the CPU tests compare the direct kernel results with the pipeline's; the tests here cover a
// representative model-shaped subset with dynamic shapes and fused epilogues.
#include "cpu_test_util.h"
#include "engine/cpu/onednn.h"

#include "engine/builder.h"
#include "engine/runtime.h"

namespace kiln::engine::cputest {

std::function<std::vector<Host>(Network&&, const std::vector<Host>&,
                                const std::map<std::string, std::array<int64_t, 3>>&)>&
pipeline_hook();

namespace {

std::vector<Host> pipeline(Network&& net, const std::vector<Host>& inputs,
                           const std::map<std::string, std::array<int64_t, 3>>& profile) {
  std::vector<std::string> names;
  for (Tensor* t : net.inputs()) names.push_back(t->name());
  BuilderConfig cfg;
  for (const std::string& s : net.input_symbols()) {
    auto it = profile.find(s);
    if (it != profile.end()) cfg.profile[s] = SymbolRange{it->second[0], it->second[1], it->second[2]};
    else cfg.profile[s] = SymbolRange{0, 8, 1 << 20};
  }
  Plan built = build(std::move(net), cfg);
  // Every pipeline run also round-trips the plan: a loaded plan runs without the network.
  std::vector<uint8_t> bytes = built.serialize();
  Plan plan = Plan::deserialize(bytes.data(), bytes.size());
  ExecutionContext ctx(plan);
  for (size_t i = 0; i < inputs.size(); ++i) ctx.set_input(names[i], inputs[i].view());
  ctx.execute();
  std::vector<Host> out;
  for (size_t i = 0; i < plan.output_names().size(); ++i) {
    const TensorView& v = ctx.output(i);
    Host h(v.dtype, v.dims);
    if (v.nbytes()) std::memcpy(h.bytes.data(), v.data, v.nbytes());
    out.push_back(std::move(h));
  }
  return out;
}

const bool registered = [] {
  pipeline_hook() = pipeline;
  return true;
}();

// A small MLP block: matmul (+bias, gelu via the builder's epilogue fusion), layer norm, softmax;
// batch is dynamic and bound at run time with several sizes.
TEST(CpuPipeline, DynamicMlpBlock) {
  const int64_t K = 24, N = 16;
  Host w = random_host(DataType::kFloat32, {N, K}, 1), b = random_host(DataType::kFloat32, {N}, 2);
  auto make = [&](Network& net) {
    auto* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("batch"), K});
    auto* mm = net.add_matmul("fc", x, constant(net, w, "w"), false, true)->output();
    auto* y = net.add_elementwise("bias", mm, constant(net, b, "b"), BinaryOp::kAdd)->output();
    auto* g = net.add_activation("gelu", y, ActivationOp::kGeluErf)->output();
    NormalizationParams np;
    np.first_axis = 1;
    auto* ln = net.add_normalization("ln", {g}, np)->output();
    net.mark_output(net.add_softmax("sm", ln, 1)->output(), "out");
  };
  for (int64_t batch : {1, 5, 33}) {
    Host x = random_host(DataType::kFloat32, {batch, K}, 3 + uint32_t(batch));
    auto out = run_both(make, {x}, {{"batch", {1, 8, 64}}});
    ASSERT_EQ(out[0].dims, (std::vector<int64_t>{batch, N}));
    // float64 reference
    std::vector<double> want;
    for (int64_t r = 0; r < batch; ++r) {
      std::vector<double> row(N);
      for (int64_t n = 0; n < N; ++n) {
        double s = b.get(n);
        for (int64_t k = 0; k < K; ++k) s += x.get(r * K + k) * w.get(n * K + k);
        row[n] = 0.5 * s * (1 + std::erf(s / std::sqrt(2.0)));
      }
      double m = 0, v = 0;
      for (double e : row) m += e / N;
      for (double e : row) v += (e - m) * (e - m) / N;
      double mx = -INFINITY, z = 0;
      for (double& e : row) { e = (e - m) / std::sqrt(v + 1e-5); mx = std::max(mx, e); }
      for (double e : row) z += std::exp(e - mx);
      for (double e : row) want.push_back(std::exp(e - mx) / z);
    }
    expect_close(out[0], want, 1e-4, 1e-6, "mlp batch " + std::to_string(batch));
  }
}

// One execution context running a plan whose oneDNN convolution and linear layer see alternating
// batch sizes: each thread keeps one primitive and argument binding per layer and must notice the
// shape changing under it (and back), in both directions, every time.
TEST(CpuPipeline, OneDnnLayersFollowAlternatingShapes) {
  if (!cpu::have_onednn()) GTEST_SKIP() << "kiln built without oneDNN";
  Host w = random_host(DataType::kFloat32, {12, 3, 3, 8}, 40, -0.3, 0.3), fc = random_host(DataType::kFloat32, {5, 12}, 41);
  auto make = [&](Network& net) {
    auto* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("batch"), 6, 6, 8});
    ConvolutionParams cp;
    cp.stride = cp.dilation = {1, 1};
    cp.padding = {1, 1};
    cp.channels_last = true;
    cp.activation = ActivationParams{ActivationOp::kRelu};
    auto* y = net.add_layer("conv", {x, constant(net, w, "w")}, cp)->output();
    net.mark_output(net.add_matmul("fc", y, constant(net, fc, "fc"), false, true)->output(), "out");
  };
  Network net;
  make(net);
  BuilderConfig cfg;
  cfg.profile["batch"] = SymbolRange{1, 2, 8};
  Plan plan = build(std::move(net), cfg);
  ExecutionContext ctx(plan);
  for (int64_t batch : {1, 3, 1, 3, 8, 1}) {
    Host x = random_host(DataType::kFloat32, {batch, 6, 6, 8}, 42 + uint32_t(batch));
    ::setenv("KILN_CPU_ONEDNN", "0", 1);
    Network reference;
    make(reference);
    const std::vector<Host> want = run_direct(reference, {x});
    ::unsetenv("KILN_CPU_ONEDNN");
    const uint64_t before = cpu::onednn_executions();
    ctx.set_input("x", x.view());
    ctx.execute();
    EXPECT_EQ(cpu::onednn_executions(), before + 2) << "batch " << batch << ": the convolution and the linear layer on oneDNN";
    const TensorView& v = ctx.output(0);
    Host got(v.dtype, v.dims);
    std::memcpy(got.bytes.data(), v.data, v.nbytes());
    ASSERT_EQ(got.dims, want[0].dims);
    expect_close(got, want[0].values(), 1e-4, 1e-4, "batch " + std::to_string(batch));
  }
}

// Data-dependent output through the runtime's output allocator.
TEST(CpuPipeline, NonZeroAllocatesAtRunTime) {
  Host x = host_of(DataType::kFloat32, {2, 3}, {0, 1, 0, 2, 0, 3});
  auto make = [](Network& net) {
    auto* in = net.add_input("x", DataType::kFloat32, {2, 3});
    net.mark_output(net.add_nonzero("nz", in)->output(), "idx");
  };
  auto out = run_both(make, {x});
  EXPECT_EQ(out[0].dims, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(out[0].values(), (std::vector<double>{0, 1, 1, 0, 1, 2}));
}

}  // namespace
}  // namespace kiln::engine::cputest
