// The CUDA backend against the CPU backend: every layer kind, same network, same seeded inputs,
// run once through cpu::execute and once through the CUDA backend (layer by layer, like the CPU
// tests' run_direct), plus the whole pipeline (build -> ExecutionContext) on CUDA with graph
// capture and replay. Skips cleanly where no GPU is visible (CI).
#include "cuda_test_util.h"

#include "engine/builder.h"
#include "engine/runtime.h"

namespace kiln::engine::cputest {
namespace {

TEST(CudaLayers, ElementwiseBinary) {
  REQUIRE_GPU();
  const BinaryOp float_ops[] = {BinaryOp::kAdd, BinaryOp::kSub, BinaryOp::kMul, BinaryOp::kDiv, BinaryOp::kFloorDiv,
                                BinaryOp::kTruncDiv, BinaryOp::kRemainder, BinaryOp::kFmod, BinaryOp::kPow,
                                BinaryOp::kMin, BinaryOp::kMax, BinaryOp::kEqual, BinaryOp::kNotEqual, BinaryOp::kLess,
                                BinaryOp::kLessEqual, BinaryOp::kGreater, BinaryOp::kGreaterEqual};
  for (DataType t : kFloats) {
    Host a = random_host(t, {2, 3, 4}, 1), b = random_host(t, {3, 1}, 2, 0.5, 2);
    for (BinaryOp op : float_ops)
      check(std::string("binary ") + to_string(op) + " " + to_string(t),
            [&](Network& n) {
              Tensor* x0 = input(n, a, "a");
              Tensor* x1 = input(n, b, "b");
              n.mark_output(n.add_elementwise("e", x0, x1, op)->output(), "y");
            },
            {a, b});
  }
  for (DataType t : {DataType::kInt32, DataType::kInt64, DataType::kInt8}) {
    Host a = random_host(t, {4, 5}, 3), b = random_host(t, {5}, 4);
    for (BinaryOp op : {BinaryOp::kAdd, BinaryOp::kMul, BinaryOp::kFloorDiv, BinaryOp::kRemainder, BinaryOp::kDiv,
                        BinaryOp::kMax, BinaryOp::kBitAnd, BinaryOp::kBitOr, BinaryOp::kBitXor, BinaryOp::kLess})
      check(std::string("int binary ") + to_string(op) + " " + to_string(t),
            [&](Network& n) {
              Tensor* x0 = input(n, a, "a");
              Tensor* x1 = input(n, b, "b");
              n.mark_output(n.add_elementwise("e", x0, x1, op)->output(), "y");
            },
            {a, b});
  }
  Host p = random_host(DataType::kBool, {6, 2}, 5), q = random_host(DataType::kBool, {6, 2}, 6);
  for (BinaryOp op : {BinaryOp::kAnd, BinaryOp::kOr, BinaryOp::kXor})
    check(std::string("bool ") + to_string(op),
          [&](Network& n) {
            Tensor* x0 = input(n, p, "a");
            Tensor* x1 = input(n, q, "b");
            n.mark_output(n.add_elementwise("e", x0, x1, op)->output(), "y");
          },
          {p, q});
}

// Pointwise kernels move 8 neighbouring elements per thread when every innermost row holds whole
// groups of 8 and each input is contiguous or broadcast along it, element by element otherwise:
// both paths, each with inputs broadcast along inner and outer dims, for 1- to 8-byte types.
TEST(CudaLayers, PointwiseVectorAndElementPaths) {
  REQUIRE_GPU();
  struct Case { std::vector<int64_t> a, b; };
  const std::vector<Case> cases = {
      {{4, 64}, {4, 64}},        // flat, groups of 8
      {{5, 7}, {5, 7}},          // flat, 35 elements
      {{6, 16}, {16}},           // bias along the innermost dim
      {{6, 16}, {6, 1}},         // broadcast along the innermost dim
      {{3, 8, 24}, {3, 1, 24}},  // broadcast along a middle dim
      {{6, 12}, {12}},           // rows of 12: element path
      {{2, 3, 40}, {1, 3, 1}},   // per-channel over rows of 40
  };
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16, DataType::kInt64, DataType::kInt8})
    for (const Case& c : cases) {
      Host a = random_host(t, c.a, 11), b = random_host(t, c.b, 12);
      check("pointwise paths " + std::string(to_string(t)),
            [&](Network& n) {
              Tensor* s = n.add_elementwise("sum", input(n, a, "a"), input(n, b, "b"), BinaryOp::kAdd)->output();
              Tensor* m = n.add_elementwise("max", s, input(n, b, "b2"), BinaryOp::kMax)->output();
              n.mark_output(m, "y");
              n.mark_output(n.add_elementwise("less", m, s, BinaryOp::kLess)->output(), "mask");
            },
            {a, b, b});
    }
}

