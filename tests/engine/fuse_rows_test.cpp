// fuse_rows: layer norms, RMS norms, softmaxes and last-axis reductions with the pointwise layers
// around them become row programs that compute what the separate layers computed. Each network is
// built as written (no pass) and with the pass forced on the CPU backend (whose interpreter runs
// the same programs the CUDA kernels compile), and on the GPU where there is one (both the
// element-by-element and the vector kernels, warp- and block-wide rows).
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <random>

#include "engine/backend.h"
#include "engine/builder.h"
#include "engine/network_internal.h"
#include "engine/plan_impl.h"
#include "filecheck.h"
#include "runtime_test_util.h"

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;

size_t row_programs(const Network& net) {
  size_t n = 0;
  for (const Layer* l : net.layers())
    if (auto* f = l->as<FusedPointwiseParams>(); f && f->row_length) ++n;
  return n;
}

Tensor* constant(Network& net, const std::string& name, std::vector<int64_t> dims, uint32_t seed, float lo = -1.f,
                 float hi = 1.f) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return net.add_constant(name, weights(dims, random_floats(size_t(n), seed, lo, hi)))->output();
}
Tensor* binary(Network& net, const std::string& name, Tensor* a, Tensor* b, BinaryOp op) {
  return net.add_elementwise(name, a, b, op)->output();
}
Tensor* reduce_last(Network& net, const std::string& name, Tensor* x, ReduceOp op) {
  ReduceParams p;
  p.op = op;
  p.axes = {int64_t(x->rank()) - 1};
  p.keep_dims = true;
  return net.add_reduce(name, x, p)->output();
}

// transformers' LlamaRMSNorm as it traces: x * rsqrt(mean(x^2) + eps) * weight.
Tensor* rms_norm(Network& net, const std::string& name, Tensor* x, uint32_t seed) {
  const int64_t r = *x->shape().back().constant();
  Tensor* sq = binary(net, name + "_sq", x, x, BinaryOp::kMul);
  Tensor* var = reduce_last(net, name + "_mean", sq, ReduceOp::kMean);
  Tensor* eps = constant(net, name + "_eps", {1}, 0, 1e-6f, 1e-6f);
  Tensor* inv = net.add_unary(name + "_rsqrt", binary(net, name + "_add", var, eps, BinaryOp::kAdd), UnaryOp::kRsqrt)->output();
  Tensor* y = binary(net, name + "_scale", x, inv, BinaryOp::kMul);
  return binary(net, name + "_weight", constant(net, name + "_w", {r}, seed), y, BinaryOp::kMul);
}

using MakeNet = std::function<Network()>;

// Runs `make` unfused and fused (CPU; CUDA where there is a GPU, fp32 and fp16 plans); returns
// how many row programs the fused CPU plan has.
size_t expect_same(const MakeNet& make, const std::vector<int64_t>& in_dims, size_t min_programs, uint32_t seed = 11) {
  const size_t n = size_t(std::accumulate(in_dims.begin(), in_dims.end(), int64_t{1}, std::multiplies<>()));
  std::map<std::string, HostTensor> inputs{{"x", {in_dims, random_floats(n, seed, -2.f, 2.f)}}};
  const std::vector<HostTensor> want = run_plan(build(make(), no_opt()), inputs);

  BuilderConfig fused = no_opt();
  fused.fuse_rows = true;
  Plan plan = build(make(), fused);
  const size_t programs = row_programs(plan.network());
  EXPECT_GE(programs, min_programs) << plan.network().str();
  const std::vector<HostTensor> got = run_plan(plan, inputs);
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) expect_close(got[i], want[i], 2e-5f);

  // In fp16 (16-bit registers rounded after every instruction, as the unfused layers' tensors are)
  // against the unfused fp16 plan.
  BuilderConfig half = no_opt(), half_fused = fused;
  half.precision = half_fused.precision = Precision::kFP16;
  const std::vector<HostTensor> want16 = run_plan(build(make(), half), inputs);
  const std::vector<HostTensor> got16 = run_plan(build(make(), half_fused), inputs);
  for (size_t i = 0; i < got16.size() && i < want16.size(); ++i) expect_close(got16[i], want16[i], 4e-3f);

  // Through the plan format: a loaded plan runs the same programs.
  const std::vector<uint8_t> bytes = plan.serialize();
  const std::vector<HostTensor> loaded = run_plan(Plan::deserialize(bytes.data(), bytes.size()), inputs);
  for (size_t i = 0; i < loaded.size() && i < want.size(); ++i) expect_close(loaded[i], want[i], 2e-5f);

  if (!cuda_available()) return programs;
  for (Precision precision : {Precision::kFP32, Precision::kFP16}) {
    BuilderConfig gpu;
    gpu.device = DeviceKind::kCUDA;
    gpu.precision = precision;
    gpu.fuse_rows = true;
    Plan p = build(make(), gpu);
    EXPECT_GE(row_programs(p.network()), min_programs) << p.network().str();
    const std::vector<HostTensor> g = run_plan(p, inputs, std::shared_ptr<Backend>(make_cuda_backend()));
    for (size_t i = 0; i < g.size(); ++i) expect_close(g[i], want[i], precision == Precision::kFP32 ? 2e-5f : 3e-2f);
  }
  return programs;
}

