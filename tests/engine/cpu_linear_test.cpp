// CPU kernels of the linear-algebra family against float64 references: matmul (transposes, batch
// broadcasting, fused bias + activation, empty dims), convolution and transposed convolution
// (1d/2d/3d, groups, depthwise, stride, padding, dilation), pooling (max with dilation and
// ceil_mode, average with count_include_pad and divisor_override, adaptive) and attention
// (masks, causal, scale). Runs through run_both: the direct kernels and the built pipeline.
#include <atomic>
#include <stdexcept>

#include "cpu_test_util.h"
#include "engine/cpu/onednn.h"
#include "engine/cpu/parallel.h"
#include "engine/cpu/winograd.h"
#include "engine/plan_impl.h"

namespace kiln::engine::cputest {
namespace {

struct MM { std::vector<int64_t> a, b; bool ta, tb; };

TEST(CpuMatMul, BatchedTransposedBroadcast) {
  const std::vector<MM> cases = {
      {{3, 4}, {4, 5}, false, false}, {{4, 3}, {4, 5}, true, false}, {{3, 4}, {5, 4}, false, true},
      {{2, 3, 4}, {4, 5}, false, false}, {{2, 1, 3, 4}, {3, 4, 5}, false, false}, {{2, 4, 3}, {2, 5, 4}, true, true},
      {{0, 4}, {4, 5}, false, false}, {{3, 0}, {0, 5}, false, false}, {{2, 37, 64}, {64, 48}, false, false},
      // One row or one column: the GEMV paths, every transpose.
      {{1, 70}, {70, 33}, false, false}, {{1, 70}, {33, 70}, false, true}, {{70, 1}, {70, 33}, true, false},
      {{70, 1}, {33, 70}, true, true}, {{33, 70}, {70, 1}, false, false}, {{70, 33}, {70, 1}, true, false},
      {{33, 70}, {1, 70}, false, true}, {{70, 33}, {1, 70}, true, true}, {{3, 1, 70}, {70, 9}, false, false},
      {{1, 1}, {1, 1}, false, false},
  };
  for (DataType t : float_types())
    for (const auto& c : cases) {
      Host a = random_host(t, c.a, 1), b = random_host(t, c.b, 2);
      auto make = [&](Network& net) {
        auto* x = net.add_input("a", t, shape_of(c.a));
        auto* y = net.add_input("b", t, shape_of(c.b));
        net.mark_output(net.add_matmul("mm", x, y, c.ta, c.tb)->output(), "out");
      };
      auto out = run_both(make, {a, b});
      const size_t ra = c.a.size(), rb = c.b.size();
      const int64_t M = c.ta ? c.a[ra - 1] : c.a[ra - 2], K = c.ta ? c.a[ra - 2] : c.a[ra - 1];
      const int64_t N = c.tb ? c.b[rb - 2] : c.b[rb - 1];
      auto batch = bcast_dims({c.a.begin(), c.a.end() - 2}, {c.b.begin(), c.b.end() - 2});
      auto od = batch;
      od.push_back(M);
      od.push_back(N);
      ASSERT_EQ(out[0].dims, od);
      std::vector<int64_t> ab(c.a.begin(), c.a.end() - 2), bb(c.b.begin(), c.b.end() - 2);
      std::vector<double> want;
      for (int64_t i = 0; i < out[0].numel(); ++i) {
        auto idx = unravel(i, od);
        std::vector<int64_t> bi(idx.begin(), idx.end() - 2);
        int64_t m = idx[idx.size() - 2], n = idx.back();
        int64_t ao = (ab.empty() ? 0 : bcast_index(bi, ab)) * M * K, bo = (bb.empty() ? 0 : bcast_index(bi, bb)) * K * N;
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += a.get(ao + (c.ta ? k * M + m : m * K + k)) * b.get(bo + (c.tb ? n * K + k : k * N + n));
        want.push_back(s);
      }
      double tol = tolerance(t) * 4;
      expect_close(out[0], want, tol, tol * 4, std::string("matmul ") + to_string(t));
    }
}

TEST(CpuMatMul, FusedBiasAndActivation) {
  for (DataType t : {DataType::kFloat32, DataType::kBFloat16}) {
    Host a = random_host(t, {2, 3, 8}, 1), b = random_host(t, {8, 6}, 2), bias = random_host(t, {6}, 3);
    Network net;
    auto* x = net.add_input("a", t, {2, 3, 8});
    auto* y = net.add_input("b", t, {8, 6});
    auto* z = net.add_input("bias", t, {6});
    MatMulParams p;
    p.has_bias = true;
    p.activation = ActivationParams{ActivationOp::kRelu};
    net.mark_output(net.add_layer("mm", {x, y, z}, p)->output(), "out");
    auto out = run_direct(net, {a, b, bias});
    std::vector<double> want;
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t n = 0; n < 6; ++n) {
        double s = bias.get(n);
        for (int64_t k = 0; k < 8; ++k) s += a.get(r * 8 + k) * b.get(k * 6 + n);
        want.push_back(std::max(s, 0.0));
      }
    expect_close(out[0], want, tolerance(t) * 4, tolerance(t) * 8, std::string("mm+bias+relu ") + to_string(t));
  }
}

// `make`'s network run on kiln's own kernels (KILN_CPU_ONEDNN=0): the reference the oneDNN paths
// are held to.
std::vector<Host> without_onednn(const std::function<void(Network&)>& make, const std::vector<Host>& inputs) {
  ::setenv("KILN_CPU_ONEDNN", "0", 1);
  Network net;
  make(net);
  std::vector<Host> out = run_direct(net, inputs);
  ::unsetenv("KILN_CPU_ONEDNN");
  return out;
}

// Linear layers on oneDNN's matmul (cpu::onednn_matmul): fp32 against constant weights, and bf16 always (AMX / AVX-512-BF16 where the processor has them);
// against kiln's OpenBLAS path, across row counts, weight layouts (a Linear's weight broadcast to
// A's rank too), constant and computed weights, bias, residual, fused and unfused activations, and
// a second run on the cached primitive.
TEST(CpuMatMul, LinearOnOneDnnMatchesOpenBlas) {
  if (!cpu::have_onednn()) GTEST_SKIP() << "kiln built without oneDNN";
  const DataType f32 = DataType::kFloat32, bf16 = DataType::kBFloat16;
  struct Case {
    DataType dtype;
    std::vector<int64_t> a;
    int64_t n;
    bool transpose_b, bias, residual, constant_b, rank3_b;
    std::optional<ActivationOp> act;
    bool onednn;  // whether oneDNN must take it
  };
  const Case cases[] = {
      {f32, {1, 64}, 48, true, true, false, true, false, ActivationOp::kGeluErf, true},
      {f32, {8, 96}, 40, false, false, false, true, false, std::nullopt, true},
      {f32, {2, 4, 32}, 24, true, true, false, true, true, ActivationOp::kRelu, true},  // batch folded into rows
      {f32, {3, 50}, 17, true, true, false, true, false, ActivationOp::kSoftplus, true},  // activation after oneDNN
      {f32, {64, 16}, 8, false, true, true, true, false, std::nullopt, true},
      {f32, {300, 40}, 24, false, true, false, true, false, ActivationOp::kGeluErf, true},  // many rows
      {f32, {4, 197, 48}, 64, true, true, true, true, false, std::nullopt, true},          // tokens x batch
      {f32, {8, 16}, 8, false, false, false, false, false, std::nullopt, false},  // computed weights: OpenBLAS
      {bf16, {1, 128, 64}, 96, true, true, true, true, true, ActivationOp::kRelu, true},
      {bf16, {200, 48}, 40, false, true, false, true, false, ActivationOp::kGeluTanh, true},
      {bf16, {16, 32}, 24, true, false, true, false, false, std::nullopt, true},  // computed weights
      {bf16, {4, 32}, 24, true, true, false, true, false, ActivationOp::kSoftplus, false},  // unfusable: kiln's path
      {bf16, {6, 32}, 24, true, true, false, true, false, ActivationOp::kMish, true},       // oneDNN's eltwise_mish
      {f32, {5, 40}, 16, false, true, true, true, false, ActivationOp::kHardSwish, true},
      {bf16, {7, 32}, 20, true, false, false, true, false, ActivationOp::kHardSwish, true},
  };
  for (size_t ci = 0; ci < std::size(cases); ++ci) {
    const Case& c = cases[ci];
    const int64_t k = c.a.back();
    std::vector<int64_t> wdims = c.transpose_b ? std::vector<int64_t>{c.n, k} : std::vector<int64_t>{k, c.n};
    if (c.rank3_b) wdims.insert(wdims.begin(), 1);
    std::vector<int64_t> ydims = c.a;
    ydims.back() = c.n;
    Host a = random_host(c.dtype, c.a, 60 + uint32_t(ci)), w = random_host(c.dtype, wdims, 61, -0.3, 0.3);
    Host b = random_host(c.dtype, {c.n}, 62), r = random_host(c.dtype, ydims, 63);
    std::vector<Host> inputs{a};
    if (!c.constant_b) inputs.push_back(w);
    if (c.residual) inputs.push_back(r);
    auto make = [&](Network& net) {
      MatMulParams p;
      p.transpose_b = c.transpose_b;
      p.has_bias = c.bias;
      p.has_residual = c.residual;
      if (c.act) p.activation = ActivationParams{*c.act};
      std::vector<Tensor*> in{net.add_input("a", c.dtype, shape_of(a.dims)),
                              c.constant_b ? constant(net, w, "w") : net.add_input("w", c.dtype, shape_of(w.dims))};
      if (c.bias) in.push_back(constant(net, b, "b"));
      if (c.residual) in.push_back(net.add_input("r", c.dtype, shape_of(r.dims)));
      net.mark_output(net.add_layer("mm", in, p)->output(), "y");
    };
    const std::string what = std::string("oneDNN matmul case ") + std::to_string(ci) + " " + to_string(c.dtype);
    const std::vector<Host> want = without_onednn(make, inputs);
    const uint64_t before = cpu::onednn_executions();
    Network net;
    make(net);
    const std::vector<Host> got = run_direct(net, inputs);
    if (c.onednn) EXPECT_GT(cpu::onednn_executions(), before) << what << ": oneDNN did not run it";
    else EXPECT_EQ(cpu::onednn_executions(), before) << what << ": oneDNN ran it";
    ASSERT_EQ(got[0].dims, want[0].dims) << what;
    // bf16: both accumulate in fp32 and round once; the sums' order differs.
    const double tol = c.dtype == bf16 ? 2 * tolerance(bf16) : 1e-4;
    expect_close(got[0], want[0].values(), tol, tol, what);
    expect_close(run_direct(net, inputs)[0], want[0].values(), tol, tol, what + " (cached)");
  }
}

// A layer norm right after oneDNN work (here a linear layer on oneDNN) runs on oneDNN's layer
// normalization, on the threads that just ran the matmul; same results as kiln's loop, fp32 and
// bf16, with and without the affine parameters.
TEST(CpuMatMul, LayerNormAfterOneDnnRunsOnItsTeam) {
  if (!cpu::have_onednn()) GTEST_SKIP() << "kiln built without oneDNN";
  for (DataType dt : {DataType::kFloat32, DataType::kBFloat16})
    for (bool affine : {true, false}) {
      Host a = random_host(dt, {2, 24, 64}, 70), w = random_host(dt, {96, 64}, 71, -0.3, 0.3);
      Host gamma = random_host(dt, {96}, 72, 0.5, 1.5), beta = random_host(dt, {96}, 73);
      auto make = [&](Network& net) {
        MatMulParams mp;
        mp.transpose_b = true;
        Tensor* h = net.add_layer("mm", {net.add_input("a", dt, shape_of(a.dims)), constant(net, w, "w")}, mp)->output();
        NormalizationParams np;
        np.first_axis = 2;
        np.has_scale = np.has_bias = affine;
        std::vector<Tensor*> in{h};
        if (affine) in.insert(in.end(), {constant(net, gamma, "gamma"), constant(net, beta, "beta")});
        net.mark_output(net.add_layer("ln", in, np)->output(), "y");
      };
      const std::string what = std::string("layer norm after oneDNN ") + to_string(dt) + (affine ? " affine" : "");
      const std::vector<Host> want = without_onednn(make, {a});
      Network net;
      make(net);
      // "Right after" is within 20 ms: a run the scheduler delayed between the two layers may
      // take kiln's loop instead, so a few runs get the chance to show the oneDNN path.
      std::vector<Host> got;
      bool both_on_onednn = false;
      for (int attempt = 0; attempt < 3 && !both_on_onednn; ++attempt) {
        const uint64_t before = cpu::onednn_executions();
        got = run_direct(net, {a});
        both_on_onednn = cpu::onednn_executions() == before + 2;
      }
      EXPECT_TRUE(both_on_onednn) << what << ": the matmul and the norm on oneDNN";
      const double tol = dt == DataType::kBFloat16 ? 2 * tolerance(dt) : 1e-4;
      expect_close(got[0], want[0].values(), tol, tol, what);
    }
}

struct Conv {
  std::vector<int64_t> x, w;
  std::vector<int64_t> stride, pad, dil, out_pad;
  int64_t groups;
  bool transposed, bias;
};

// Reference convolution over any spatial rank.
std::vector<double> ref_conv(const Conv& c, const Host& x, const Host& w, const Host* b, const std::vector<int64_t>& od) {
  const size_t S = c.x.size() - 2;
  const int64_t G = c.groups;
  std::vector<double> y(size_t(std::max<int64_t>(1, [&] { int64_t n = 1; for (auto d : od) n *= d; return n; }())), 0.0);
  const int64_t total = [&] { int64_t n = 1; for (auto d : od) n *= d; return n; }();
  y.resize(size_t(total));
  if (!c.transposed) {
    const int64_t cg = c.x[1] / G, og = c.w[0] / G;
    std::vector<int64_t> kd(c.w.begin() + 2, c.w.end());
    int64_t kvol = 1;
    for (auto k : kd) kvol *= k;
    for (int64_t i = 0; i < total; ++i) {
      auto idx = unravel(i, od);
      int64_t n = idx[0], oc = idx[1], g = oc / og;
      double s = b ? b->get(oc) : 0;
      for (int64_t ci = 0; ci < cg; ++ci)
        for (int64_t kk = 0; kk < kvol; ++kk) {
          auto kidx = unravel(kk, kd);
          std::vector<int64_t> xi{n, g * cg + ci};
          bool inside = true;
          for (size_t d = 0; d < S; ++d) {
            int64_t p = idx[2 + d] * c.stride[d] - c.pad[d] + kidx[d] * c.dil[d];
            inside &= p >= 0 && p < c.x[2 + d];
            xi.push_back(p);
          }
          if (!inside) continue;
          std::vector<int64_t> wi{oc, ci};
          wi.insert(wi.end(), kidx.begin(), kidx.end());
          s += x.get(ravel(xi, c.x)) * w.get(ravel(wi, c.w));
        }
      y[size_t(i)] = s;
    }
  } else {
    // scatter form: every input element adds weight * x to the outputs it touches
    const int64_t cg = c.x[1] / G, og = c.w[1];
    std::vector<int64_t> kd(c.w.begin() + 2, c.w.end());
    int64_t kvol = 1;
    for (auto k : kd) kvol *= k;
    for (int64_t i = 0; i < x.numel(); ++i) {
      auto xi = unravel(i, c.x);
      int64_t n = xi[0], ci = xi[1], g = ci / cg;
      for (int64_t o = 0; o < og; ++o)
        for (int64_t kk = 0; kk < kvol; ++kk) {
          auto kidx = unravel(kk, kd);
          std::vector<int64_t> yi{n, g * og + o};
          bool inside = true;
          for (size_t d = 0; d < S; ++d) {
            int64_t p = xi[2 + d] * c.stride[d] - c.pad[d] + kidx[d] * c.dil[d];
            inside &= p >= 0 && p < od[2 + d];
            yi.push_back(p);
          }
          if (!inside) continue;
          std::vector<int64_t> wi{ci, o};
          wi.insert(wi.end(), kidx.begin(), kidx.end());
          y[size_t(ravel(yi, od))] += x.get(i) * w.get(ravel(wi, c.w));
        }
    }
    if (b)
      for (int64_t i = 0; i < total; ++i) y[size_t(i)] += b->get(unravel(i, od)[1]);
  }
  return y;
}

// The memory plan of a CPU network gives a convolution's output its residual's buffer where the
// residual dies there (oneDNN adds it with a sum post-op, in place): not where the residual is
// read later, or is the convolution's own input, or for a CUDA plan of a 3x3 convolution.
TEST(CpuConvolution, ResidualBufferTakenInPlace) {
  Host w = random_host(DataType::kFloat32, {8, 8, 3, 3}, 95, -0.3, 0.3);
  const ConvolutionParams plain = conv2d_params(1, 1, 1, 1, false, false, false, std::nullopt);
  const ConvolutionParams with_residual = conv2d_params(1, 1, 1, 1, false, false, true, std::nullopt);
  enum Use { kDies, kReadLater, kOwnInput, kWeightsView };
  for (Use shape : {kDies, kReadLater, kOwnInput, kWeightsView}) {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {1, 8, 6, 6});
    Tensor* a = net.add_layer("a", {x, constant(net, w, "w1")}, plain)->output();
    Tensor* y = nullptr;
    if (shape == kWeightsView) {  // a 1x1 convolution whose computed weights are the residual's bytes
      Tensor* wide = net.add_input("wide", DataType::kFloat32, {1, 36, 6, 6});
      ShuffleParams reshape;
      reshape.reshape = Shape{8, 36, 1, 1};
      Tensor* weights = net.add_shuffle("a_as_weights", a, reshape)->output();
      y = net.add_layer("y", {wide, weights, a}, conv2d_params(1, 0, 1, 1, false, false, true, std::nullopt))->output();
    } else {
      y = net.add_layer("y", {shape == kOwnInput ? a : x, constant(net, w, "w2"), a}, with_residual)->output();
    }
    net.mark_output(y, "y");
    if (shape == kReadLater) net.mark_output(net.add_elementwise("later", a, y, BinaryOp::kAdd)->output(), "z");
    std::map<int, int> cpu, cuda;
    std::map<int, Lifetime> life, cuda_life;
    compute_buffer_plan(net, DeviceKind::kCPU, &life, &cpu);
    compute_buffer_plan(net, DeviceKind::kCUDA, &cuda_life, &cuda);
    EXPECT_FALSE(cuda.count(y->id())) << "a CUDA plan (a 3x3 convolution writes before its epilogue)";
    if (shape == kDies) {
      ASSERT_TRUE(cpu.count(y->id()));
      EXPECT_EQ(cpu.at(y->id()), a->id());
      EXPECT_FALSE(life.count(y->id())) << "no buffer of its own";
      EXPECT_EQ(life.at(a->id()).last, int(net.layers().size())) << "a's buffer lives on as y, a network output";
    } else {
      EXPECT_FALSE(cpu.count(y->id())) << (shape == kReadLater ? "a is read later"
                                           : shape == kOwnInput ? "a is the convolution's input"
                                                                : "a is the convolution's weights");
    }
  }
}

