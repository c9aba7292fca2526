// CUDA backend vs CPU backend: data movement and order-dependent layers (shuffle, concat, slice,
// gather, scatter, pad, resize, fill, shape, cumsum, top-k, nonzero, identity, plugin), and the
// whole pipeline on CUDA with graph capture / replay.
#include <set>

#include "cuda_test_util.h"

#include "engine/builder.h"
#include "engine/plan_impl.h"
#include "engine/runtime.h"

namespace kiln::engine::cputest {
namespace {

TEST(CudaData, ShuffleConcatSlice) {
  REQUIRE_GPU();
  Host x = random_host(DataType::kFloat16, {2, 3, 4, 5}, 81);
  check("permute", [&](Network& n) {
    ShuffleParams p;
    p.first_perm = {0, 2, 3, 1};
    n.mark_output(n.add_shuffle("s", input(n, x, "x"), p)->output(), "y");
  }, {x});
  check("permute reshape permute", [&](Network& n) {
    ShuffleParams p;
    p.first_perm = {1, 0, 2, 3};
    p.reshape = Shape{3, 2, 20};
    p.second_perm = {2, 0, 1};
    n.mark_output(n.add_shuffle("s", input(n, x, "x"), p)->output(), "y");
  }, {x});
  check("reshape", [&](Network& n) {
    ShuffleParams p;
    p.reshape = Shape{6, -1};
    n.mark_output(n.add_shuffle("s", input(n, x, "x"), p)->output(), "y");
  }, {x});
  Host a = random_host(DataType::kInt64, {2, 3, 4}, 82), b = random_host(DataType::kInt64, {2, 1, 4}, 83);
  for (int64_t axis : {1, -2})
    check("concat", [&](Network& n) {
      std::vector<Tensor*> xs{input(n, a, "a"), input(n, b, "b"), input(n, a, "c")};
      n.mark_output(n.add_concat("c", xs, axis)->output(), "y");
    }, {a, b, a});
  Host y = random_host(DataType::kFloat32, {7, 9, 6}, 84);
  check("slice", [&](Network& n) {
    SliceParams p;
    p.start = Shape{1, 8, 0};
    p.size = Shape{3, 4, 6};
    p.stride = Shape{2, -2, 1};
    n.mark_output(n.add_slice("s", input(n, y, "x"), p)->output(), "y");
  }, {y});
  check("identity", [&](Network& n) { n.mark_output(n.add_identity("i", input(n, y, "x"))->output(), "y"); }, {y});

  // Copies whose rows stay contiguous move in 16/8/4-byte units: attention's head permute (16 B:
  // 64 halves per row), a column-range slice as a fused qkv split (16 B), rows of 4 and of 2 floats
  // (16 B, 8 B) and a slice starting at an odd column (units fall back to elements).
  Host heads = random_host(DataType::kFloat16, {2, 7, 3, 64}, 85);
  check("permute heads", [&](Network& n) {
    ShuffleParams p;
    p.first_perm = {0, 2, 1, 3};
    n.mark_output(n.add_shuffle("s", input(n, heads, "x"), p)->output(), "y");
  }, {heads});
  Host qkv = random_host(DataType::kFloat16, {2, 5, 3 * 24}, 86);
  for (int64_t start : {24, 8, 3}) {
    check("column slice at " + std::to_string(start), [&](Network& n) {
      SliceParams p;
      p.start = Shape{0, 0, start};
      p.size = Shape{2, 5, 24};
      p.stride = Shape{1, 1, 1};
      n.mark_output(n.add_slice("s", input(n, qkv, "x"), p)->output(), "y");
    }, {qkv});
  }
  for (int64_t inner : {4, 2}) {
    Host r = random_host(DataType::kFloat32, {3, 5, inner}, 87);
    check("permute rows of " + std::to_string(inner), [&](Network& n) {
      ShuffleParams p;
      p.first_perm = {1, 0, 2};
      n.mark_output(n.add_shuffle("s", input(n, r, "x"), p)->output(), "y");
    }, {r});
  }
}

TEST(CudaData, GatherScatter) {
  REQUIRE_GPU();
  Host emb = random_host(DataType::kFloat16, {10, 8}, 91);
  Host ids = host_of(DataType::kInt64, {2, 3}, {0, 9, -1, 4, 4, 2});
  check("embedding", [&](Network& n) {
    std::vector<Tensor*> x{input(n, emb, "w"), input(n, ids, "i")};
    n.mark_output(n.add_gather("g", x[0], x[1], GatherMode::kAxis, 0)->output(), "y");
  }, {emb, ids});
  Host data = random_host(DataType::kFloat32, {3, 5}, 92);
  Host eidx = host_of(DataType::kInt32, {3, 2}, {0, 4, 1, 1, 3, 2});
  check("gather elements", [&](Network& n) {
    std::vector<Tensor*> x{input(n, data, "d"), input(n, eidx, "i")};
    n.mark_output(n.add_gather("g", x[0], x[1], GatherMode::kElements, 1)->output(), "y");
  }, {data, eidx});
  Host sidx = host_of(DataType::kInt64, {2, 5}, {0, 1, 2, 0, 1, 2, 0, 1, 2, 0});
  Host upd = random_host(DataType::kFloat32, {2, 5}, 93);
  for (ScatterReduce r : {ScatterReduce::kNone, ScatterReduce::kAdd}) {
    Host idx = r == ScatterReduce::kNone ? host_of(DataType::kInt64, {2, 5}, {0, 1, 2, 0, 1, 1, 2, 0, 1, 2}) : sidx;
    check("scatter elements", [&](Network& n) {
      ScatterParams p;
      p.mode = GatherMode::kElements; p.axis = 0; p.reduce = r;
      std::vector<Tensor*> x{input(n, data, "d"), input(n, idx, "i"), input(n, upd, "u")};
      n.mark_output(n.add_scatter("s", x[0], x[1], x[2], p)->output(), "y");
    }, {data, idx, upd});
  }
  // max / min / mul through compare-and-swap loops: every dtype width (1-byte ones through their
  // 32-bit word), NaN in the updates, and 4096 updates contending for 3 places.
  for (ScatterReduce r : {ScatterReduce::kMax, ScatterReduce::kMin, ScatterReduce::kMul})
    for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16, DataType::kInt32, DataType::kInt64,
                       DataType::kInt8, DataType::kUInt8, DataType::kBool}) {
      Host d = random_host(t, {3, 5}, 95), u = random_host(t, {2, 5}, 96);
      if (t == DataType::kFloat32) u.set(3, std::nan(""));
      check(std::string("scatter ") + enum_name(r) + " " + to_string(t), [&](Network& n) {
        std::vector<Tensor*> x{input(n, d, "d"), input(n, sidx, "i"), input(n, u, "u")};
        n.mark_output(n.add_scatter("s", x[0], x[1], x[2], ScatterParams{GatherMode::kElements, 0, r})->output(), "y");
      }, {d, sidx, u});
      if (r == ScatterReduce::kMul) continue;
      Host crowd = host_of(DataType::kInt64, {4096}, std::vector<double>(4096, 0));
      for (int64_t i = 0; i < 4096; ++i) crowd.set(i, double(i % 3));
      Host many = random_host(t, {4096}, 97), few = random_host(t, {3}, 98);
      check(std::string("contended scatter ") + enum_name(r) + " " + to_string(t), [&](Network& n) {
        std::vector<Tensor*> x{input(n, few, "d"), input(n, crowd, "i"), input(n, many, "u")};
        n.mark_output(n.add_scatter("s", x[0], x[1], x[2], ScatterParams{GatherMode::kElements, 0, r})->output(), "y");
      }, {few, crowd, many});
    }
  Host rows = host_of(DataType::kInt64, {2}, {2, 0});
  Host upd2 = random_host(DataType::kFloat32, {2, 5}, 94);
  check("scatter axis", [&](Network& n) {
    ScatterParams p;
    p.mode = GatherMode::kAxis; p.axis = 0;
    std::vector<Tensor*> x{input(n, data, "d"), input(n, rows, "i"), input(n, upd2, "u")};
    n.mark_output(n.add_scatter("s", x[0], x[1], x[2], p)->output(), "y");
  }, {data, rows, upd2});
}

