// CPU kernels of the pointwise family against float64 references: elementwise binary ops (every
// op, every meaningful dtype, broadcasting, empty and large tensors, dynamic dims), unary ops,
// activations, select, cast and the builder's fused pointwise programs.
#include <cstring>

#include "cpu_test_util.h"
#include "engine/cpu/kernels.h"
#include "engine/half.h"
#include "engine/cpu/ops.h"

namespace kiln::engine::cputest {
namespace {

const std::vector<DataType> kAll = {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16, DataType::kInt64,
                                    DataType::kInt32, DataType::kInt8, DataType::kUInt8, DataType::kBool};

bool is_cmp(BinaryOp op) { return op >= BinaryOp::kEqual && op <= BinaryOp::kGreaterEqual; }
bool is_logic(BinaryOp op) { return op == BinaryOp::kAnd || op == BinaryOp::kOr || op == BinaryOp::kXor; }
bool is_bit(BinaryOp op) { return op >= BinaryOp::kBitAnd; }

bool valid(BinaryOp op, DataType t) {
  if (is_logic(op)) return t == DataType::kBool;
  if (is_bit(op)) return !is_floating(t);
  if (t == DataType::kBool) return is_cmp(op) || op == BinaryOp::kMin || op == BinaryOp::kMax;
  if (t == DataType::kUInt8 && (op == BinaryOp::kSub)) return false;  // wraps; not interesting here
  return true;
}
bool divides(BinaryOp op) {
  return op == BinaryOp::kDiv || op == BinaryOp::kFloorDiv || op == BinaryOp::kTruncDiv ||
         op == BinaryOp::kRemainder || op == BinaryOp::kFmod;
}

double ref_binary(BinaryOp op, double a, double b, bool integer) {
  switch (op) {
    case BinaryOp::kAdd: return a + b;
    case BinaryOp::kSub: return a - b;
    case BinaryOp::kMul: return a * b;
    case BinaryOp::kDiv: return integer ? std::trunc(a / b) : a / b;
    case BinaryOp::kFloorDiv: return std::floor(a / b);
    case BinaryOp::kTruncDiv: return std::trunc(a / b);
    case BinaryOp::kRemainder: return a - b * std::floor(a / b);
    case BinaryOp::kFmod: return std::fmod(a, b);
    case BinaryOp::kPow: return std::pow(a, b);
    case BinaryOp::kMin: return (std::isnan(a) || std::isnan(b)) ? NAN : std::min(a, b);
    case BinaryOp::kMax: return (std::isnan(a) || std::isnan(b)) ? NAN : std::max(a, b);
    case BinaryOp::kEqual: return a == b;
    case BinaryOp::kNotEqual: return a != b;
    case BinaryOp::kLess: return a < b;
    case BinaryOp::kLessEqual: return a <= b;
    case BinaryOp::kGreater: return a > b;
    case BinaryOp::kGreaterEqual: return a >= b;
    case BinaryOp::kAnd: return a && b;
    case BinaryOp::kOr: return a || b;
    case BinaryOp::kXor: return bool(a) != bool(b);
    case BinaryOp::kBitAnd: return double(int64_t(a) & int64_t(b));
    case BinaryOp::kBitOr: return double(int64_t(a) | int64_t(b));
    case BinaryOp::kBitXor: return double(int64_t(a) ^ int64_t(b));
  }
  return 0;
}

struct ShapePair { std::vector<int64_t> a, b; };
const std::vector<ShapePair> kShapes = {
    {{4, 5}, {4, 5}}, {{2, 3, 4}, {4}}, {{3, 1, 5}, {1, 4, 1}}, {{1}, {7}}, {{}, {3, 2}},
    {{0, 3}, {1, 3}}, {{2, 1, 3, 1}, {5, 1, 6}}, {{70001}, {1}}, {{2, 6, 6, 16}, {2, 1, 1, 16}},
};

TEST(CpuElementwise, EveryOpDtypeAndBroadcast) {
  for (int opi = 0; opi < enum_count<BinaryOp>(); ++opi) {
    const BinaryOp op = BinaryOp(opi);
    for (DataType t : kAll) {
      if (!valid(op, t)) continue;
      uint32_t seed = 17;
      for (const auto& sp : kShapes) {
        const bool big = sp.a.size() == 1 && sp.a[0] > 1000;
        if (big && t != DataType::kFloat32 && t != DataType::kInt32) continue;
        Host a = random_host(t, sp.a, ++seed), b = random_host(t, sp.b, ++seed);
        if (op == BinaryOp::kPow) {
          b = random_host(t, sp.b, seed, 0, 2);
          if (!is_floating(t)) for (int64_t i = 0; i < b.numel(); ++i) b.set(i, std::abs(b.get(i)) > 2 ? 2 : std::abs(b.get(i)));
          if (is_floating(t)) a = random_host(t, sp.a, seed + 7, 0.25, 2);
        }
        if (divides(op))  // no zero divisors (integer division by zero is undefined here)
          for (int64_t i = 0; i < b.numel(); ++i) if (b.get(i) == 0) b.set(i, t == DataType::kUInt8 ? 3 : -3);
        const std::string what = std::string(to_string(op)) + " " + to_string(t) + " " +
                                 std::to_string(sp.a.size()) + "d/" + std::to_string(sp.b.size()) + "d";
        Network net;
        auto* x = net.add_input("a", t, shape_of(sp.a));
        auto* y = net.add_input("b", t, shape_of(sp.b));
        net.mark_output(net.add_elementwise("op", x, y, op)->output(), "out");
        auto out = run_direct(net, {a, b});
        const auto od = bcast_dims(sp.a, sp.b);
        ASSERT_EQ(out[0].dims, od) << what;
        std::vector<double> want(size_t(out[0].numel()));
        for (int64_t i = 0; i < out[0].numel(); ++i) {
          auto idx = unravel(i, od);
          want[size_t(i)] = ref_binary(op, a.get(bcast_index(idx, sp.a)), b.get(bcast_index(idx, sp.b)), !is_floating(t));
        }
        // pow in f32 is computed by powf: relative error grows with the result.
        double tol = tolerance(out[0].dtype) * (op == BinaryOp::kPow ? 4 : 1);
        expect_close(out[0], want, tol, tol, what);
      }
    }
  }
}

TEST(CpuElementwise, PythonDivisionSemantics) {
  Host a = host_of(DataType::kFloat32, {6}, {7, -7, 7, -7, 5.5, -0.0});
  Host b = host_of(DataType::kFloat32, {6}, {2, 2, -2, -2, 2.5, 3});
  auto run = [&](BinaryOp op, DataType t, const Host& x, const Host& y) {
    Network net;
    auto* i0 = net.add_input("a", t, shape_of(x.dims));
    auto* i1 = net.add_input("b", t, shape_of(y.dims));
    net.mark_output(net.add_elementwise("op", i0, i1, op)->output(), "out");
    return run_direct(net, {x, y})[0].values();
  };
  EXPECT_EQ(run(BinaryOp::kFloorDiv, DataType::kFloat32, a, b), (std::vector<double>{3, -4, -4, 3, 2, -0.0}));
  EXPECT_EQ(run(BinaryOp::kRemainder, DataType::kFloat32, a, b), (std::vector<double>{1, 1, -1, -1, 0.5, 0}));
  EXPECT_EQ(run(BinaryOp::kFmod, DataType::kFloat32, a, b), (std::vector<double>{1, -1, 1, -1, 0.5, 0}));
  Host ia = host_of(DataType::kInt64, {4}, {7, -7, 7, -7}), ib = host_of(DataType::kInt64, {4}, {2, 2, -2, -2});
  EXPECT_EQ(run(BinaryOp::kFloorDiv, DataType::kInt64, ia, ib), (std::vector<double>{3, -4, -4, 3}));
  EXPECT_EQ(run(BinaryOp::kRemainder, DataType::kInt64, ia, ib), (std::vector<double>{1, 1, -1, -1}));
  EXPECT_EQ(run(BinaryOp::kTruncDiv, DataType::kInt64, ia, ib), (std::vector<double>{3, -3, -3, 3}));
  Host n = host_of(DataType::kFloat32, {2}, {NAN, 1}), m = host_of(DataType::kFloat32, {2}, {1, 2});
  auto mx = run(BinaryOp::kMax, DataType::kFloat32, n, m);
  EXPECT_TRUE(std::isnan(mx[0]));
  EXPECT_EQ(mx[1], 2);
}

TEST(CpuElementwise, DynamicDimsBoundAtRunTime) {
  for (int64_t n : {1, 3, 17, 0}) {
    Network net;
    auto s = DimExpr::symbol("s0");
    auto* x = net.add_input("x", DataType::kFloat32, {s, 8});
    auto* y = net.add_input("y", DataType::kFloat32, {1, 8});
    net.mark_output(net.add_elementwise("add", x, y, BinaryOp::kAdd)->output(), "out");
    Host a = random_host(DataType::kFloat32, {n, 8}, 3), b = random_host(DataType::kFloat32, {1, 8}, 4);
    auto out = run_direct(net, {a, b});
    ASSERT_EQ(out[0].dims, (std::vector<int64_t>{n, 8}));
    std::vector<double> want;
    for (int64_t i = 0; i < n * 8; ++i) want.push_back(a.get(i) + b.get(i % 8));
    expect_close(out[0], want, "dynamic add n=" + std::to_string(n));
  }
}

double ref_unary(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::kExp: return std::exp(x);
    case UnaryOp::kLog: return std::log(x);
    case UnaryOp::kLog2: return std::log2(x);
    case UnaryOp::kLog1p: return std::log1p(x);
    case UnaryOp::kExpm1: return std::expm1(x);
    case UnaryOp::kSqrt: return std::sqrt(x);
    case UnaryOp::kRsqrt: return 1 / std::sqrt(x);
    case UnaryOp::kAbs: return std::fabs(x);
    case UnaryOp::kNeg: return -x;
    case UnaryOp::kSin: return std::sin(x);
    case UnaryOp::kCos: return std::cos(x);
    case UnaryOp::kTan: return std::tan(x);
    case UnaryOp::kAsin: return std::asin(x);
    case UnaryOp::kAcos: return std::acos(x);
    case UnaryOp::kAtan: return std::atan(x);
    case UnaryOp::kSinh: return std::sinh(x);
    case UnaryOp::kCosh: return std::cosh(x);
    case UnaryOp::kTanh: return std::tanh(x);
    case UnaryOp::kErf: return std::erf(x);
    case UnaryOp::kLgamma: return std::lgamma(x);
    case UnaryOp::kDigamma: {  // lgamma's derivative, by central differences (independent of the kernel's series)
      const double h = 1e-5 * std::max(1.0, std::fabs(x));
      return (std::lgamma(x + h) - std::lgamma(x - h)) / (2 * h);
    }
    case UnaryOp::kErfinv: {  // the erf inverse by bisection
      double lo = -6, hi = 6;
      for (int i = 0; i < 200; ++i) (std::erf((lo + hi) / 2) < x ? lo : hi) = (lo + hi) / 2;
      return (lo + hi) / 2;
    }
    case UnaryOp::kFloor: return std::floor(x);
    case UnaryOp::kCeil: return std::ceil(x);
    case UnaryOp::kRound: { double r = std::round(x); if (std::fabs(x - std::trunc(x)) == 0.5) r = 2 * std::round(x / 2); return r; }
    case UnaryOp::kTrunc: return std::trunc(x);
    case UnaryOp::kSign: return (x > 0) - (x < 0);
    case UnaryOp::kReciprocal: return 1 / x;
    case UnaryOp::kNot: return !x;
    case UnaryOp::kIsNan: return std::isnan(x);
    case UnaryOp::kIsInf: return std::isinf(x);
    case UnaryOp::kBitNot: return double(~int64_t(x));
  }
  return 0;
}

TEST(CpuUnary, EveryOpAndDtype) {
  for (int opi = 0; opi < enum_count<UnaryOp>(); ++opi) {
    const UnaryOp op = UnaryOp(opi);
    std::vector<DataType> types;
    switch (op) {
      case UnaryOp::kNot: types = {DataType::kBool}; break;
      case UnaryOp::kBitNot: types = {DataType::kInt64, DataType::kInt32, DataType::kInt8}; break;
      case UnaryOp::kAbs: case UnaryOp::kNeg: case UnaryOp::kSign: case UnaryOp::kFloor: case UnaryOp::kCeil:
      case UnaryOp::kRound: case UnaryOp::kTrunc:
        types = {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16, DataType::kInt64, DataType::kInt32, DataType::kInt8};
        break;
      default: types = float_types();
    }
    double lo = -2, hi = 2;
    if (op == UnaryOp::kLog || op == UnaryOp::kLog2 || op == UnaryOp::kSqrt || op == UnaryOp::kRsqrt) lo = 0.125;
    if (op == UnaryOp::kAsin || op == UnaryOp::kAcos) lo = -1, hi = 1;
    if (op == UnaryOp::kLog1p) lo = -0.5;
    if (op == UnaryOp::kErfinv) lo = -0.99, hi = 0.99;
    if (op == UnaryOp::kLgamma || op == UnaryOp::kDigamma) lo = 0.05, hi = 12;  // negatives: the oracle's cases
    for (DataType t : types)
      for (auto dims : std::vector<std::vector<int64_t>>{{3, 7}, {0}, {}, {50000}}) {
        if (dims == std::vector<int64_t>{50000} && t != DataType::kFloat32) continue;
        Host x = random_host(t, dims, 11, lo, hi);
        Network net;
        auto* in = net.add_input("x", t, shape_of(dims));
        net.mark_output(net.add_unary("u", in, op)->output(), "out");
        auto out = run_direct(net, {x});
        std::vector<double> want;
        for (int64_t i = 0; i < x.numel(); ++i) want.push_back(ref_unary(op, x.get(i)));
        double tol = tolerance(out[0].dtype) * 2;
        expect_close(out[0], want, tol, tol, std::string(to_string(op)) + " " + to_string(t));
      }
  }
}

// An fp16 activation layer gives the bits the fused pointwise programs give (activation_rows in
// float, then rounded), on every finite fp16 value: the two once differed by an fp16 ulp on GELU.
TEST(CpuActivation, Fp16LayerMatchesTheFloatRows) {
  std::vector<uint16_t> bits;
  for (uint32_t b = 0; b < 65536; ++b)
    if (std::isfinite(f16_bits_to_float(uint16_t(b)))) bits.push_back(uint16_t(b));
  const int64_t n = int64_t(bits.size());
  Host x(DataType::kFloat16, {n});
  std::memcpy(x.bytes.data(), bits.data(), bits.size() * 2);
  for (ActivationOp op : {ActivationOp::kGeluErf, ActivationOp::kGeluTanh, ActivationOp::kTanh, ActivationOp::kSigmoid,
                          ActivationOp::kSilu}) {
    Network net;
    net.mark_output(net.add_activation("act", net.add_input("x", DataType::kFloat16, Shape{n}), op)->output(), "y");
    const Host got = run_direct(net, {x})[0];
    std::vector<float> row(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) row[i] = f16_bits_to_float(bits[i]);
    cpu::activation_rows(ActivationParams{op}, row.data(), row.data(), n);
    int mismatches = 0;
    for (size_t i = 0; i < bits.size(); ++i) {
      uint16_t g;
      std::memcpy(&g, got.bytes.data() + 2 * i, 2);
      mismatches += g != float_to_f16_bits(row[i]);
    }
    EXPECT_EQ(mismatches, 0) << to_string(op);
  }
}

TEST(CpuUnary, RoundHalfToEvenAndNanChecks) {
  Host x = host_of(DataType::kFloat32, {8}, {0.5, 1.5, 2.5, -0.5, -2.5, 3.5, 2.4, -2.6});
  Network net;
  auto* in = net.add_input("x", DataType::kFloat32, {8});
  net.mark_output(net.add_unary("r", in, UnaryOp::kRound)->output(), "out");
  EXPECT_EQ(run_direct(net, {x})[0].values(), (std::vector<double>{0, 2, 2, -0.0, -2, 4, 2, -3}));
  Host y = host_of(DataType::kFloat16, {3}, {NAN, INFINITY, 1});
  Network n2;
  auto* i2 = n2.add_input("x", DataType::kFloat16, {3});
  n2.mark_output(n2.add_unary("n", i2, UnaryOp::kIsNan)->output(), "nan");
  n2.mark_output(n2.add_unary("i", i2, UnaryOp::kIsInf)->output(), "inf");
  auto o = run_direct(n2, {y});
  EXPECT_EQ(o[0].values(), (std::vector<double>{1, 0, 0}));
  EXPECT_EQ(o[1].values(), (std::vector<double>{0, 1, 0}));
}

double ref_act(ActivationOp op, double a, double b, double x) {
  switch (op) {
    case ActivationOp::kRelu: return std::max(x, 0.0);
    case ActivationOp::kSigmoid: return 1 / (1 + std::exp(-x));
    case ActivationOp::kTanh: return std::tanh(x);
    case ActivationOp::kGeluErf: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case ActivationOp::kGeluTanh: return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case ActivationOp::kSilu: return x / (1 + std::exp(-x));
    case ActivationOp::kHardSigmoid: return std::clamp(x / 6 + 0.5, 0.0, 1.0);
    case ActivationOp::kHardSwish: return x * std::clamp(x + 3, 0.0, 6.0) / 6;
    case ActivationOp::kLeakyRelu: return x > 0 ? x : a * x;
    case ActivationOp::kElu: return x > 0 ? x : a * (std::exp(x) - 1);
    case ActivationOp::kSoftplus: return x * a > b ? x : std::log(1 + std::exp(a * x)) / a;
    case ActivationOp::kClip: return std::clamp(x, a, b);
    case ActivationOp::kMish: return x * std::tanh(std::log(1 + std::exp(x)));
  }
  return 0;
}

TEST(CpuActivation, EveryOpAndFloatType) {
  for (int opi = 0; opi < enum_count<ActivationOp>(); ++opi) {
    const ActivationOp op = ActivationOp(opi);
    double a = 0, b = 0;
    if (op == ActivationOp::kLeakyRelu) a = 0.1;
    if (op == ActivationOp::kElu) a = 1.3;
    if (op == ActivationOp::kSoftplus) a = 2, b = 3;  // beta 2, threshold 3: both branches hit
    if (op == ActivationOp::kClip) a = -0.5, b = 0.75;
    for (DataType t : float_types()) {
      Host x = random_host(t, {5, 301}, 5, -4, 4);
      Network net;
      auto* in = net.add_input("x", t, {5, 301});
      net.mark_output(net.add_activation("act", in, op, a, b)->output(), "out");
      auto out = run_direct(net, {x});
      std::vector<double> want;
      for (int64_t i = 0; i < x.numel(); ++i) want.push_back(ref_act(op, a, b, x.get(i)));
      double tol = tolerance(t) * 2;
      expect_close(out[0], want, tol, tol, std::string(to_string(op)) + " " + to_string(t));
    }
  }
}

TEST(CpuSelect, BroadcastAnyDtype) {
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kInt64, DataType::kInt8, DataType::kBool}) {
    Host c = random_host(DataType::kBool, {3, 1, 4}, 1), a = random_host(t, {5, 4}, 2), b = random_host(t, {1}, 3);
    Network net;
    auto* ic = net.add_input("c", DataType::kBool, {3, 1, 4});
    auto* ia = net.add_input("a", t, {5, 4});
    auto* ib = net.add_input("b", t, {1});
    net.mark_output(net.add_select("where", ic, ia, ib)->output(), "out");
    auto out = run_direct(net, {c, a, b});
    std::vector<int64_t> od{3, 5, 4};
    ASSERT_EQ(out[0].dims, od);
    std::vector<double> want;
    for (int64_t i = 0; i < 60; ++i) {
      auto idx = unravel(i, od);
      want.push_back(c.get(bcast_index(idx, c.dims)) ? a.get(bcast_index(idx, a.dims)) : b.get(0));
    }
    expect_close(out[0], want, 0, 0, std::string("where ") + to_string(t));
  }
}