// Convolutions whose output holds their residual (the plan above) compute what they would in
// buffers of their own: through oneDNN's sum post-op and through kiln's own kernels, fp32 and bf16,
// NCHW (the builder lays them out channels last) and channels last.
TEST(CpuConvolution, ResidualInPlaceMatchesSeparateBuffers) {
  for (const char* onednn : {"1", "0"})
    for (DataType dt : {DataType::kFloat32, DataType::kBFloat16})
      for (bool channels_last : {false, true}) {
        const std::vector<int64_t> xd = channels_last ? std::vector<int64_t>{2, 7, 7, 16} : std::vector<int64_t>{2, 16, 7, 7};
        const std::vector<int64_t> wd = channels_last ? std::vector<int64_t>{16, 3, 3, 16} : std::vector<int64_t>{16, 16, 3, 3};
        Host x = random_host(dt, xd, 96), w1 = random_host(dt, wd, 97, -0.2, 0.2), w2 = random_host(dt, wd, 98, -0.2, 0.2);
        Host b = random_host(dt, {16}, 99);
        auto make = [&](Network& net) {
          Tensor* in = net.add_input("x", dt, shape_of(xd));
          Tensor* a = net.add_layer("a", {in, constant(net, w1, "w1")},
                                    conv2d_params(1, 1, 1, 1, channels_last, false, false, ActivationParams{ActivationOp::kRelu}))->output();
          const ConvolutionParams p = conv2d_params(1, 1, 1, 1, channels_last, true, true, ActivationParams{ActivationOp::kRelu});
          net.mark_output(net.add_layer("y", {in, constant(net, w2, "w2"), constant(net, b, "b"), a}, p)->output(), "y");
        };
        const std::string what = std::string("oneDNN=") + onednn + " " + to_string(dt) + (channels_last ? " NHWC" : " NCHW");
        const std::vector<Host> want = without_onednn(make, {x});  // direct: every tensor its own buffer
        ::setenv("KILN_CPU_ONEDNN", onednn, 1);
        Network net;
        make(net);
        const std::vector<Host> got = run_pipeline(std::move(net), {x});
        ::unsetenv("KILN_CPU_ONEDNN");
        const double tol = dt == DataType::kBFloat16 ? 4 * tolerance(dt) : 1e-4;
        expect_close(got[0], want[0].values(), tol, tol, what);
      }
}