TEST(CudaData, PadResizeFillShape) {
  REQUIRE_GPU();
  Host x = random_host(DataType::kFloat32, {2, 3, 5, 6}, 101);
  for (PadMode m : {PadMode::kConstant, PadMode::kReflect, PadMode::kReplicate, PadMode::kCircular})
    check("pad", [&](Network& n) {
      PadParams p;
      p.pre = {0, 0, 2, 1};
      p.post = {0, 0, 1, -1};
      p.mode = m;
      p.value = 1.5;
      n.mark_output(n.add_pad("p", input(n, x, "x"), p)->output(), "y");
    }, {x});
  for (ResizeMode m : {ResizeMode::kNearest, ResizeMode::kNearestExact, ResizeMode::kLinear})
    for (bool align : {false, true})
      for (bool scales : {false, true}) {
        if (align && m != ResizeMode::kLinear) continue;
        check("resize", [&](Network& n) {
          ResizeParams p;
          p.mode = m;
          p.align_corners = align;
          p.output_spatial = Shape{11, 9};
          if (scales) p.scales = {2.2, 1.5};
          n.mark_output(n.add_resize("r", input(n, x, "x"), p)->output(), "y");
        }, {x});
      }
  check("fill + arange + shape", [&](Network& n) {
    FillParams f;
    f.op = FillOp::kConstant; f.dims = Shape{3, 4}; f.dtype = DataType::kFloat16; f.value = 2.5;
    n.mark_output(n.add_fill("f", f)->output(), "a");
    FillParams r;
    r.op = FillOp::kArange; r.dims = Shape{7}; r.dtype = DataType::kInt64; r.start = 3; r.step = 2;
    n.mark_output(n.add_fill("r", r)->output(), "b");
    FillParams q = r;
    q.dtype = DataType::kFloat32; q.start = -1; q.step = 0.25;
    n.mark_output(n.add_fill("q", q)->output(), "c");
    n.mark_output(n.add_shape("s", input(n, x, "x"))->output(), "d");
  }, {x});
}