TEST(FuseRows, RmsNormIsOneProgram) {
  for (int64_t r : {2, 7, 64, 96, 768, 1000, 2048, 5000}) {
    auto make = [r] {
      Network net;
      Tensor* x = net.add_input("x", DataType::kFloat32, {3, 5, r});
      net.mark_output(rms_norm(net, "rms", x, 3), "y");
      return net;
    };
    expect_same(make, {3, 5, r}, 1);
    const std::string rows = std::to_string(r);
    // As written: square, mean over the row, + eps, rsqrt, scale, weight.
    EXPECT_TRUE(filecheck(build(make(), no_opt()).network().str(), R"(
      CHECK:      %rms_sq: f32[3, 5, )" + rows + R"(] = Elementwise[mul](%x, %x)
      CHECK-NEXT: %rms_mean: f32[3, 5, 1] = Reduce[mean axes=2 keep](%rms_sq)
      CHECK-NEXT: %rms_eps: f32[1] = Constant[f32[1]]()
      CHECK-NEXT: %rms_add: f32[3, 5, 1] = Elementwise[add](%rms_mean, %rms_eps)
      CHECK-NEXT: %rms_rsqrt: f32[3, 5, 1] = Unary[rsqrt](%rms_add)
      CHECK-NEXT: %rms_scale: f32[3, 5, )" + rows + R"(] = Elementwise[mul](%x, %rms_rsqrt)
      CHECK-NEXT: %rms_w: f32[)" + rows + R"(] = Constant
      CHECK-NEXT: %rms_weight: f32[3, 5, )" + rows + R"(] = Elementwise[mul](%rms_w, %rms_scale)
    )"));
    // Fused: one row program reading x and the weight (eps inlined; its constant is left unread).
    BuilderConfig fused = no_opt();
    fused.fuse_rows = true;
    Plan plan = build(make(), fused);
    EXPECT_TRUE(filecheck(plan.network().str(), R"(
      CHECK:      input %x: f32[3, 5, )" + rows + R"(]
      CHECK-NEXT: %rms_eps: f32[1] = Constant[f32[1]]()
      CHECK-NEXT: %rms_w: f32[)" + rows + R"(] = Constant
      CHECK-NEXT: %rows_rms_mean: f32[3, 5, )" + rows + R"(] = FusedPointwise[
      CHECK-SAME: instrs, rows of )" + rows + R"(](%x, %rms_w)
      CHECK-NEXT: output y = %rows_rms_mean
    )"));
  }
}

// A pre-norm block: h = x + residual feeds the norm and is also needed later (two outputs); the
// norm's scale and bias, a cast and a scale before a softmax, and the softmax's consumer.
TEST(FuseRows, LayerNormResidualAndSoftmaxChain) {
  for (int64_t r : {48, 384, 1536}) {
    auto make = [r] {
      Network net;
      Tensor* x = net.add_input("x", DataType::kFloat32, {4, 6, r});
      Tensor* h = binary(net, "residual", x, constant(net, "skip", {4, 6, r}, 5), BinaryOp::kAdd);
      NormalizationParams np;
      np.first_axis = 2;
      np.epsilon = 1e-5;
      np.has_scale = np.has_bias = true;
      Tensor* n = net.add_normalization("ln", {h, constant(net, "g", {r}, 6), constant(net, "b", {r}, 7)}, np)->output();
      Tensor* s = binary(net, "temperature", n, constant(net, "t", {1}, 0, 0.7f, 0.7f), BinaryOp::kMul);
      Tensor* p = net.add_softmax("softmax", s, 2)->output();
      Tensor* l = net.add_softmax("log_softmax", n, -1, true)->output();
      net.mark_output(binary(net, "mix", p, l, BinaryOp::kAdd), "y");
      net.mark_output(net.add_matmul("later", h, constant(net, "w", {r, 8}, 8))->output(), "z");
      return net;
    };
    expect_same(make, {4, 6, r}, 1);
  }
}

// Reductions whose per-row results leave the program ([..., 1] outputs), inputs broadcast along
// outer dims ([B, 1, R]) and per-row inputs ([B, L, 1]).
TEST(FuseRows, PerRowOutputsAndBroadcastInputs) {
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMin}) {
    auto make = [op] {
      Network net;
      Tensor* x = net.add_input("x", DataType::kFloat32, {2, 9, 40});
      Tensor* a = binary(net, "shift", x, constant(net, "per_batch", {2, 1, 40}, 12), BinaryOp::kSub);
      Tensor* b = binary(net, "per_row", a, constant(net, "row_scale", {2, 9, 1}, 13), BinaryOp::kMul);
      Tensor* m = reduce_last(net, "reduce", b, op);
      net.mark_output(m, "m");
      net.mark_output(binary(net, "centre", b, m, BinaryOp::kSub), "y");
      return net;
    };
    expect_same(make, {2, 9, 40}, 1);
  }
}