// kiln's own loops right after a oneDNN convolution (a squeeze-excite scale and a max pooling of
// its channels-last output) run on oneDNN's busy OpenMP team rather than kiln's pool, whose
// workers would fight its spinning threads for the cores; the results match the run without
// oneDNN.
TEST(CpuConvolution, LoopsAfterOneDnnRunOnItsTeam) {
  if (!cpu::have_onednn() || cpu::max_threads() < 2) GTEST_SKIP() << "needs oneDNN and 2 threads";
  Host x = random_host(DataType::kFloat32, {2, 96, 96, 16}, 80), w = random_host(DataType::kFloat32, {32, 3, 3, 16}, 81, -0.3, 0.3);
  Host scale = random_host(DataType::kFloat32, {2, 1, 1, 32}, 82);
  auto make = [&](Network& net) {
    const ConvolutionParams cp = conv2d_params(1, 1, 1, 1, true, false, false, std::nullopt);
    Tensor* y = net.add_layer("conv", {net.add_input("x", DataType::kFloat32, shape_of(x.dims)), constant(net, w, "w")}, cp)->output();
    Tensor* se = net.add_elementwise("se", y, net.add_input("s", DataType::kFloat32, shape_of(scale.dims)), BinaryOp::kMul)->output();
    PoolingParams pp;
    pp.kernel = pp.stride = {2, 2};
    pp.channels_last = true;
    net.mark_output(net.add_pooling("pool", se, pp)->output(), "y");
  };
  const std::vector<Host> want = without_onednn(make, {x, scale});
  Network net;
  make(net);
  // As above: a run the scheduler delayed past the team's hot window takes kiln's pool instead.
  std::vector<Host> got;
  bool on_team = false;
  for (int attempt = 0; attempt < 3 && !on_team; ++attempt) {
    const uint64_t before = cpu::onednn_parallel_loops();
    got = run_direct(net, {x, scale});
    on_team = cpu::onednn_parallel_loops() >= before + 2;
  }
  EXPECT_TRUE(on_team) << "the scale and the pooling on oneDNN's team";
  expect_close(got[0], want[0].values(), 1e-5, 1e-5, "conv, scale, pool");
}

