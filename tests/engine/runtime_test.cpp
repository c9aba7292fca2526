// ExecutionContext: input checks, dynamic shapes (one plan, several batch sizes), data-dependent
// output allocation, strided inputs, output buffers.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime_test_util.h"

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;

Plan dynamic_plan() {
  Network net;
  DimExpr b = DimExpr::symbol("batch");
  Tensor* x = net.add_input("x", DataType::kFloat32, {b, 8});
  Tensor* w = net.add_constant("w", weights({8, 4}, random_floats(32, 1)))->output();
  Tensor* y = net.add_matmul("mm", x, w)->output();
  y = net.add_activation("tanh", y, ActivationOp::kTanh)->output();
  ReduceParams rp;
  rp.axes = {0};
  Tensor* s = net.add_reduce("sum", y, rp)->output();
  net.mark_output(y, "y");
  net.mark_output(s, "colsum");
  BuilderConfig cfg;
  cfg.profile["batch"] = {1, 4, 64};
  return build(std::move(net), cfg);
}

TEST(RuntimeShapes, OnePlanSeveralBatchSizes) {
  Plan plan = dynamic_plan();
  ExecutionContext ctx(plan);
  const float* w = nullptr;
  for (Layer* l : plan.network().layers())
    if (auto* c = l->as<ConstantParams>()) w = c->weights.as<float>();
  ASSERT_NE(w, nullptr);
  for (int64_t batch : {1, 7, 64, 3, 7}) {
    HostTensor x{{batch, 8}, random_floats(static_cast<size_t>(batch) * 8, static_cast<uint32_t>(batch))};
    ctx.set_input("x", view_of(x));
    ctx.execute();
    const TensorView& y = ctx.output("y");
    ASSERT_EQ(y.dims, (std::vector<int64_t>{batch, 4}));
    ASSERT_EQ(ctx.output(1).dims, (std::vector<int64_t>{4}));
    for (int64_t r = 0; r < batch; ++r)
      for (int c = 0; c < 4; ++c) {
        double acc = 0;
        for (int k = 0; k < 8; ++k) acc += double(x.data[r * 8 + k]) * w[k * 4 + c];
        ASSERT_NEAR(y.as<float>()[r * 4 + c], std::tanh(acc), 1e-5);
      }
  }
}

// enqueue() queues a run without waiting for it: runs queued one after another on one context,
// over batch sizes that change the arena, each read back through a copy to the host (which waits
// for the stream), give what execute() gives. On the CPU, and on CUDA where there is a GPU.
TEST(RuntimeEnqueue, QueuedRunsMatchWaitedOnes) {
  Plan plan = dynamic_plan();
  std::vector<std::shared_ptr<Backend>> backends{make_cpu_backend()};
  if (cuda_available()) backends.push_back(std::shared_ptr<Backend>(make_cuda_backend()));
  for (const auto& backend : backends) {
    ExecutionContext queued(plan, backend), waited(plan);
    const std::vector<int64_t> batches{5, 5, 64, 1, 7, 7};
    std::vector<HostTensor> xs;
    for (int64_t b : batches) xs.push_back({{b, 8}, random_floats(size_t(b) * 8, uint32_t(100 + b))});
    for (size_t i = 0; i < xs.size(); ++i) {
      queued.set_input("x", view_of(xs[i]));
      queued.enqueue();
      const TensorView& y = queued.output("y");
      waited.set_input("x", view_of(xs[i]));
      waited.execute();
      const TensorView& want = waited.output("y");
      ASSERT_EQ(y.dims, want.dims);
      std::vector<float> got(size_t(y.numel()));
      backend->copy(got.data(), DeviceKind::kCPU, y.data, y.device, y.nbytes());  // waits for the stream
      for (size_t k = 0; k < got.size(); ++k)
        ASSERT_NEAR(got[k], want.as<float>()[k], 1e-5)
            << (backend->kind() == DeviceKind::kCUDA ? "cuda" : "cpu") << " run " << i << " element " << k;
    }
  }
}

TEST(RuntimeShapes, InputChecksNameTheInput) {
  Plan plan = dynamic_plan();
  ExecutionContext ctx(plan);
  HostTensor big{{65, 8}, std::vector<float>(65 * 8)};
  try {
    ctx.set_input("x", view_of(big));
    FAIL() << "batch 65 accepted";
  } catch (const ShapeError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("'x'"), std::string::npos) << m;
    EXPECT_NE(m.find("[1, 64]"), std::string::npos) << m;
  }
  HostTensor wrong{{2, 9}, std::vector<float>(18)};
  EXPECT_THROW(ctx.set_input("x", view_of(wrong)), ShapeError);
  HostTensor rank{{16}, std::vector<float>(16)};
  EXPECT_THROW(ctx.set_input("x", view_of(rank)), ShapeError);
  TensorView i64 = view_of(rank);
  i64.dtype = DataType::kInt64;
  EXPECT_THROW(ctx.set_input("x", i64), ShapeError);
  EXPECT_THROW(ctx.set_input("nope", view_of(rank)), ShapeError);
  EXPECT_THROW(ctx.execute(), ShapeError);  // x never set
}