TEST(CpuCast, AllPairs) {
  const std::vector<double> vals{-3.75, -1, -0.5, 0, 0.25, 1, 2.5, 7};
  for (DataType from : kAll)
    for (DataType to : kAll) {
      Host x(from, {8});
      for (int i = 0; i < 8; ++i) {
        double v = vals[size_t(i)];
        if (!is_floating(from)) v = std::trunc(v);
        if (from == DataType::kUInt8) v = std::fabs(v);
        if (from == DataType::kBool) v = v != 0;
        x.set(i, v);
      }
      Network net;
      auto* in = net.add_input("x", from, {8});
      net.mark_output(net.add_cast("cast", in, to)->output(), "out");
      auto out = run_direct(net, {x});
      std::vector<double> want;
      for (int i = 0; i < 8; ++i) {
        double v = x.get(i);
        if (to == DataType::kBool) v = v != 0;
        else if (!is_floating(to)) v = std::trunc(v);
        if (to == DataType::kUInt8 && v < 0) v += 256;
        want.push_back(v);
      }
      expect_close(out[0], want, 0, 0, std::string("cast ") + to_string(from) + "->" + to_string(to));
    }
}

TEST(CpuFusedPointwise, ProgramMatchesReference) {
  // r0 = x [4,5], r1 = y [5]; r2 = x*y; r3 = gelu(r2); r4 = 0.5; r5 = r3 + r4; r6 = r5 > x;
  // r7 = where(r6, r5, x); r8 = abs(r7); outputs r8, r6.
  for (DataType t : float_types()) {
    FusedPointwiseParams p;
    auto instr = [&](PointwiseInstr::Kind k, DataType dt, std::vector<int32_t> ops) {
      PointwiseInstr i{k};
      i.dtype = dt;
      i.operands = std::move(ops);
      return i;
    };
    auto mul = instr(PointwiseInstr::Kind::kBinary, t, {0, 1});
    mul.binary = BinaryOp::kMul;
    auto gelu = instr(PointwiseInstr::Kind::kActivation, t, {2});
    gelu.activation = ActivationParams{ActivationOp::kGeluErf};
    auto c = instr(PointwiseInstr::Kind::kConstant, t, {});
    c.constant = 0.5;
    auto add = instr(PointwiseInstr::Kind::kBinary, t, {3, 4});
    add.binary = BinaryOp::kAdd;
    auto gt = instr(PointwiseInstr::Kind::kBinary, DataType::kBool, {5, 0});
    gt.binary = BinaryOp::kGreater;
    auto sel = instr(PointwiseInstr::Kind::kSelect, t, {6, 5, 0});
    auto ab = instr(PointwiseInstr::Kind::kUnary, t, {7});
    ab.unary = UnaryOp::kAbs;
    p.program = {mul, gelu, c, add, gt, sel, ab};
    p.outputs = {8, 6};
    Host x = random_host(t, {4, 5}, 9), y = random_host(t, {5}, 10);
    Network net;
    auto* ix = net.add_input("x", t, {4, 5});
    auto* iy = net.add_input("y", t, {5});
    Layer* l = net.add_layer("fused", {ix, iy}, p);
    net.mark_output(l->output(0), "a");
    net.mark_output(l->output(1), "b");
    auto out = run_direct(net, {x, y});
    std::vector<double> wa, wb;
    for (int64_t i = 0; i < 20; ++i) {
      double xv = x.get(i), r5 = ref_act(ActivationOp::kGeluErf, 0, 0, xv * y.get(i % 5)) + 0.5;
      bool g = r5 > xv;
      wa.push_back(std::fabs(g ? r5 : xv));
      wb.push_back(g);
    }
    expect_close(out[0], wa, 3 * tolerance(t), 3 * tolerance(t), std::string("fused ") + to_string(t));
    // The comparison may flip only where r5 and x are within rounding of each other.
    for (int64_t i = 0; i < 20; ++i)
      if (out[1].get(i) != wb[size_t(i)]) EXPECT_NEAR(out[0].get(i), wa[size_t(i)], 0.05);
  }
}