// A consumer whose other input depends on the group through a layer outside it must stay out:
// fusing it would make the fused layer wait for itself.
TEST(FuseRows, PathsLeavingAndReenteringTheGroupStayUnfused) {
  auto make = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {5, 32});
    NormalizationParams np;
    np.first_axis = 1;
    Tensor* n = net.add_normalization("ln", {x}, np)->output();
    Tensor* g = net.add_activation("gelu", n, ActivationOp::kGeluErf)->output();
    Tensor* proj = net.add_matmul("proj", g, constant(net, "w", {32, 32}, 21))->output();
    net.mark_output(binary(net, "back", proj, n, BinaryOp::kAdd), "y");
    return net;
  };
  expect_same(make, {5, 32}, 1);
  BuilderConfig fused = no_opt();
  fused.fuse_rows = true;
  Plan plan = build(make(), fused);
  // The norm and the gelu are one row program with both as outputs; the matmul and the add after
  // it stay outside.
  EXPECT_TRUE(filecheck(plan.network().str(), R"(
    CHECK:      %rows_ln:0: f32[5, 32], %rows_ln:1: f32[5, 32] = FusedPointwise[
    CHECK-SAME: instrs, rows of 32](%x)
    CHECK-NEXT: %proj: f32[5, 32] = MatMul[a b](%rows_ln:1, %w)
    CHECK-NEXT: %back: f32[5, 32] = Elementwise[add](%proj, %rows_ln:0)
    CHECK-NEXT: output y = %back
  )"));
}