TEST(CudaData, CumsumTopkNonzero) {
  REQUIRE_GPU();
  for (DataType t : {DataType::kFloat32, DataType::kInt64}) {
    Host x = random_host(t, {4, 37, 3}, 111);
    for (int64_t axis : {1, 2})
      for (bool ex : {false, true})
        for (bool rev : {false, true})
          check("cumsum", [&](Network& n) {
            CumSumParams p{axis, ex, rev};
            n.mark_output(n.add_cumsum("c", input(n, x, "x"), p)->output(), "y");
          }, {x});
  }
  for (int64_t L : {37, 5000}) {
    Host x = random_host(DataType::kFloat32, {3, L}, 112);
    for (bool largest : {true, false})
      check("topk", [&](Network& n) {
        TopKParams p;
        p.axis = 1; p.k = 5; p.largest = largest;
        Layer* l = n.add_topk("t", input(n, x, "x"), p);
        n.mark_output(l->output(0), "v");
        n.mark_output(l->output(1), "i");
      }, {x});
  }
  Host z = random_host(DataType::kFloat32, {3, 4, 5}, 113);
  for (int64_t i = 0; i < z.numel(); i += 3) z.set(i, 0);
  check("topk middle axis", [&](Network& n) {
    TopKParams p;
    p.axis = 1; p.k = 2;
    Layer* l = n.add_topk("t", input(n, z, "x"), p);
    n.mark_output(l->output(0), "v");
    n.mark_output(l->output(1), "i");
  }, {z});
  check("topk whole axis", [&](Network& n) {  // a full sort, as sort / argsort of any length
    TopKParams p;
    p.axis = 2; p.k = TopKParams::kWholeAxis; p.largest = false;
    Layer* l = n.add_topk("t", input(n, z, "x"), p);
    n.mark_output(l->output(0), "v");
    n.mark_output(l->output(1), "i");
  }, {z});
  Host big = random_host(DataType::kInt32, {3, 5000}, 114);
  check("nonzero", [&](Network& n) {
    n.mark_output(n.add_nonzero("nz", input(n, z, "x"))->output(), "y");
    n.mark_output(n.add_nonzero("nz2", input(n, big, "b"))->output(), "z");
  }, {z, big});
}