// parallel_chunks on the busy team: every index once, nested loops inline, a chunk's exception
// reaches the caller.
TEST(CpuConvolution, ChunksOnTheBusyTeam) {
  if (!cpu::have_onednn() || cpu::max_threads() < 2) GTEST_SKIP() << "needs oneDNN and 2 threads";
  Host x = random_host(DataType::kFloat32, {1, 8, 8, 4}, 83), w = random_host(DataType::kFloat32, {4, 3, 3, 4}, 84);
  Network net;
  const ConvolutionParams cp = conv2d_params(1, 1, 1, 1, true, false, false, std::nullopt);
  net.mark_output(net.add_layer("conv", {net.add_input("x", DataType::kFloat32, {1, 8, 8, 4}), constant(net, w)}, cp)->output(), "y");
  bool ran_on_team = false;
  for (int attempt = 0; attempt < 3 && !ran_on_team; ++attempt) {
    run_direct(net, {x});  // the team is hot now
    const uint64_t before = cpu::onednn_parallel_loops();
    std::vector<std::atomic<int>> seen(1000);
    cpu::parallel_chunks(1000, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        cpu::parallel_for(2, true, [&](int64_t j) { if (j == 0) ++seen[size_t(i)]; });
      }
    });
    ran_on_team = cpu::onednn_parallel_loops() > before;
    for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << "index " << i;
    if (!ran_on_team) continue;
    run_direct(net, {x});
    EXPECT_THROW(cpu::parallel_chunks(8, [](int64_t lo, int64_t) {
                   if (lo > 0) throw std::runtime_error("chunk failed");
                 }),
                 std::runtime_error);
  }
  EXPECT_TRUE(ran_on_team);
}

TEST(CpuConvolution, ForwardAndTransposed) {
  const std::vector<Conv> cases = {
      {{2, 3, 9, 8}, {4, 3, 3, 3}, {1, 1}, {1, 1}, {1, 1}, {}, 1, false, true},
      {{1, 4, 10, 7}, {6, 2, 3, 2}, {2, 1}, {1, 0}, {2, 1}, {}, 2, false, true},
      {{2, 6, 7, 7}, {6, 1, 3, 3}, {2, 2}, {1, 1}, {1, 1}, {}, 6, false, false},     // depthwise
      {{1, 4, 9, 8}, {4, 1, 3, 3}, {1, 1}, {2, 3}, {2, 2}, {}, 4, false, true},      // depthwise, dilated, wide padding
      {{2, 3, 5, 5}, {12, 1, 3, 3}, {1, 1}, {0, 0}, {1, 1}, {}, 3, false, true},    // channel multiplier
      {{1, 8, 6, 5}, {5, 8, 1, 1}, {1, 1}, {0, 0}, {1, 1}, {}, 1, false, true},     // 1x1
      {{2, 3, 11}, {4, 3, 4}, {2}, {1}, {2}, {}, 1, false, true},                   // 1d
      {{1, 2, 4, 5, 6}, {3, 2, 2, 3, 2}, {1, 2, 1}, {1, 0, 1}, {1, 1, 2}, {}, 1, false, true},  // 3d
      {{2, 4, 5, 4}, {4, 3, 3, 3}, {2, 2}, {1, 0}, {1, 1}, {1, 0}, 1, true, true},  // transposed
      {{1, 4, 3, 3}, {4, 2, 2, 3}, {1, 2}, {0, 1}, {2, 1}, {0, 1}, 2, true, false}, // grouped transposed
      {{1, 2, 6}, {2, 3, 3}, {3}, {1}, {1}, {2}, 1, true, true},                     // 1d transposed
      {{0, 3, 5, 5}, {4, 3, 3, 3}, {1, 1}, {0, 0}, {1, 1}, {}, 1, false, true},     // empty batch
      {{1, 2, 5, 6}, {3, 2, 3, 3}, {2, 3}, {3, 4}, {1, 2}, {}, 1, false, true},     // padding wider than the kernel
      {{2, 3, 7, 9}, {4, 3, 3, 3}, {1, 2}, {1, 1}, {1, 1}, {}, 1, false, true},     // stride 2 along the row
  };
  for (DataType t : float_types())
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const Conv& c = cases[ci];
      const int64_t oc = c.transposed ? c.w[1] * c.groups : c.w[0];
      Host x = random_host(t, c.x, 1 + uint32_t(ci)), w = random_host(t, c.w, 50 + uint32_t(ci), -1, 1);
      Host b = random_host(t, {oc}, 99);
      auto make = [&](Network& net) {
        auto* in = net.add_input("x", t, shape_of(c.x));
        ConvolutionParams p;
        p.stride = c.stride;
        p.padding = c.pad;
        p.dilation = c.dil;
        p.output_padding = c.out_pad;
        p.groups = c.groups;
        p.transposed = c.transposed;
        net.mark_output(net.add_convolution("conv", in, constant(net, w, "w"), c.bias ? constant(net, b, "b") : nullptr, p)->output(), "y");
      };
      auto out = run_both(make, {x});
      auto want = ref_conv(c, x, w, c.bias ? &b : nullptr, out[0].dims);
      double tol = tolerance(t) * 4;
      expect_close(out[0], want, tol, tol * 8, "conv case " + std::to_string(ci) + " " + to_string(t));
    }
}

// 3x3 convolutions with 128+ channels and enough tiles take Winograd F(2x2, 3x3): against a direct
// float convolution, odd output sizes (a last row/column of tiles hanging over) and paddings 0-2,
// called directly and through a convolution layer (with bias).
TEST(CpuConvolution, Winograd3x3) {
  auto direct = [](const std::vector<double>& x, const std::vector<double>& w, int64_t N, int64_t C, int64_t K,
                   int64_t H, int64_t W, int64_t pad) {
    const int64_t OH = H + 2 * pad - 2, OW = W + 2 * pad - 2;
    std::vector<double> y(size_t(N * K * OH * OW), 0.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t a = 0; a < 3; ++a)
            for (int64_t b = 0; b < 3; ++b) {
              const double wv = w[size_t(((k * C + c) * 3 + a) * 3 + b)];
              for (int64_t i = 0; i < OH; ++i) {
                const int64_t r = i - pad + a;
                if (r < 0 || r >= H) continue;
                for (int64_t j = 0; j < OW; ++j) {
                  const int64_t col = j - pad + b;
                  if (col >= 0 && col < W)
                    y[size_t(((n * K + k) * OH + i) * OW + j)] += wv * x[size_t(((n * C + c) * H + r) * W + col)];
                }
              }
            }
    return y;
  };
  struct Case { int64_t N, C, K, H, W, pad; };
  for (const Case& c : {Case{3, 128, 136, 17, 15, 1}, Case{2, 128, 128, 22, 21, 0}, Case{1, 160, 128, 27, 26, 2}}) {
    const int64_t OH = c.H + 2 * c.pad - 2, OW = c.W + 2 * c.pad - 2;
    const cpu::winograd::Shape shape{c.N, c.C, c.K, c.H, c.W, c.pad, c.pad, OH, OW};
    ASSERT_TRUE(cpu::winograd::worthwhile(shape)) << c.C << " " << c.H;
    Host x = random_host(DataType::kFloat32, {c.N, c.C, c.H, c.W}, 5), w = random_host(DataType::kFloat32, {c.K, c.C, 3, 3}, 6, -0.1, 0.1);
    const std::vector<double> xv = x.values(), wv = w.values();
    const std::vector<double> want = direct(xv, wv, c.N, c.C, c.K, c.H, c.W, c.pad);
    std::vector<float> xf(xv.begin(), xv.end()), wf(wv.begin(), wv.end());
    std::vector<float> y(size_t(c.N * c.K * OH * OW)), scratch(cpu::winograd::workspace_floats(shape));
    cpu::winograd::convolve(shape, xf.data(), wf.data(), y.data(), scratch.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], want[i], 1e-4 * (1 + std::abs(want[i]))) << "case C " << c.C << " at " << i;

    Host b = random_host(DataType::kFloat32, {c.K}, 7);
    auto out = run_both(
        [&](Network& net) {
          ConvolutionParams p;
          p.stride = {1, 1}; p.padding = {c.pad, c.pad}; p.dilation = {1, 1};
          net.mark_output(net.add_convolution("conv", net.add_input("x", DataType::kFloat32, shape_of(x.dims)),
                                              constant(net, w, "w"), constant(net, b, "b"), p)->output(), "y");
        },
        {x});
    std::vector<double> with_bias = want;
    for (size_t i = 0; i < with_bias.size(); ++i) with_bias[i] += b.get(int64_t(i / size_t(OH * OW)) % c.K);
    expect_close(out[0], with_bias, 1e-4, 1e-4, "winograd layer");
  }
}