TEST(RuntimeShapes, SymbolsMustAgreeAcrossInputs) {
  Network net;
  DimExpr n = DimExpr::symbol("n");
  Tensor* a = net.add_input("a", DataType::kFloat32, {n, 2});
  Tensor* b = net.add_input("b", DataType::kFloat32, {n, 2});
  net.mark_output(net.add_elementwise("add", a, b, BinaryOp::kAdd)->output(), "y");
  BuilderConfig cfg;
  cfg.profile["n"] = {1, 2, 8};
  Plan plan = build(std::move(net), cfg);
  ExecutionContext ctx(plan);
  HostTensor x3{{3, 2}, std::vector<float>(6, 1)}, x4{{4, 2}, std::vector<float>(8, 1)};
  ctx.set_input("a", view_of(x3));
  ctx.set_input("b", view_of(x4));
  EXPECT_THROW(ctx.execute(), ShapeError);
}

TEST(RuntimeShapes, DifferentSymbolsBroadcastCheckedAtRunTime) {
  Network net;
  Tensor* a = net.add_input("a", DataType::kFloat32, {DimExpr::symbol("p"), 2});
  Tensor* b = net.add_input("b", DataType::kFloat32, {DimExpr::symbol("q"), 2});
  net.mark_output(net.add_elementwise("add", a, b, BinaryOp::kAdd)->output(), "y");
  BuilderConfig cfg;
  cfg.profile["p"] = {1, 2, 8};
  cfg.profile["q"] = {1, 2, 8};
  Plan plan = build(std::move(net), cfg);
  HostTensor x3{{3, 2}, std::vector<float>(6, 1)}, x1{{1, 2}, std::vector<float>(2, 2)}, x4{{4, 2}, std::vector<float>(8)};
  auto out = run_plan(plan, {{"a", x3}, {"b", x3}});
  EXPECT_EQ(out[0].dims, (std::vector<int64_t>{3, 2}));
  ExecutionContext ctx(plan);
  ctx.set_input("a", view_of(x3));
  ctx.set_input("b", view_of(x4));
  EXPECT_THROW(ctx.execute(), ShapeError);
}

TEST(RuntimeOutputAllocation, NonZeroAllocatesAndBindsItsSymbol) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("n")});
  Tensor* zero = net.add_constant("zero", weights({}, {0.f}))->output();
  Tensor* mask = net.add_elementwise("pos", x, zero, BinaryOp::kGreater)->output();
  Tensor* idx = net.add_nonzero("nz", mask)->output();  // [count, 1]
  ShuffleParams sp;
  sp.reshape = Shape{-1};
  Tensor* flat = net.add_shuffle("flat", idx, sp)->output();
  Tensor* vals = net.add_gather("vals", x, flat, GatherMode::kAxis, 0)->output();
  Tensor* twice = net.add_elementwise("twice", vals, vals, BinaryOp::kAdd)->output();
  net.mark_output(idx, "idx");
  net.mark_output(twice, "vals");
  BuilderConfig cfg;
  cfg.profile["n"] = {1, 8, 32};
  Plan plan = build(std::move(net), cfg);
  EXPECT_TRUE(plan.requires_output_allocator());
  ExecutionContext ctx(plan);
  for (int round = 0; round < 2; ++round) {
    HostTensor in{{6}, round == 0 ? std::vector<float>{1, -1, 2, 0, -3, 4} : std::vector<float>{-1, -1, 5, -1, -1, -1}};
    ctx.set_input("x", view_of(in));
    ctx.execute();
    const TensorView& i = ctx.output("idx");
    const TensorView& v = ctx.output("vals");
    std::vector<int64_t> want_idx = round == 0 ? std::vector<int64_t>{0, 2, 5} : std::vector<int64_t>{2};
    ASSERT_EQ(i.dims, (std::vector<int64_t>{static_cast<int64_t>(want_idx.size()), 1}));
    ASSERT_EQ(v.dims, (std::vector<int64_t>{static_cast<int64_t>(want_idx.size())}));
    for (size_t k = 0; k < want_idx.size(); ++k) {
      EXPECT_EQ(i.as<int64_t>()[k], want_idx[k]);
      EXPECT_EQ(v.as<float>()[k], 2 * in.data[want_idx[k]]);
    }
  }
  // the data-dependent layers survive a plan round trip
  auto bytes = plan.serialize();
  Plan loaded = Plan::deserialize(bytes.data(), bytes.size());
  EXPECT_TRUE(loaded.requires_output_allocator());
}