TEST(CudaData, Plugin) {
  REQUIRE_GPU();
  PluginKernel k;
  k.infer = [](const std::vector<const Tensor*>& in, const std::string&) {
    return std::vector<std::pair<DataType, Shape>>{{in[0]->dtype(), in[0]->shape()}};
  };
  k.cpu = [](const std::vector<TensorView>& in, const std::vector<TensorView>& out, const std::string&) {
    std::memcpy(out[0].data, in[0].data, in[0].nbytes());
  };
  k.cuda = [](const std::vector<TensorView>& in, const std::vector<TensorView>& out, const std::string&, void* stream) {
    EXPECT_EQ(stream, gpu().native_stream());
    gpu().copy(out[0].data, DeviceKind::kCUDA, in[0].data, DeviceKind::kCUDA, in[0].nbytes());
  };
  register_plugin("cuda_test_copy", k);
  Host x = random_host(DataType::kFloat32, {4, 4}, 121);
  check("plugin", [&](Network& n) {
    n.mark_output(n.add_plugin("p", {input(n, x, "x")}, PluginParams{"cuda_test_copy", ""})->output(), "y");
  }, {x});
}

// One network built for the CPU (the reference) and for CUDA, each with its execution context
// (contexts keep references to their plans: built in place, never moved).
struct CpuAndCuda {
  static Plan built(const std::function<void(Network&)>& make, BuilderConfig cfg, DeviceKind device) {
    Network n;
    make(n);
    cfg.device = device;
    return build(std::move(n), cfg);
  }
  CpuAndCuda(const std::function<void(Network&)>& make, const BuilderConfig& cfg)
      : cpu_plan(built(make, cfg, DeviceKind::kCPU)), gpu_plan(built(make, cfg, DeviceKind::kCUDA)),
        cpu(cpu_plan), gpu(gpu_plan, std::shared_ptr<Backend>(make_cuda_backend())) {}
  CpuAndCuda(const CpuAndCuda&) = delete;
  CpuAndCuda& operator=(const CpuAndCuda&) = delete;

  // Runs both on `x` (input "x") and compares their first outputs.
  void run_and_compare(const Host& x, double tol, const std::string& what) {
    cpu.set_input("x", x.view());
    gpu.set_input("x", x.view());
    cpu.execute();
    gpu.execute();
    const TensorView& want = cpu.output(0);
    const TensorView& got = gpu.output(0);
    ASSERT_EQ(want.dims, got.dims) << what;
    Host g(got.dtype, got.dims), w(want.dtype, want.dims);
    gpu.backend().copy(g.bytes.data(), DeviceKind::kCPU, got.data, got.device, got.nbytes());
    std::memcpy(w.bytes.data(), want.data, want.nbytes());
    expect_close(g, w.values(), tol, tol, what);
  }

  Plan cpu_plan, gpu_plan;
  ExecutionContext cpu, gpu;
};