TEST(CpuConvolution, FusedReluAndWorkspace) {
  Conv c{{1, 3, 8, 8}, {4, 3, 3, 3}, {1, 1}, {1, 1}, {1, 1}, {}, 1, false, true};
  Host x = random_host(DataType::kFloat32, c.x, 1), w = random_host(DataType::kFloat32, c.w, 2), b = random_host(DataType::kFloat32, {4}, 3);
  Network net;
  auto* in = net.add_input("x", DataType::kFloat32, shape_of(c.x));
  ConvolutionParams p;
  p.stride = c.stride; p.padding = c.pad; p.dilation = c.dil;
  p.activation = ActivationParams{ActivationOp::kRelu};
  Layer* l = net.add_convolution("conv", in, constant(net, w, "w"), constant(net, b, "b"), p);
  net.mark_output(l->output(), "y");
  // im2col's columns, unless oneDNN runs it (it needs none of kiln's workspace)
  EXPECT_EQ(cpu::workspace_bytes(*l, {x.view(), w.view(), b.view()}), cpu::have_onednn() ? 0 : size_t(3 * 9 * 64 * 4));
  ::setenv("KILN_CPU_ONEDNN", "0", 1);
  EXPECT_EQ(cpu::workspace_bytes(*l, {x.view(), w.view(), b.view()}), size_t(3 * 9 * 64 * 4));
  ::unsetenv("KILN_CPU_ONEDNN");
  auto out = run_direct(net, {x});
  auto want = ref_conv(c, x, w, &b, out[0].dims);
  for (auto& v : want) v = std::max(v, 0.0);
  expect_close(out[0], want, 1e-4, 1e-4, "conv+relu");
}

// Input and weights whose bytes start off a float boundary (a view at an odd offset into a larger
// buffer): the kernel reads an aligned copy (UBSan reports the misaligned float loads otherwise)
// and computes what it does from aligned ones.
TEST(CpuConvolution, MisalignedInputAndWeights) {
  // Depthwise: its kernel loads floats itself (im2col copies bytes and BLAS is not instrumented).
  Conv c{{1, 3, 6, 6}, {3, 1, 3, 3}, {1, 1}, {1, 1}, {1, 1}, {}, 3, false, false};
  Host x = random_host(DataType::kFloat32, c.x, 4), w = random_host(DataType::kFloat32, c.w, 5);
  Network net;
  auto* in = net.add_input("x", DataType::kFloat32, shape_of(c.x));
  auto* wt = net.add_input("w", DataType::kFloat32, shape_of(c.w));
  ConvolutionParams p;
  p.stride = c.stride; p.padding = c.pad; p.dilation = c.dil; p.groups = c.groups;
  Layer* l = net.add_convolution("conv", in, wt, nullptr, p);
  net.mark_output(l->output(), "y");
  // Copies of x and w one byte into their buffers.
  std::vector<uint8_t> xb(x.bytes.size() + 1), wb(w.bytes.size() + 1);
  std::memcpy(xb.data() + 1, x.bytes.data(), x.bytes.size());
  std::memcpy(wb.data() + 1, w.bytes.data(), w.bytes.size());
  TensorView xv = x.view(), wv = w.view();
  xv.data = xb.data() + 1;
  wv.data = wb.data() + 1;
  Host y(DataType::kFloat32, {1, 3, 6, 6});
  std::vector<TensorView> ins{xv, wv}, outs{y.view()};
  OutputAllocator no_alloc = [](size_t, const std::vector<int64_t>&) -> TensorView {
    throw std::runtime_error("static output");
  };
  const size_t ws = cpu::workspace_bytes(*l, ins);
  std::vector<uint8_t> workspace(ws);
  SymbolValues syms;
  LayerCall call{*l, ins, outs, no_alloc, workspace.data(), ws, &syms};
  cpu::execute(call);
  expect_close(y, ref_conv(c, x, w, nullptr, y.dims), 1e-4, 1e-4, "misaligned conv");
}