TEST(CudaLayers, UnaryAndActivation) {
  REQUIRE_GPU();
  for (DataType t : kFloats) {
    Host x = random_host(t, {3, 7, 5}, 7, -3, 3);
    for (int op = 0; op < enum_count<UnaryOp>(); ++op) {
      Network probe;
      try {
        probe.add_unary("u", input(probe, x, "x"), UnaryOp(op));
      } catch (const NetworkError&) {
        continue;  // refused for this dtype (e.g. logical not of a float)
      }
      check(std::string("unary ") + to_string(UnaryOp(op)) + " " + to_string(t),
            [&](Network& n) { n.mark_output(n.add_unary("u", input(n, x, "x"), UnaryOp(op))->output(), "y"); }, {x});
    }
    for (int op = 0; op < enum_count<ActivationOp>(); ++op) {
      double alpha = op == int(ActivationOp::kClip) ? -0.5 : 0.2, beta = op == int(ActivationOp::kClip) ? 0.7 : 5;
      check(std::string("activation ") + to_string(ActivationOp(op)) + " " + to_string(t),
            [&](Network& n) {
              n.mark_output(n.add_activation("a", input(n, x, "x"), ActivationOp(op), alpha, beta)->output(), "y");
            },
            {x});
    }
  }
  Host xb = random_host(DataType::kBool, {17}, 8);
  check("not", [&](Network& n) { n.mark_output(n.add_unary("u", input(n, xb, "x"), UnaryOp::kNot)->output(), "y"); }, {xb});
  Host xi = random_host(DataType::kInt32, {17}, 8);
  for (UnaryOp op : {UnaryOp::kAbs, UnaryOp::kNeg, UnaryOp::kSign, UnaryOp::kBitNot})
    check(std::string("int unary ") + to_string(op),
          [&](Network& n) { n.mark_output(n.add_unary("u", input(n, xi, "x"), op)->output(), "y"); }, {xi});
}

TEST(CudaLayers, CastSelectFused) {
  REQUIRE_GPU();
  Host x = random_host(DataType::kFloat32, {4, 9}, 9, -300, 300);
  for (DataType to : {DataType::kFloat16, DataType::kBFloat16, DataType::kInt32, DataType::kInt64, DataType::kInt8,
                      DataType::kUInt8, DataType::kBool})
    check(std::string("cast to ") + to_string(to),
          [&](Network& n) { n.mark_output(n.add_cast("c", input(n, x, "x"), to)->output(), "y"); }, {x});
  Host c = random_host(DataType::kBool, {4, 1}, 10), a = random_host(DataType::kFloat16, {4, 9}, 11),
       b = random_host(DataType::kFloat16, {9}, 12);
  check("select", [&](Network& n) {
    Tensor* x0 = input(n, c, "c");
    Tensor* x1 = input(n, a, "a");
    Tensor* x2 = input(n, b, "b");
    n.mark_output(n.add_select("s", x0, x1, x2)->output(), "y");
  }, {c, a, b});
  // A builder-fused chain: (a * b + 1) -> gelu -> cast f32, with a second output.
  check("fused pointwise", [&](Network& n) {
    Tensor* ta = input(n, a, "a");
    Tensor* tb = input(n, b, "b");
    Tensor* m = n.add_elementwise("m", ta, tb, BinaryOp::kMul)->output();
    Tensor* g = n.add_activation("g", m, ActivationOp::kGeluErf)->output();
    Tensor* f = n.add_cast("f", g, DataType::kFloat32)->output();
    Tensor* e = n.add_unary("e", f, UnaryOp::kExp)->output();
    n.mark_output(e, "y");
    n.mark_output(g, "z");
    passes::fuse_pointwise(n);
    size_t fused = 0;
    for (Layer* l : n.layers()) fused += l->as<FusedPointwiseParams>() != nullptr;
    EXPECT_GE(fused, 1u);
  }, {a, b});
}