// A plan built with workspace_limit 0 runs its convolutions and GEMMs on algorithms that need no
// scratch memory (the backend then holds none), with the same results; the default limit lets them
// take what their fastest algorithm asks for.
TEST(CudaPipeline, WorkspaceLimitBindsTheChosenAlgorithms) {
  REQUIRE_GPU_RUN();
  for (size_t limit : {size_t{0}, kDefaultWorkspaceLimit}) {
    auto make = [](Network& n) {
      Tensor* x = n.add_input("x", DataType::kFloat32, Shape{8, 32, 28, 28});
      Tensor* w = constant(n, random_host(DataType::kFloat32, {64, 32, 3, 3}, 151, -0.1, 0.1), "w");
      ConvolutionParams cp;
      cp.padding = {1, 1};
      Tensor* y = n.add_convolution("conv", x, w, nullptr, cp)->output();
      ShuffleParams sp;
      sp.reshape = Shape{8, 64 * 28 * 28};
      y = n.add_shuffle("flat", y, sp)->output();
      Tensor* fc = constant(n, random_host(DataType::kFloat32, {64 * 28 * 28, 96}, 152, -0.01, 0.01), "fc");
      n.mark_output(n.add_matmul("fc", y, fc)->output(), "y");
    };
    BuilderConfig cfg;
    cfg.precision = Precision::kFP16;
    cfg.workspace_limit = limit;  // the CPU backend has no library scratch to limit
    CpuAndCuda both(make, cfg);
    both.run_and_compare(random_host(DataType::kFloat32, {8, 32, 28, 28}, 153), 3e-2,
                         "workspace limit " + std::to_string(limit));
    if (limit == 0) EXPECT_EQ(both.gpu.backend().scratch_bytes(), 0u) << "an algorithm with scratch memory ran";
  }
}

// With KILN_CUDA_IN_PLACE_RESIDUALS=1 the CUDA memory plan gives a residual's buffer to the output
// of the layer where it dies when the layer's kernel reads each residual element before writing
// it: a matmul (cuBLASLt's C == D) and a 1x1 channels-last convolution (the same matmul over rows
// of channels). Results match the CPU's in every precision, and the plan holds those aliases (the
// 3x3 convolution's residual stays out of place; the layers that only reshape alias their input as
// always). Without the variable no layer's output takes its residual's buffer.
TEST(CudaPipeline, ResidualOutputsTakeTheResidualsBuffer) {
  REQUIRE_GPU_RUN();
  auto make = [](Network& n) {
    Tensor* x = n.add_input("x", DataType::kFloat32, Shape{2, 16, 8, 8});
    auto w = [&](std::vector<int64_t> dims, uint64_t seed) { return constant(n, random_host(DataType::kFloat32, dims, seed, -0.2, 0.2), "w" + std::to_string(seed)); };
    ConvolutionParams three;
    three.padding = {1, 1};
    three.activation = ActivationParams{ActivationOp::kRelu};
    Tensor* a = n.add_convolution("c1", x, w({16, 16, 3, 3}, 161), nullptr, three)->output();
    Tensor* b = n.add_convolution("c2", a, w({16, 16, 3, 3}, 162), nullptr, three)->output();
    ConvolutionParams one;
    one.has_residual = true;
    one.activation = ActivationParams{ActivationOp::kRelu};
    Tensor* c = n.add_layer("c3", {b, w({16, 16, 1, 1}, 163), a}, one)->output();  // a dies here
    three.has_residual = true;
    Tensor* d = n.add_layer("c4", {c, w({16, 16, 3, 3}, 164), b}, three)->output();  // b dies here
    ShuffleParams flat;
    flat.reshape = Shape{32, 64};
    Tensor* h = n.add_matmul("m1", n.add_shuffle("flat", d, flat)->output(), w({64, 64}, 165))->output();
    Tensor* k = n.add_matmul("m2", h, w({64, 64}, 166))->output();
    MatMulParams with_residual;
    with_residual.has_residual = true;
    n.mark_output(n.add_layer("m3", {k, w({64, 64}, 167), h}, with_residual)->output(), "y");  // h dies here
  };
  for (const char* enabled : {"1", "0"})
  for (Precision precision : {Precision::kFP32, Precision::kFP16, Precision::kBF16}) {
    ::setenv("KILN_CUDA_IN_PLACE_RESIDUALS", enabled, 1);
    BuilderConfig cfg;
    cfg.precision = precision;
    CpuAndCuda both(make, cfg);
    ::unsetenv("KILN_CUDA_IN_PLACE_RESIDUALS");
    std::set<std::string> in_place;  // layers (their names before the builder's suffixes) writing over an input
    for (const Layer* l : both.gpu_plan.network().layers())
      if (!l->outputs().empty() && both.gpu_plan.impl().aliases.count(l->output()->id()))
        in_place.insert(l->name().substr(0, 2));
    // fp16 and bf16 run convolutions channels last, where the 1x1 is a matmul over rows; fp32 keeps NCHW.
    const bool on = enabled[0] == '1';
    EXPECT_EQ(in_place.count("c3"), on && precision != Precision::kFP32 ? 1u : 0u) << "the 1x1 convolution";
    EXPECT_EQ(in_place.count("m3"), on ? 1u : 0u) << "the matmul's output in its residual's buffer";
    EXPECT_FALSE(in_place.count("c4")) << "a 3x3 convolution writes before its epilogue reads the residual";
    for (uint64_t seed : {168, 169})  // twice: the second run reads buffers the first one left
      both.run_and_compare(random_host(DataType::kFloat32, {2, 16, 8, 8}, seed),
                           precision == Precision::kFP32 ? 1e-3 : precision == Precision::kFP16 ? 3e-2 : 8e-2,
                           std::string("residual in place ") + enabled + ", " + to_string(precision));
  }
}