TEST(RuntimeBinding, StridedInputsAndOutputBuffers) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {3, 2});
  net.mark_output(net.add_unary("neg", x, UnaryOp::kNeg)->output(), "y");
  Plan plan = build(std::move(net), {});
  // a transposed view of a 2x3 row-major buffer
  std::vector<float> storage{1, 2, 3, 4, 5, 6};
  TensorView v;
  v.data = storage.data();
  v.dims = {3, 2};
  v.strides = {1, 3};
  ExecutionContext ctx(plan);
  ctx.set_input("x", v);
  std::vector<float> out(6);
  TensorView ov;
  ov.data = out.data();
  ov.dims = {3, 2};
  ctx.set_output_buffer("y", ov);
  ctx.execute();
  EXPECT_EQ(out, (std::vector<float>{-1, -4, -2, -5, -3, -6}));
  EXPECT_EQ(ctx.output("y").as<float>()[1], -4);
}

TEST(RuntimeBackend, CudaFactoryWithoutCuda) {
#ifndef KILN_HAS_CUDA
  EXPECT_FALSE(cuda_available());
  EXPECT_THROW(make_cuda_backend(), NetworkError);
#else
  GTEST_SKIP() << "built with CUDA";
#endif
}

// The CPU backend's copy: large copies split over the worker threads land every byte (an odd size,
// not a multiple of the split), and overlapping ranges still move as memmove does.
TEST(RuntimeBackend, CpuCopyLargeAndOverlapping) {
  auto cpu = make_cpu_backend();
  const size_t n = (size_t(3) << 20) + 12345;
  std::vector<unsigned char> src(n), dst(n, 0);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<unsigned char>(i * 2654435761u >> 13);
  cpu->copy(dst.data(), DeviceKind::kCPU, src.data(), DeviceKind::kCPU, n);
  EXPECT_EQ(dst, src);
  std::vector<unsigned char> want(src.begin(), src.end() - 1000);
  cpu->copy(src.data() + 1000, DeviceKind::kCPU, src.data(), DeviceKind::kCPU, n - 1000);  // overlapping
  EXPECT_TRUE(std::equal(want.begin(), want.end(), src.begin() + 1000));
}

TEST(RuntimeBackend, EmptyBatch) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("b"), 4});
  net.mark_output(net.add_activation("relu", x, ActivationOp::kRelu)->output(), "y");
  BuilderConfig cfg;
  cfg.profile["b"] = {0, 1, 4};
  Plan plan = build(std::move(net), cfg);
  HostTensor x0{{0, 4}, {}};
  auto out = run_plan(plan, {{"x", x0}});
  EXPECT_EQ(out[0].dims, (std::vector<int64_t>{0, 4}));
}

}  // namespace
}  // namespace kiln::engine

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;

// Pure reshapes and identities move no data: their outputs alias the input's arena buffer (the
// runtime skips them), including chains of them and one that is a network output.
TEST(RuntimeAliases, ReshapesShareTheirInputsBuffer) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("b"), 16});
  Tensor* w = net.add_constant("w", weights({16, 8}, random_floats(128, 1)))->output();
  Tensor* mm = net.add_matmul("mm", x, w)->output();
  ShuffleParams flat;
  flat.reshape = Shape{-1};
  Tensor* r1 = net.add_shuffle("flat", mm, flat)->output();
  Tensor* r2 = net.add_identity("same", r1)->output();
  ShuffleParams back;
  back.reshape = Shape{DimExpr::symbol("b"), 2, 4};
  Tensor* r3 = net.add_shuffle("back", r2, back)->output();
  net.mark_output(net.add_unary("exp", r3, UnaryOp::kExp)->output(), "e");
  net.mark_output(r3, "r");
  net.mark_output(mm, "mm");  // without aliasing, mm, r2 and r3 would be alive together
  BuilderConfig cfg;
  cfg.profile["b"] = {1, 3, 8};
  Plan plan = build(std::move(net), cfg);
  // mm's buffer and exp's: the three views add nothing (2 x 3*8 floats, each rounded to 64 bytes)
  EXPECT_EQ(plan.memory().peak_activation_bytes, 2 * 128u);

  HostTensor in{{3, 16}, random_floats(48, 2)};
  auto outs = run_plan(plan, {{"x", in}});
  ASSERT_EQ(outs.size(), 3u);
  EXPECT_EQ(outs[2].data, outs[1].data);
  EXPECT_EQ(outs[1].dims, (std::vector<int64_t>{3, 2, 4}));
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 8; ++j) {
      double ref = 0;
      for (int k = 0; k < 16; ++k) ref += double(in.data[i * 16 + k]) * random_floats(128, 1)[k * 8 + j];
      EXPECT_NEAR(outs[1].data[i * 8 + j], ref, 1e-4);
      EXPECT_NEAR(outs[0].data[i * 8 + j], std::exp(ref), 1e-3 * std::exp(ref));
    }
}

}  // namespace
}  // namespace kiln::engine