// oneDNN's convolutions (fp32, 2-d; what CPU networks run when kiln has oneDNN) against kiln's own
// kernels (KILN_CPU_ONEDNN=0; checked against float64 references above): NCHW and channels last,
// dense, grouped, depthwise, strided (an odd input: oneDNN's right padding differs from the
// left), dilated, 1x1, bias + residual + activation post-ops, an activation oneDNN lacks
// (hardswish, kiln's pass after it), weights as constants (reordered once, cached) and as network
// inputs (reordered per call). Each case must have run through oneDNN.
TEST(CpuConvolution, OneDnnMatchesKilnKernels) {
  if (!cpu::have_onednn()) GTEST_SKIP() << "kiln built without oneDNN";
  struct Case {
    int64_t n, cin, cout, h, w, k, stride, pad, dil, groups;
    bool bias, residual;
    std::optional<ActivationOp> act;
    bool channels_last, constant_weights;
  };
  const Case cases[] = {
      {2, 16, 32, 9, 9, 3, 1, 1, 1, 1, true, true, ActivationOp::kRelu, true, true},
      {1, 32, 32, 9, 9, 3, 2, 1, 1, 4, true, false, ActivationOp::kSilu, true, true},
      {1, 24, 24, 14, 14, 7, 1, 3, 1, 24, true, false, std::nullopt, true, true},
      {2, 16, 16, 10, 10, 3, 1, 2, 2, 1, false, false, ActivationOp::kGeluErf, true, true},
      {1, 8, 16, 12, 12, 5, 1, 2, 1, 1, true, false, ActivationOp::kHardSwish, true, true},
      {1, 3, 16, 17, 17, 7, 2, 3, 1, 1, true, false, ActivationOp::kRelu, false, true},
      {2, 16, 8, 9, 7, 3, 1, 1, 1, 1, true, true, ActivationOp::kClip, false, false},
      {1, 16, 32, 8, 8, 1, 2, 0, 1, 1, false, true, std::nullopt, true, false},
      {1, 12, 12, 6, 5, 3, 1, 1, 1, 12, false, true, ActivationOp::kSigmoid, true, false},
  };
  // bf16 too (AMX / AVX-512-BF16 where the processor has them), where oneDNN fuses the activation.
  const auto fusable = [](std::optional<ActivationOp> a) {
    return !a || (*a != ActivationOp::kHardSigmoid && *a != ActivationOp::kSoftplus);
  };
  for (const DataType dt : {DataType::kFloat32, DataType::kBFloat16})
  for (size_t ci = 0; ci < std::size(cases); ++ci) {
    const Case& c = cases[ci];
    const bool expect_onednn = dt == DataType::kFloat32 || fusable(c.act);
    const int64_t oh = (c.h + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
    const int64_t ow = (c.w + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
    const int64_t cg = c.cin / c.groups;
    auto dims = [&](int64_t n, int64_t ch, int64_t h, int64_t w) {
      return c.channels_last ? std::vector<int64_t>{n, h, w, ch} : std::vector<int64_t>{n, ch, h, w};
    };
    Host x = random_host(dt, dims(c.n, c.cin, c.h, c.w), 90 + uint32_t(ci));
    Host w = random_host(dt, c.channels_last ? std::vector<int64_t>{c.cout, c.k, c.k, cg}
                                              : std::vector<int64_t>{c.cout, cg, c.k, c.k}, 91, -0.5, 0.5);
    Host b = random_host(dt, {c.cout}, 92), r = random_host(dt, dims(c.n, c.cout, oh, ow), 93);
    std::vector<Host> inputs{x};
    if (!c.constant_weights) inputs.push_back(w);
    if (c.residual) inputs.push_back(r);
    auto make = [&](Network& net) {
      const ConvolutionParams p = conv2d_params(c.stride, c.pad, c.dil, c.groups, c.channels_last, c.bias, c.residual,
                                                c.act ? std::optional(ActivationParams{*c.act, 0.0, 6.0}) : std::nullopt);
      std::vector<Tensor*> in{net.add_input("x", dt, shape_of(x.dims))};
      in.push_back(c.constant_weights ? constant(net, w, "w") : net.add_input("w", dt, shape_of(w.dims)));
      if (c.bias) in.push_back(constant(net, b, "b"));
      if (c.residual) in.push_back(net.add_input("r", dt, shape_of(r.dims)));
      net.mark_output(net.add_layer("conv", in, p)->output(), "y");
    };
    const std::string what = "oneDNN conv case " + std::to_string(ci) + " " + to_string(dt);
    const std::vector<Host> want = without_onednn(make, inputs);
    const uint64_t before = cpu::onednn_executions();
    Network net;
    make(net);
    const std::vector<Host> got = run_direct(net, inputs);
    if (expect_onednn) EXPECT_GT(cpu::onednn_executions(), before) << what << ": oneDNN did not run it";
    else EXPECT_EQ(cpu::onednn_executions(), before) << what << ": oneDNN ran an activation it cannot fuse in bf16";
    ASSERT_EQ(got[0].dims, want[0].dims) << what;
    // bf16: both accumulate in fp32 and round the output once; the sums' order differs.
    const double tol = dt == DataType::kBFloat16 ? 2 * tolerance(DataType::kBFloat16) : 1e-4;
    expect_close(got[0], want[0].values(), tol, tol, what);
    // Twice through the same network: the cached primitive and reordered weights.
    expect_close(run_direct(net, inputs)[0], want[0].values(), tol, tol, what + " (cached)");
  }
}

// The Winograd tactic (oneDNN's Winograd kernels on blocked copies of the data) against kiln's own
// kernels: forced with KILN_CPU_CONV_TACTIC=winograd across channel counts that are and are not
// multiples of 16, batches, padding, bias, residuals (a separate input, and in place in the
// output's buffer through the built pipeline), activations and both layouts; cases it does not
// take (strided, 1x1, grouped, bf16) run direct. KILN_CPU_CONV_TACTIC=auto times both and runs
// either, matching too.
TEST(CpuConvolution, WinogradTacticMatchesKilnKernels) {
  if (!cpu::onednn_winograd_available()) GTEST_SKIP() << "oneDNN has no Winograd kernels for this processor";
  struct Case {
    int64_t n, cin, cout, h, w, k, stride, pad, groups;
    bool bias, residual;
    std::optional<ActivationOp> act;
    bool channels_last;
    DataType dt;
    int winograd;  // whether the forced tactic runs Winograd: 1 yes, 0 no, -1 where oneDNN has the epilogue
  };
  const DataType f32 = DataType::kFloat32;
  const Case cases[] = {
      {1, 64, 64, 14, 14, 3, 1, 1, 1, true, true, ActivationOp::kRelu, true, f32, 1},
      {2, 24, 40, 9, 11, 3, 1, 1, 1, true, false, ActivationOp::kRelu, true, f32, 1},
      {1, 3, 16, 10, 10, 3, 1, 0, 1, false, false, std::nullopt, false, f32, 1},
      {3, 32, 16, 7, 7, 3, 1, 1, 1, true, true, std::nullopt, false, f32, 1},
      // oneDNN 2.6's Winograd kernels fuse ReLU only: direct for the others there.
      {2, 24, 40, 9, 11, 3, 1, 1, 1, true, false, ActivationOp::kSilu, true, f32, -1},
      {2, 24, 40, 9, 11, 3, 1, 1, 1, true, false, ActivationOp::kClip, true, f32, -1},
      {1, 16, 48, 12, 12, 3, 1, 1, 1, true, false, ActivationOp::kGeluErf, true, f32, -1},
      {1, 32, 32, 9, 9, 3, 2, 1, 1, true, false, ActivationOp::kRelu, true, f32, 0},
      {1, 32, 32, 9, 9, 1, 1, 0, 1, true, false, ActivationOp::kRelu, true, f32, 0},
      {1, 32, 32, 9, 9, 3, 1, 1, 2, true, false, ActivationOp::kRelu, true, f32, 0},
      {1, 32, 32, 9, 9, 3, 1, 1, 1, true, true, ActivationOp::kRelu, true, DataType::kBFloat16, 0},
  };
  for (const char* tactic : {"winograd", "auto"})
    for (bool in_place : {false, true})
      for (size_t ci = 0; ci < std::size(cases); ++ci) {
        const Case& c = cases[ci];
        if (in_place && !c.residual) continue;
        const int64_t oh = c.h + 2 * c.pad - c.k + 1, ow = c.w + 2 * c.pad - c.k + 1;
        const int64_t Oh = (oh - 1) / c.stride + 1, Ow = (ow - 1) / c.stride + 1;
        auto dims = [&](int64_t n, int64_t ch, int64_t h, int64_t w) {
          return c.channels_last ? std::vector<int64_t>{n, h, w, ch} : std::vector<int64_t>{n, ch, h, w};
        };
        const int64_t cg = c.cin / c.groups;
        Host x = random_host(c.dt, dims(c.n, c.cin, c.h, c.w), 120 + uint32_t(ci));
        Host w = random_host(c.dt, c.channels_last ? std::vector<int64_t>{c.cout, c.k, c.k, cg}
                                                    : std::vector<int64_t>{c.cout, cg, c.k, c.k}, 121, -0.3, 0.3);
        Host b = random_host(c.dt, {c.cout}, 122), r = random_host(c.dt, dims(c.n, c.cout, Oh, Ow), 123);
        // In place: the residual is a convolution's output that dies at this one (the memory plan
        // gives this convolution its buffer); otherwise a network input.
        Host wr = random_host(c.dt, c.channels_last ? std::vector<int64_t>{c.cout, 1, 1, c.cin}
                                                     : std::vector<int64_t>{c.cout, c.cin, 1, 1}, 124, -0.3, 0.3);
        std::vector<Host> inputs{x};
        if (c.residual && !in_place) inputs.push_back(r);
        auto make = [&](Network& net) {
          Tensor* in = net.add_input("x", c.dt, shape_of(x.dims));
          std::vector<Tensor*> operands{in, constant(net, w, "w")};
          if (c.bias) operands.push_back(constant(net, b, "b"));
          if (c.residual && in_place) {
            const ConvolutionParams one = conv2d_params(c.stride, 0, 1, 1, c.channels_last, false, false, std::nullopt);
            operands.push_back(net.add_layer("residual", {in, constant(net, wr, "wr")}, one)->output());
          } else if (c.residual) {
            operands.push_back(net.add_input("r", c.dt, shape_of(r.dims)));
          }
          const ConvolutionParams p = conv2d_params(c.stride, c.pad, 1, c.groups, c.channels_last, c.bias, c.residual,
                                                    c.act ? std::optional(ActivationParams{*c.act, 0.0, 6.0}) : std::nullopt);
          net.mark_output(net.add_layer("conv", operands, p)->output(), "y");
        };
        const std::string what = std::string(tactic) + " case " + std::to_string(ci) + (in_place ? " in place" : "");
        if (in_place && (Oh != c.h || Ow != c.w)) continue;  // the 1x1 residual must match the output
        const std::vector<Host> want = without_onednn(make, inputs);
        ::setenv("KILN_CPU_CONV_TACTIC", tactic, 1);
        const uint64_t before = cpu::onednn_winograd_executions();
        Network net;
        make(net);
        const std::vector<Host> got = in_place ? run_pipeline(std::move(net), inputs) : run_direct(net, inputs);
        const uint64_t ran = cpu::onednn_winograd_executions() - before;
        ::unsetenv("KILN_CPU_CONV_TACTIC");
        if (std::string(tactic) == "winograd" && c.winograd == 1) EXPECT_GT(ran, 0u) << what << ": Winograd did not run";
        if (c.winograd == 0) EXPECT_EQ(ran, 0u) << what << ": Winograd ran a case it does not take";
        const double tol = c.dt == DataType::kBFloat16 ? 2 * tolerance(c.dt) : 1e-4;
        ASSERT_EQ(got[0].dims, want[0].dims) << what;
        expect_close(got[0], want[0].values(), tol, tol, what);
      }
}

TEST(CpuConvolution, BadConvTacticIsNamed) {
  if (!cpu::have_onednn()) GTEST_SKIP() << "kiln built without oneDNN";
  Host x = random_host(DataType::kFloat32, {1, 16, 6, 6}, 130), w = random_host(DataType::kFloat32, {16, 16, 3, 3}, 131);
  Network net;
  net.mark_output(net.add_layer("conv", {net.add_input("x", DataType::kFloat32, shape_of(x.dims)), constant(net, w, "w")},
                                conv2d_params(1, 1, 1, 1, false, false, false, std::nullopt))->output(), "y");
  ::setenv("KILN_CPU_CONV_TACTIC", "fastest", 1);
  try {
    run_direct(net, {x});
    ADD_FAILURE() << "an unknown KILN_CPU_CONV_TACTIC ran";
  } catch (const NetworkError& e) {
    EXPECT_NE(std::string(e.what()).find("KILN_CPU_CONV_TACTIC must be auto, direct or winograd, not 'fastest'"),
              std::string::npos) << e.what();
  }
  ::unsetenv("KILN_CPU_CONV_TACTIC");
}

struct Pool {
  PoolType type;
  std::vector<int64_t> x, k, s, p, d;
  bool ceil, include_pad;
  std::optional<int64_t> divisor;
  std::vector<int64_t> adaptive;
};

// A NaN in a max-pooling window wins it, wherever it sits in the window (PyTorch propagates NaN).
TEST(CpuPooling, MaxPoolPropagatesNaN) {
  Host x = random_host(DataType::kFloat32, {1, 1, 4, 4}, 3);
  x.set(5, std::nan(""));  // row 1, column 1: inside the top-left 2x2 window only
  auto out = run_both(
      [&](Network& net) {
        PoolingParams p;
        p.type = PoolType::kMax; p.kernel = {2, 2}; p.stride = {2, 2}; p.padding = {0, 0}; p.dilation = {1, 1};
        net.mark_output(net.add_pooling("pool", net.add_input("x", DataType::kFloat32, shape_of(x.dims)), p)->output(), "y");
      },
      {x});
  ASSERT_EQ(out[0].numel(), 4);
  EXPECT_TRUE(std::isnan(out[0].get(0)));
  for (int64_t i = 1; i < 4; ++i) EXPECT_FALSE(std::isnan(out[0].get(i))) << i;
  // Channels last, 8 channels: the NaN in channel 3 only, every other channel finite.
  Host xn = random_host(DataType::kFloat32, {1, 4, 4, 8}, 4);
  xn.set((1 * 4 + 1) * 8 + 3, std::nan(""));
  auto nhwc = run_both(
      [&](Network& net) {
        PoolingParams p;
        p.type = PoolType::kMax; p.kernel = {2, 2}; p.stride = {2, 2}; p.padding = {0, 0}; p.dilation = {1, 1};
        p.channels_last = true;
        net.mark_output(net.add_pooling("pool", net.add_input("x", DataType::kFloat32, shape_of(xn.dims)), p)->output(), "y");
      },
      {xn});
  ASSERT_EQ(nhwc[0].numel(), 32);
  for (int64_t i = 0; i < 32; ++i) EXPECT_EQ(std::isnan(nhwc[0].get(i)), i == 3) << i;
}

TEST(CpuPooling, MaxAverageAdaptive) {
  const std::vector<Pool> cases = {
      {PoolType::kMax, {2, 3, 9, 8}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false, true, {}, {}},
      {PoolType::kMax, {1, 2, 10, 9}, {3, 2}, {2, 2}, {1, 0}, {2, 2}, true, true, {}, {}},
      {PoolType::kMax, {1, 2, 7}, {3}, {2}, {0}, {1}, true, true, {}, {}},
      {PoolType::kAverage, {2, 3, 9, 8}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false, true, {}, {}},
      {PoolType::kAverage, {2, 3, 9, 8}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false, {}, {}},
      {PoolType::kAverage, {1, 2, 6, 7}, {2, 3}, {2, 2}, {1, 1}, {1, 1}, true, true, {}, {}},
      {PoolType::kAverage, {1, 2, 6, 6}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false, true, 3, {}},
      {PoolType::kAverage, {1, 2, 4, 5, 6}, {2, 2, 3}, {2, 1, 2}, {1, 0, 1}, {1, 1, 1}, true, false, {}, {}},
      {PoolType::kAverage, {2, 3, 10, 7}, {}, {}, {}, {}, false, true, {}, {3, 4}},
      {PoolType::kMax, {2, 3, 10, 7}, {}, {}, {}, {}, false, true, {}, {4, 3}},
      {PoolType::kAverage, {1, 2, 5}, {}, {}, {}, {}, false, true, {}, {1}},
  };
  for (DataType t : float_types())
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const Pool& c = cases[ci];
      Host x = random_host(t, c.x, 7 + uint32_t(ci));
      auto make = [&](Network& net) {
        auto* in = net.add_input("x", t, shape_of(c.x));
        PoolingParams p;
        p.type = c.type; p.kernel = c.k; p.stride = c.s; p.padding = c.p; p.dilation = c.d;
        p.ceil_mode = c.ceil; p.count_include_pad = c.include_pad; p.divisor_override = c.divisor;
        p.adaptive_output = c.adaptive;
        net.mark_output(net.add_pooling("pool", in, p)->output(), "y");
      };
      auto out = run_both(make, {x});
      const auto& od = out[0].dims;
      const size_t S = c.x.size() - 2;
      // Expected output size (PyTorch's formula, with the ceil_mode rule that the last window
      // must start inside the input or left padding).
      for (size_t d = 0; d < S; ++d) {
        int64_t want;
        if (!c.adaptive.empty()) want = c.adaptive[d];
        else {
          int64_t num = c.x[2 + d] + 2 * c.p[d] - c.d[d] * (c.k[d] - 1) - 1;
          want = (c.ceil ? (num + c.s[d] - 1) / c.s[d] : num / c.s[d]) + 1;
          if (c.ceil && (want - 1) * c.s[d] >= c.x[2 + d] + c.p[d]) --want;
        }
        ASSERT_EQ(od[2 + d], want) << "pool case " << ci << " dim " << d;
      }
      std::vector<double> ref;
      for (int64_t i = 0; i < out[0].numel(); ++i) {
        auto idx = unravel(i, od);
        double mx = -INFINITY, sum = 0;
        int64_t cnt = 1, padded = 1;
        std::vector<int64_t> lo(S), hi(S);
        for (size_t d = 0; d < S; ++d) {
          const int64_t in = c.x[2 + d], o = idx[2 + d];
          if (!c.adaptive.empty()) {
            int64_t out_n = c.adaptive[d];
            lo[d] = int64_t(std::floor(double(o * in) / out_n));
            hi[d] = int64_t(std::ceil(double((o + 1) * in) / out_n));
            padded *= hi[d] - lo[d];
          } else if (c.type == PoolType::kAverage) {
            int64_t st = o * c.s[d] - c.p[d], en = std::min(st + c.k[d], in + c.p[d]);
            padded *= en - st;
            lo[d] = std::max<int64_t>(st, 0);
            hi[d] = std::min(en, in);
          }
        }
        if (c.type == PoolType::kMax && c.adaptive.empty()) {
          int64_t kv = 1;
          for (auto k : c.k) kv *= k;
          for (int64_t kk = 0; kk < kv; ++kk) {
            auto kidx = unravel(kk, c.k);
            std::vector<int64_t> xi{idx[0], idx[1]};
            bool inside = true;
            for (size_t d = 0; d < S; ++d) {
              int64_t p = idx[2 + d] * c.s[d] - c.p[d] + kidx[d] * c.d[d];
              inside &= p >= 0 && p < c.x[2 + d];
              xi.push_back(p);
            }
            if (inside) mx = std::max(mx, x.get(ravel(xi, c.x)));
          }
          ref.push_back(mx);
          continue;
        }
        std::vector<int64_t> ext(S);
        cnt = 1;
        for (size_t d = 0; d < S; ++d) { ext[d] = hi[d] - lo[d]; cnt *= ext[d]; }
        for (int64_t w = 0; w < cnt; ++w) {
          auto wi = unravel(w, ext);
          std::vector<int64_t> xi{idx[0], idx[1]};
          for (size_t d = 0; d < S; ++d) xi.push_back(lo[d] + wi[d]);
          double v = x.get(ravel(xi, c.x));
          mx = std::max(mx, v);
          sum += v;
        }
        if (c.type == PoolType::kMax) ref.push_back(mx);
        else if (c.divisor) ref.push_back(sum / double(*c.divisor));
        else if (!c.adaptive.empty() || !c.include_pad) ref.push_back(sum / double(cnt));
        else ref.push_back(sum / double(padded));
      }
      expect_close(out[0], ref, 2 * tolerance(t), 2 * tolerance(t), "pool case " + std::to_string(ci) + " " + to_string(t));
      if (c.x.size() != 4) continue;
      // The same pooling channels last (CPU networks with oneDNN convolutions run it so): the
      // input laid out [N, H, W, C], the output compared back in NCHW order.
      const std::vector<int64_t> xd{c.x[0], c.x[2], c.x[3], c.x[1]};
      Host xn(t, xd);
      for (int64_t i = 0; i < x.numel(); ++i) {
        auto id = unravel(i, c.x);
        xn.set(ravel({id[0], id[2], id[3], id[1]}, xd), x.get(i));
      }
      auto nhwc = run_both(
          [&](Network& net) {
            PoolingParams p;
            p.type = c.type; p.kernel = c.k; p.stride = c.s; p.padding = c.p; p.dilation = c.d;
            p.ceil_mode = c.ceil; p.count_include_pad = c.include_pad; p.divisor_override = c.divisor;
            p.adaptive_output = c.adaptive;
            p.channels_last = true;
            net.mark_output(net.add_pooling("pool", net.add_input("x", t, shape_of(xd)), p)->output(), "y");
          },
          {xn});
      const auto& gd = nhwc[0].dims;
      ASSERT_EQ(gd, (std::vector<int64_t>{od[0], od[2], od[3], od[1]})) << "pool case " << ci << " channels last";
      Host back(t, od);
      for (int64_t i = 0; i < nhwc[0].numel(); ++i) {
        auto id = unravel(i, gd);
        back.set(ravel({id[0], id[3], id[1], id[2]}, od), nhwc[0].get(i));
      }
      expect_close(back, ref, 2 * tolerance(t), 2 * tolerance(t),
                   "channels-last pool case " + std::to_string(ci) + " " + to_string(t));
    }
}

struct Attn {
  std::vector<int64_t> q, k, v;
  int mask;  // 0 none, 1 bool, 2 float
  std::vector<int64_t> mask_dims;
  bool causal;
  std::optional<double> scale;
};

TEST(CpuAttention, MaskCausalScale) {
  const std::vector<Attn> cases = {
      {{2, 3, 5, 8}, {2, 3, 7, 8}, {2, 3, 7, 6}, 0, {}, false, {}},
      {{2, 3, 5, 8}, {2, 3, 5, 8}, {2, 3, 5, 8}, 0, {}, true, 0.3},
      {{1, 2, 4, 8}, {1, 2, 6, 8}, {1, 2, 6, 4}, 1, {4, 6}, false, {}},
      {{1, 2, 4, 8}, {1, 2, 6, 8}, {1, 2, 6, 4}, 2, {1, 2, 1, 6}, false, {}},
      {{3, 6, 4}, {3, 9, 4}, {3, 9, 5}, 1, {3, 6, 9}, true, {}},
      {{1, 0, 4}, {1, 3, 4}, {1, 3, 4}, 0, {}, false, {}},
  };
  // after_convolution: a oneDNN convolution runs just before, so its OpenMP team is running and
  // fp32 attention takes its per-matrix path (onednn_parallel_for) where oneDNN is built in.
  for (bool after_convolution : {false, true})
  for (DataType t : float_types())
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const Attn& c = cases[ci];
      if (after_convolution && t != DataType::kFloat32) continue;
      Host q = random_host(t, c.q, 1), k = random_host(t, c.k, 2), v = random_host(t, c.v, 3);
      Host image = random_host(DataType::kFloat32, {1, 8, 8, 4}, 6), filter = random_host(DataType::kFloat32, {4, 3, 3, 4}, 7);
      Host m = c.mask == 1 ? random_host(DataType::kBool, c.mask_dims, 4) : random_host(t, c.mask_dims, 5);
      if (c.mask == 1)  // PyTorch: keep at least the first key of each row so no row is fully masked
        for (int64_t i = 0; i < m.numel(); i += c.mask_dims.back()) m.set(i, 1);
      std::vector<Host> ins{q, k, v};
      if (c.mask) ins.push_back(m);
      if (after_convolution) ins.push_back(image);
      auto make = [&](Network& net) {
        auto* iq = net.add_input("q", t, shape_of(c.q));
        auto* ik = net.add_input("k", t, shape_of(c.k));
        auto* iv = net.add_input("v", t, shape_of(c.v));
        Tensor* im = c.mask ? net.add_input("m", m.dtype, shape_of(c.mask_dims)) : nullptr;
        AttentionParams p;
        p.causal = c.causal;
        p.scale = c.scale;
        p.has_mask = c.mask != 0;
        Tensor* conv = nullptr;
        if (after_convolution) {  // added first, so it runs first
          Tensor* x = net.add_input("image", DataType::kFloat32, {1, 8, 8, 4});
          const ConvolutionParams cp = conv2d_params(1, 1, 1, 1, true, false, false, std::nullopt);
          conv = net.add_layer("conv", {x, constant(net, filter, "filter")}, cp)->output();
        }
        net.mark_output(net.add_attention("sdpa", iq, ik, iv, im, p)->output(), "o");
        if (conv) net.mark_output(conv, "conv");
      };
      const uint64_t loops_before = cpu::onednn_parallel_loops();
      auto out = run_both(make, ins);
      int64_t matrices = c.q[c.q.size() - 2] > 0 ? 1 : 0;
      for (size_t d = 0; d + 2 < c.q.size(); ++d) matrices *= c.q[d];
      if (after_convolution && cpu::have_onednn() && matrices > 1) {
        EXPECT_GT(cpu::onednn_parallel_loops(), loops_before) << "case " << ci << ": not on oneDNN's team";
      }
      const size_t r = c.q.size();
      const int64_t Lq = c.q[r - 2], E = c.q[r - 1], Lk = c.k[r - 2], Ev = c.v[r - 1];
      const double scale = c.scale ? *c.scale : 1 / std::sqrt(double(E));
      std::vector<double> want(static_cast<size_t>(out[0].numel()));
      const int64_t B = Lq * Ev ? out[0].numel() / (Lq * Ev) : 0;
      std::vector<int64_t> full(c.q.begin(), c.q.end() - 2);
      full.push_back(Lq);
      full.push_back(Lk);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < Lq; ++i) {
          std::vector<double> s(static_cast<size_t>(Lk));
          double mx = -INFINITY;
          for (int64_t j = 0; j < Lk; ++j) {
            double d = 0;
            for (int64_t e = 0; e < E; ++e) d += q.get((b * Lq + i) * E + e) * k.get((b * Lk + j) * E + e);
            d *= scale;
            if (c.mask) {
              int64_t mi = bcast_index(unravel((b * Lq + i) * Lk + j, full), c.mask_dims);
              if (c.mask == 1 && !m.get(mi)) d = -INFINITY;
              if (c.mask == 2) d += m.get(mi);
            }
            if (c.causal && j > i) d = -INFINITY;
            s[size_t(j)] = d;
            mx = std::max(mx, d);
          }
          double z = 0;
          for (double& e : s) { e = std::exp(e - mx); z += e; }
          for (int64_t e = 0; e < Ev; ++e) {
            double o = 0;
            for (int64_t j = 0; j < Lk; ++j) o += s[size_t(j)] / z * v.get((b * Lk + j) * Ev + e);
            want[size_t((b * Lq + i) * Ev + e)] = o;
          }
        }
      double tol = 4 * tolerance(t);
      expect_close(out[0], want, tol, tol, "attention case " + std::to_string(ci) + " " + to_string(t));
    }
}

}  // namespace
}  // namespace kiln::engine::cputest