// Build -> plan -> ExecutionContext on CUDA, executed repeatedly: run 1 plain, run 2 recorded as a
// CUDA graph, runs 3+ replayed. Every run must match the CPU pipeline, also after new input data.
TEST(CudaPipeline, GraphCaptureAndReplay) {
  REQUIRE_GPU_RUN();  // runs whole plans, not check()
  for (Precision prec : {Precision::kFP32, Precision::kFP16}) {
    auto make = [](Network& n) {
      Tensor* x = n.add_input("x", DataType::kFloat32, Shape{4, 16, 64});
      Tensor* w = constant(n, random_host(DataType::kFloat32, {64, 64}, 131, -0.2, 0.2), "w");
      Tensor* b = constant(n, random_host(DataType::kFloat32, {64}, 132), "b");
      Tensor* h = n.add_matmul("fc", x, w)->output();
      h = n.add_elementwise("bias", h, b, BinaryOp::kAdd)->output();
      h = n.add_activation("act", h, ActivationOp::kGeluErf)->output();
      ShuffleParams sp;
      sp.reshape = Shape{4, 16, 4, 16};
      sp.second_perm = {0, 2, 1, 3};
      Tensor* heads = n.add_shuffle("heads", h, sp)->output();
      AttentionParams ap;
      ap.causal = true;
      Tensor* att = n.add_attention("sdpa", heads, heads, heads, nullptr, ap)->output();
      Tensor* s = n.add_softmax("sm", att, -1)->output();
      ReduceParams rp;
      rp.op = ReduceOp::kMean;
      rp.axes = {1};
      n.mark_output(n.add_reduce("mean", s, rp)->output(), "y");
    };
    BuilderConfig cfg;
    cfg.precision = prec;
    CpuAndCuda both(make, cfg);
    for (int run = 0; run < 5; ++run)
      both.run_and_compare(random_host(DataType::kFloat32, {4, 16, 64}, 140 + (run % 3)),
                           prec == Precision::kFP32 ? 1e-4 : 2e-2, "pipeline run " + std::to_string(run));
  }
}

}  // namespace
}  // namespace kiln::engine::cputest