// Random chains: a norm, softmax or reduction seed with random pointwise layers before and after,
// over random row lengths and outer shapes.
TEST(FuseRows, RandomChains) {
  std::mt19937 rng(1234);
  const int64_t lengths[] = {3, 16, 33, 100, 256, 520, 1024, 3000};
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t r = lengths[rng() % 8], b = 1 + rng() % 3, l = 1 + rng() % 7;
    const int seed_kind = int(rng() % 3), before = int(rng() % 3), after = int(rng() % 3);
    const uint32_t s = rng();
    auto make = [=] {
      std::mt19937 g(s);
      Network net;
      Tensor* t = net.add_input("x", DataType::kFloat32, {b, l, r});
      auto pointwise = [&](const std::string& name) {
        switch (g() % 4) {
          case 0: t = binary(net, name, t, constant(net, name + "_c", {r}, g()), BinaryOp::kAdd); break;
          case 1: t = net.add_activation(name, t, ActivationOp::kSilu)->output(); break;
          case 2: t = binary(net, name, t, constant(net, name + "_c", {b, 1, r}, g(), 0.5f, 1.5f), BinaryOp::kMul); break;
          default: t = net.add_unary(name, t, UnaryOp::kTanh)->output(); break;
        }
      };
      for (int i = 0; i < before; ++i) pointwise("pre" + std::to_string(i));
      if (seed_kind == 0) {
        NormalizationParams np;
        np.first_axis = 2;
        np.has_scale = true;
        t = net.add_normalization("ln", {t, constant(net, "g", {r}, g())}, np)->output();
      } else if (seed_kind == 1) {
        t = net.add_softmax("softmax", t, 2)->output();
      } else {
        t = rms_norm(net, "rms", t, g());
      }
      for (int i = 0; i < after; ++i) pointwise("post" + std::to_string(i));
      net.mark_output(t, "y");
      return net;
    };
    SCOPED_TRACE("trial " + std::to_string(trial) + ": rows of " + std::to_string(r));
    const size_t alone = seed_kind != 2 && before + after == 0;  // a lone norm or softmax keeps its own kernel
    expect_same(make, {b, l, r}, alone ? 0 : 1, s);
  }
}

// The generated row kernels compile (NVRTC needs no GPU): warp- and block-wide rows, vector and
// element accesses, fp32 and fp16, per-row outputs.
TEST(FuseRows, RowKernelsCompileForHopper) {
  const std::vector<int> archs = cuda_supported_archs();
  if (std::find(archs.begin(), archs.end(), 90) == archs.end()) GTEST_SKIP() << "no NVRTC for sm_90 in this build";
  for (int64_t r : {7, 96, 2048, 5000})
    for (Precision p : {Precision::kFP32, Precision::kFP16}) {
      auto make = [r] {
        Network net;
        Tensor* x = net.add_input("x", DataType::kFloat32, {3, 5, r});
        Tensor* y = rms_norm(net, "rms", x, 3);
        net.mark_output(y, "y");
        net.mark_output(reduce_last(net, "max", y, ReduceOp::kMax), "m");
        return net;
      };
      BuilderConfig cfg;
      cfg.device = DeviceKind::kCUDA;
      cfg.cuda_arch = 90;
      cfg.precision = p;
      Plan plan = build(make(), cfg);
      EXPECT_GE(row_programs(plan.network()), 1u) << plan.network().str();
#ifdef KILN_HAS_CUDA
      EXPECT_FALSE(plan.impl().device_code.empty());
#endif
    }
}

TEST(FuseRows, PlansRefuseMalformedRowPrograms) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {4, 8});
  FusedPointwiseParams p;
  PointwiseInstr sum{};
  sum.kind = PointwiseInstr::Kind::kRowReduce;
  sum.reduce = ReduceOp::kSum;
  sum.dtype = DataType::kFloat32;
  sum.operands = {0};
  p.program = {sum};
  p.outputs = {1};
  EXPECT_THROW(net.add_layer("no_rows", {x}, p), NetworkError);  // a row reduction outside a row program
  p.row_length = 7;
  EXPECT_THROW(net.add_layer("wrong_rows", {x}, p), NetworkError);  // rows of 7 over a last dim of 8
  p.row_length = 8;
  p.program[0].reduce = ReduceOp::kArgMax;
  EXPECT_THROW(net.add_layer("argmax", {x}, p), NetworkError);
  p.program[0].reduce = ReduceOp::kMax;
  Layer* ok = net.add_layer("max", {x}, p);
  EXPECT_EQ(to_string(ok->output()->shape()), "[4, 1]");
}

}  // namespace
}  // namespace kiln::engine