// A channels-last batch norm + ReLU as the builder fuses it, relu(x * s + t) with s and t
// per-channel vectors [1, 1, 1, C] and a scalar [1, 1, 1, 1] added, runs in blocks of whole rows
// (the per-channel registers tiled once per thread): against the formula, over shapes whose rows do
// not divide the block, one row, and large enough to run on several threads.
TEST(CpuFusedPointwise, PerChannelOperandsInRowBlocks) {
  for (const std::vector<int64_t>& dims : std::vector<std::vector<int64_t>>{{1, 7, 9, 48}, {2, 1, 1, 3000}, {1, 1, 1, 5}, {2, 64, 64, 40}}) {
    const int64_t C = dims.back();
    FusedPointwiseParams p;
    auto instr = [&](PointwiseInstr::Kind k, std::vector<int32_t> ops) {
      PointwiseInstr i{k};
      i.dtype = DataType::kFloat32;
      i.operands = std::move(ops);
      return i;
    };
    auto mul = instr(PointwiseInstr::Kind::kBinary, {0, 1});
    mul.binary = BinaryOp::kMul;
    auto add = instr(PointwiseInstr::Kind::kBinary, {4, 2});
    add.binary = BinaryOp::kAdd;
    auto add_scalar = instr(PointwiseInstr::Kind::kBinary, {5, 3});
    add_scalar.binary = BinaryOp::kAdd;
    auto relu = instr(PointwiseInstr::Kind::kActivation, {6});
    relu.activation = ActivationParams{ActivationOp::kRelu};
    p.program = {mul, add, add_scalar, relu};
    p.outputs = {7};
    Host x = random_host(DataType::kFloat32, dims, 30), s = random_host(DataType::kFloat32, {1, 1, 1, C}, 31);
    Host t = random_host(DataType::kFloat32, {1, 1, 1, C}, 32), k = random_host(DataType::kFloat32, {1, 1, 1, 1}, 33);
    Network net;
    Layer* l = net.add_layer("bn_relu", {net.add_input("x", DataType::kFloat32, shape_of(dims)),
                                         net.add_input("s", DataType::kFloat32, {1, 1, 1, C}),
                                         net.add_input("t", DataType::kFloat32, {1, 1, 1, C}),
                                         net.add_input("k", DataType::kFloat32, {1, 1, 1, 1})}, p);
    net.mark_output(l->output(0), "y");
    const uint64_t before = cpu::fused_row_block_runs();
    const auto out = run_direct(net, {x, s, t, k});
    // One row: the vectors are the output's shape, and the ordinary broadcast runs take it.
    if (x.numel() > C) EXPECT_GT(cpu::fused_row_block_runs(), before) << "not run in row blocks";
    else EXPECT_EQ(cpu::fused_row_block_runs(), before) << "one row, in row blocks";
    std::vector<double> want;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = float(float(float(x.get(i)) * float(s.get(i % C))) + float(t.get(i % C))) + float(k.get(0));
      want.push_back(v > 0 ? v : 0);
    }
    expect_close(out[0], want, 1e-6, 1e-6, "per-channel block of " + std::to_string(x.numel()));
  }
}

}  // namespace
}  // namespace kiln::engine::cputest