// Builder-made programs beyond plain chains: inlined scalar constants and a select in one
// program, and row programs (an RMS norm and a softmax written out in primitives, fuse_rows).
TEST(CudaLayers, FusedConstantSelectAndRowPrograms) {
  REQUIRE_GPU();
  auto count_fused = [](const Network& n) {
    size_t fused = 0;
    for (const Layer* l : n.layers()) fused += l->as<FusedPointwiseParams>() != nullptr;
    return fused;
  };
  for (DataType t : kFloats) {
    Host x = random_host(t, {6, 40}, 21), y = random_host(t, {40}, 22);
    check(std::string("fused select with constants ") + to_string(t), [&](Network& n) {
      Tensor* tx = input(n, x, "x");
      Tensor* ty = input(n, y, "y");
      Tensor* half = constant(n, random_host(t, {1}, 23, 0.5, 0.5), "half");
      Tensor* scaled = n.add_elementwise("scaled", tx, half, BinaryOp::kMul)->output();
      Tensor* above = n.add_elementwise("above", tx, ty, BinaryOp::kGreater)->output();
      n.mark_output(n.add_select("pick", above, scaled, ty)->output(), "z");
      passes::fuse_pointwise(n);
      ASSERT_EQ(count_fused(n), 1u) << n.str();
    }, {x, y});
    for (int64_t row : {7, 64, 1000}) {
      Host r = random_host(t, {3, row}, 24, -2, 2);
      check("fused RMS norm and softmax rows of " + std::to_string(row) + " " + to_string(t), [&](Network& n) {
        Tensor* tx = input(n, r, "x");
        ReduceParams mean;
        mean.op = ReduceOp::kMean;
        mean.axes = {1};
        mean.keep_dims = true;
        Tensor* sq = n.add_elementwise("sq", tx, tx, BinaryOp::kMul)->output();
        Tensor* var = n.add_reduce("var", sq, mean)->output();
        Tensor* eps = constant(n, random_host(t, {1, 1}, 25, 1e-3, 1e-3), "eps");
        Tensor* inv = n.add_unary("inv", n.add_elementwise("add", var, eps, BinaryOp::kAdd)->output(),
                                  UnaryOp::kRsqrt)->output();
        n.mark_output(n.add_elementwise("rms", tx, inv, BinaryOp::kMul)->output(), "rms");
        ReduceParams max = mean;
        max.op = ReduceOp::kMax;
        ReduceParams sum = mean;
        sum.op = ReduceOp::kSum;
        Tensor* shifted = n.add_elementwise("shift", tx, n.add_reduce("max", tx, max)->output(), BinaryOp::kSub)->output();
        Tensor* e = n.add_unary("exp", shifted, UnaryOp::kExp)->output();
        n.mark_output(n.add_elementwise("softmax", e, n.add_reduce("sum", e, sum)->output(), BinaryOp::kDiv)->output(),
                      "softmax");
        passes::fuse_rows(n);
        passes::eliminate_dead_layers(n);
        bool row_reduce = false;
        for (const Layer* l : n.layers())
          if (const auto* fp = l->as<FusedPointwiseParams>())
            for (const PointwiseInstr& in : fp->program) row_reduce |= in.kind == PointwiseInstr::Kind::kRowReduce;
        ASSERT_TRUE(row_reduce) << n.str();
      }, {r}, 2);
    }
  }
}

}  // namespace
}  // namespace kiln::engine::cputest
