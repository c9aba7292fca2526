// Source generation for the pointwise kernels (see pointwise_codegen.h): expressions written to
// match the CPU's scalar semantics (src/engine/cpu/ops.h), fp16/bf16 registers rounded to their
// width after every instruction as the unfused layers' tensors are.
#include "engine/cuda/pointwise_codegen.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>

#include "engine/cuda/internal.h"
#include "engine/index_expr.h"
#include "engine/network_internal.h"

namespace kiln::engine::cuda {
namespace {

const char* kPrelude = R"(
struct KArgs {
  const void* in[16]; void* out[8]; long long n; int rank; long long dims[8]; long long st[16][8];
};
__device__ __forceinline__ float h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float b2f(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }
__device__ __forceinline__ unsigned short f2b(float f) { unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float rnd_f16(float f) { return h2f(f2h(f)); }
__device__ __forceinline__ float rnd_bf16(float f) { return b2f(f2b(f)); }
__device__ __forceinline__ float kfloordiv(float a, float b) {
  if (b == 0.f) return a / b;
  float m = fmodf(a, b);
  float d = (a - m) / b;
  if (m != 0.f && ((b < 0.f) != (m < 0.f))) d -= 1.f;
  if (d == 0.f) return copysignf(0.f, a / b);
  float f = floorf(d);
  if (d - f > 0.5f) f += 1.f;
  return f;
}
template <class T> __device__ __forceinline__ T kfloordiv(T a, T b) {
  if (b == 0) return 0;
  T q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
__device__ __forceinline__ float kremainder(float a, float b) {
  float m = fmodf(a, b);
  if (m != 0.f && ((b < 0.f) != (m < 0.f))) m += b;
  return m;
}
template <class T> __device__ __forceinline__ T kremainder(T a, T b) {
  if (b == 0) return 0;
  T m = a % b;
  if (m != 0 && ((b < 0) != (m < 0))) m += b;
  return m;
}
template <class T> __device__ __forceinline__ T kipow(T base, T e) {
  if (e < 0) return base == 1 ? T(1) : (base == T(-1) ? ((e & 1) ? T(-1) : T(1)) : T(0));
  T r = 1;
  while (e) { if (e & 1) r = T(r * base); base = T(base * base); e >>= 1; }
  return r;
}
__device__ __forceinline__ float kmin(float a, float b) { return (isnan(a) || isnan(b)) ? a + b : (a < b ? a : b); }
__device__ __forceinline__ float kmax(float a, float b) { return (isnan(a) || isnan(b)) ? a + b : (a > b ? a : b); }
template <class T> __device__ __forceinline__ T kmin(T a, T b) { return a < b ? a : b; }
template <class T> __device__ __forceinline__ T kmax(T a, T b) { return a > b ? a : b; }
template <class T> __device__ __forceinline__ T kf2i(float x, double lo, double hi) {
  double d = x;
  if (d != d) return T(0);
  if (d <= lo) return T(lo);
  if (d >= hi) return T(hi);
  return T(d);
}
__device__ __forceinline__ long long kclamp(long long x, long long n) { return x < 0 ? 0 : (x >= n ? n - 1 : x); }
template <class T> __device__ __forceinline__ T ksign(T x) { return T((T(0) < x) - (x < T(0))); }
// digamma (CUDA has none): psi(x) = psi(x + 1) - 1/x up to x >= 6, the asymptotic series there,
// the reflection below 0 (as the CPU backend computes it).
__device__ __forceinline__ float kdigamma(float x) {
  if (x == 0.f) return copysignf(__int_as_float(0x7f800000), -x);
  float reflected = 0.f;
  if (x < 0.f) {
    if (x == truncf(x)) return __int_as_float(0x7fc00000);
    reflected = -3.14159265358979f / tanf(3.14159265358979f * x);
    x = 1.f - x;
  }
  float shift = 0.f;
  while (x < 6.f) { shift -= 1.f / x; x += 1.f; }
  const float z = 1.f / (x * x);
  const float series = z * (1.f / 12 - z * (1.f / 120 - z * (1.f / 252 - z * (1.f / 240 - z * (1.f / 132)))));
  return reflected + shift + logf(x) - 0.5f / x - series;
}
// kiln_vec's 8 neighbouring elements: one to four 16-byte accesses (8 bytes for 1-byte types),
// or one element repeated where the input is broadcast along the innermost dim.
struct alignas(16) KVec16 { unsigned int x, y, z, w; };
struct alignas(8) KVec8 { unsigned int x, y; };
template <class S> __device__ __forceinline__ void kload8(S (&d)[8], const S* p, bool contiguous) {
  if (!contiguous) {
    const S s = *p;
#pragma unroll
    for (int v = 0; v < 8; ++v) d[v] = s;
  } else if constexpr (sizeof(S) == 1) {
    *reinterpret_cast<KVec8*>(d) = *reinterpret_cast<const KVec8*>(p);
  } else {
#pragma unroll
    for (int k = 0; k < int(sizeof(S)) / 2; ++k) reinterpret_cast<KVec16*>(d)[k] = reinterpret_cast<const KVec16*>(p)[k];
  }
}
template <class S> __device__ __forceinline__ void kstore8(S* p, const S (&d)[8]) {
  if constexpr (sizeof(S) == 1) {
    *reinterpret_cast<KVec8*>(p) = *reinterpret_cast<const KVec8*>(d);
  } else {
#pragma unroll
    for (int k = 0; k < int(sizeof(S)) / 2; ++k) reinterpret_cast<KVec16*>(p)[k] = reinterpret_cast<const KVec16*>(d)[k];
  }
}
)";

std::string ctype(DataType t) {
  switch (t) {
    case DataType::kFloat32: case DataType::kFloat16: case DataType::kBFloat16: return "float";
    case DataType::kInt64: return "long long";
    case DataType::kInt32: return "int";
    case DataType::kInt8: return "signed char";
    case DataType::kUInt8: return "unsigned char";
    case DataType::kBool: return "bool";
  }
  return "float";
}
bool is_float_reg(DataType t) { return is_floating(t); }

std::string flit(double v) {
  if (std::isnan(v)) return "__int_as_float(0x7fc00000)";
  if (std::isinf(v)) return v > 0 ? "__int_as_float(0x7f800000)" : "__int_as_float(0xff800000)";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  std::string s = buf;
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return "(" + s + "f)";
}
std::string ilit(double v, DataType t) {
  if (t == DataType::kBool) return v != 0 ? "true" : "false";
  std::ostringstream os;
  os << "((" << ctype(t) << ")" << static_cast<long long>(v) << "LL)";
  return os.str();
}

// How a register of dtype t is kept in memory, and the conversions between the two.
std::string storage_type(DataType t) {
  return t == DataType::kFloat16 || t == DataType::kBFloat16 ? "unsigned short" : ctype(t);
}
std::string from_storage(DataType t, const std::string& x) {
  return t == DataType::kFloat16 ? "h2f(" + x + ")" : t == DataType::kBFloat16 ? "b2f(" + x + ")" : x;
}
std::string to_storage(DataType t, const std::string& x) {
  return t == DataType::kFloat16 ? "f2h(" + x + ")" : t == DataType::kBFloat16 ? "f2b(" + x + ")" : x;
}

std::string load_expr(DataType t, const std::string& ptr, const std::string& off) {
  switch (t) {
    case DataType::kFloat16: return "h2f(((const unsigned short*)" + ptr + ")[" + off + "])";
    case DataType::kBFloat16: return "b2f(((const unsigned short*)" + ptr + ")[" + off + "])";
    default: return "((const " + ctype(t) + "*)" + ptr + ")[" + off + "]";
  }
}
std::string store_stmt(DataType t, const std::string& ptr, const std::string& off, const std::string& v) {
  switch (t) {
    case DataType::kFloat16: return "((unsigned short*)" + ptr + ")[" + off + "] = f2h(" + v + ");";
    case DataType::kBFloat16: return "((unsigned short*)" + ptr + ")[" + off + "] = f2b(" + v + ");";
    default: return "((" + ctype(t) + "*)" + ptr + ")[" + off + "] = " + v + ";";
  }
}

// Conversion of register value `v` of dtype `from` to a register of dtype `to` (PyTorch's meaning,
// as cpu::convert: bool is != 0, float -> int truncates and saturates, NaN -> 0).
std::string convert_expr(const std::string& v, DataType from, DataType to) {
  if (from == to) return v;
  if (to == DataType::kBool) return "(" + v + " != 0)";
  if (is_float_reg(to)) return "((float)(" + v + "))";
  if (is_float_reg(from)) {
    // Through int64 (saturating), then wrapped to the width: -3.75 -> u8 is 253, as PyTorch.
    return "((" + ctype(to) + ")kf2i<long long>(" + v + ", -9223372036854775808.0, 9223372036854775807.0))";
  }
  return "((" + ctype(to) + ")(" + v + "))";
}

std::string binary_expr(BinaryOp op, const std::string& a, const std::string& b, DataType t) {
  const bool f = is_float_reg(t), bl = t == DataType::kBool;
  auto call = [](const char* fn, const std::string& x, const std::string& y) { return std::string(fn) + "(" + x + ", " + y + ")"; };
  switch (op) {
    case BinaryOp::kEqual: return "(" + a + " == " + b + ")";
    case BinaryOp::kNotEqual: return "(" + a + " != " + b + ")";
    case BinaryOp::kLess: return "(" + a + " < " + b + ")";
    case BinaryOp::kLessEqual: return "(" + a + " <= " + b + ")";
    case BinaryOp::kGreater: return "(" + a + " > " + b + ")";
    case BinaryOp::kGreaterEqual: return "(" + a + " >= " + b + ")";
    case BinaryOp::kAnd: return "((" + a + " != 0) && (" + b + " != 0))";
    case BinaryOp::kOr: return "((" + a + " != 0) || (" + b + " != 0))";
    case BinaryOp::kXor: return "((" + a + " != 0) != (" + b + " != 0))";
    default: break;
  }
  if (bl) {
    switch (op) {
      case BinaryOp::kAdd: case BinaryOp::kMax: case BinaryOp::kBitOr: return "(" + a + " || " + b + ")";
      case BinaryOp::kMul: case BinaryOp::kMin: case BinaryOp::kBitAnd: return "(" + a + " && " + b + ")";
      case BinaryOp::kSub: case BinaryOp::kBitXor: return "(" + a + " != " + b + ")";
      case BinaryOp::kPow: return "(" + a + " || !" + b + ")";
      case BinaryOp::kRemainder: return "(" + b + " ? false : " + a + ")";
      default: return "(" + b + " ? " + a + " : false)";
    }
  }
  const std::string T = ctype(t);
  switch (op) {
    case BinaryOp::kAdd: return "(" + T + ")(" + a + " + " + b + ")";
    case BinaryOp::kSub: return "(" + T + ")(" + a + " - " + b + ")";
    case BinaryOp::kMul: return "(" + T + ")(" + a + " * " + b + ")";
    case BinaryOp::kDiv:
      return f ? "(" + a + " / " + b + ")" : "(" + b + " == 0 ? (" + T + ")0 : (" + T + ")(" + a + " / " + b + "))";
    case BinaryOp::kFloorDiv: return call("kfloordiv", a, b);
    case BinaryOp::kTruncDiv:
      return f ? "truncf(" + a + " / " + b + ")" : "(" + b + " == 0 ? (" + T + ")0 : (" + T + ")(" + a + " / " + b + "))";
    case BinaryOp::kRemainder: return call("kremainder", a, b);
    case BinaryOp::kFmod:
      return f ? call("fmodf", a, b) : "(" + b + " == 0 ? (" + T + ")0 : (" + T + ")(" + a + " % " + b + "))";
    case BinaryOp::kPow: return f ? call("powf", a, b) : call("kipow", a, b);
    case BinaryOp::kMin: return call("kmin", a, b);
    case BinaryOp::kMax: return call("kmax", a, b);
    case BinaryOp::kBitAnd: case BinaryOp::kBitOr: case BinaryOp::kBitXor:
      if (f) return "0.f";  // refused for floats by the network; keep the source compilable
      break;
    default: break;
  }
  switch (op) {
    case BinaryOp::kBitAnd: return "(" + T + ")(" + a + " & " + b + ")";
    case BinaryOp::kBitOr: return "(" + T + ")(" + a + " | " + b + ")";
    case BinaryOp::kBitXor: return "(" + T + ")(" + a + " ^ " + b + ")";
    default: return "0";
  }
}

std::string unary_expr(UnaryOp op, const std::string& x, DataType t) {
  switch (op) {
    case UnaryOp::kNot: return "(!(" + x + " != 0))";
    case UnaryOp::kIsNan: return is_float_reg(t) ? "isnan(" + x + ")" : "false";
    case UnaryOp::kIsInf: return is_float_reg(t) ? "isinf(" + x + ")" : "false";
    default: break;
  }
  if (t == DataType::kBool) return op == UnaryOp::kBitNot ? "(!" + x + ")" : x;
  const bool f = is_float_reg(t);
  const std::string T = ctype(t);
  auto fn = [&](const char* ff, const char* dd) {
    return f ? std::string(ff) + "(" + x + ")" : "(" + T + ")" + dd + "((double)" + x + ")";
  };
  switch (op) {
    case UnaryOp::kExp: return fn("expf", "exp");
    case UnaryOp::kLog: return fn("logf", "log");
    case UnaryOp::kLog2: return fn("log2f", "log2");
    case UnaryOp::kLog1p: return fn("log1pf", "log1p");
    case UnaryOp::kExpm1: return fn("expm1f", "expm1");
    case UnaryOp::kSqrt: return fn("sqrtf", "sqrt");
    case UnaryOp::kRsqrt: return f ? "(1.0f / sqrtf(" + x + "))" : "(" + T + ")(1.0 / sqrt((double)" + x + "))";
    case UnaryOp::kAbs: return f ? "fabsf(" + x + ")" : "(" + x + " < 0 ? (" + T + ")(-" + x + ") : " + x + ")";
    case UnaryOp::kNeg: return "(" + T + ")(-" + x + ")";
    case UnaryOp::kSin: return fn("sinf", "sin");
    case UnaryOp::kCos: return fn("cosf", "cos");
    case UnaryOp::kTan: return fn("tanf", "tan");
    case UnaryOp::kAsin: return fn("asinf", "asin");
    case UnaryOp::kAcos: return fn("acosf", "acos");
    case UnaryOp::kAtan: return fn("atanf", "atan");
    case UnaryOp::kSinh: return fn("sinhf", "sinh");
    case UnaryOp::kCosh: return fn("coshf", "cosh");
    case UnaryOp::kTanh: return fn("tanhf", "tanh");
    case UnaryOp::kErf: return fn("erff", "erf");
    case UnaryOp::kLgamma: return fn("lgammaf", "lgamma");
    case UnaryOp::kErfinv: return fn("erfinvf", "erfinv");
    case UnaryOp::kDigamma: return f ? "kdigamma(" + x + ")" : "(" + T + ")kdigamma((float)" + x + ")";
    case UnaryOp::kFloor: return f ? "floorf(" + x + ")" : x;
    case UnaryOp::kCeil: return f ? "ceilf(" + x + ")" : x;
    case UnaryOp::kRound: return f ? "rintf(" + x + ")" : x;
    case UnaryOp::kTrunc: return f ? "truncf(" + x + ")" : x;
    case UnaryOp::kSign: return "ksign<" + T + ">(" + x + ")";
    case UnaryOp::kReciprocal: return f ? "(1.0f / " + x + ")" : "(" + T + ")(1.0 / (double)" + x + ")";
    case UnaryOp::kBitNot: return f ? x : "(" + T + ")(~" + x + ")";
    default: return x;
  }
}

std::string activation_expr(const ActivationParams& p, const std::string& x) {
  const std::string al = flit(p.alpha), be = flit(p.beta);
  switch (p.op) {
    case ActivationOp::kRelu: return "(isnan(" + x + ") ? " + x + " : (" + x + " > 0.f ? " + x + " : 0.f))";
    case ActivationOp::kSigmoid: return "(1.f / (1.f + expf(-" + x + ")))";
    case ActivationOp::kTanh: return "tanhf(" + x + ")";
    case ActivationOp::kGeluErf: return "(0.5f * " + x + " * (1.f + erff(" + x + " * 0.7071067811865476f)))";
    case ActivationOp::kGeluTanh:
      return "(0.5f * " + x + " * (1.f + tanhf(0.7978845608028654f * (" + x + " + 0.044715f * " + x + " * " + x + " * " + x + "))))";
    case ActivationOp::kSilu: return "(" + x + " / (1.f + expf(-" + x + ")))";
    case ActivationOp::kHardSigmoid: return "(fminf(fmaxf(" + x + " + 3.f, 0.f), 6.f) / 6.f)";
    case ActivationOp::kHardSwish: return "(" + x + " * fminf(fmaxf(" + x + " + 3.f, 0.f), 6.f) / 6.f)";
    case ActivationOp::kLeakyRelu: return "(" + x + " > 0.f ? " + x + " : " + x + " * " + al + ")";
    case ActivationOp::kElu: return "(" + x + " > 0.f ? " + x + " : " + al + " * expm1f(" + x + "))";
    case ActivationOp::kSoftplus: {
      const std::string b = p.alpha == 0 ? "1.f" : al;
      return "(" + x + " * " + b + " > " + be + " ? " + x + " : log1pf(expf(" + x + " * " + b + ")) / " + b + ")";
    }
    case ActivationOp::kClip:
      return "(isnan(" + x + ") ? " + x + " : fminf(fmaxf(" + x + ", " + al + "), " + be + "))";
    case ActivationOp::kMish: return "(" + x + " * tanhf(" + x + " > 20.f ? " + x + " : log1pf(expf(" + x + "))))";
  }
  return x;
}


// The value of instruction `ins` (writing register `r`) over registers of dtypes `reg`, operand
// register o named by `name(o)`: an expression, rounded to a 16-bit register's width.
std::string instr_expr(const PointwiseInstr& ins, size_t r, const std::vector<DataType>& reg,
                       const std::function<std::string(int32_t)>& name) {
  auto opnd = [&](size_t k) {
    int32_t o = ins.operands.at(k);
    if (o < 0 || size_t(o) >= r) throw NetworkError("FusedPointwise: operand register out of range");
    return name(o);
  };
  auto odt = [&](size_t k) { return reg.at(ins.operands.at(k)); };
  std::string e;
  switch (ins.kind) {
    case PointwiseInstr::Kind::kBinary: {
      // Operands are computed in their own type, then converted to the result (comparisons: bool).
      DataType ct = odt(0);
      std::string b = convert_expr(opnd(1), odt(1), ct);
      e = convert_expr(binary_expr(ins.binary, opnd(0), b, ct),
                       (ins.binary >= BinaryOp::kEqual && ins.binary <= BinaryOp::kXor) ? DataType::kBool : ct, ins.dtype);
      break;
    }
    case PointwiseInstr::Kind::kUnary: {
      DataType ct = odt(0);
      bool pred = ins.unary == UnaryOp::kNot || ins.unary == UnaryOp::kIsNan || ins.unary == UnaryOp::kIsInf;
      e = convert_expr(unary_expr(ins.unary, opnd(0), ct), pred ? DataType::kBool : ct, ins.dtype);
      break;
    }
    case PointwiseInstr::Kind::kActivation:
      e = activation_expr(ins.activation, convert_expr(opnd(0), odt(0), DataType::kFloat32));
      e = convert_expr(e, DataType::kFloat32, ins.dtype);
      break;
    case PointwiseInstr::Kind::kCast: e = convert_expr(opnd(0), odt(0), ins.dtype); break;
    case PointwiseInstr::Kind::kSelect:
      e = "((" + opnd(0) + " != 0) ? " + convert_expr(opnd(1), odt(1), ins.dtype) + " : " +
          convert_expr(opnd(2), odt(2), ins.dtype) + ")";
      break;
    case PointwiseInstr::Kind::kConstant:
      e = is_float_reg(ins.dtype) ? flit(ins.constant) : ilit(ins.constant, ins.dtype);
      break;
    case PointwiseInstr::Kind::kRowReduce:
      throw NetworkError("FusedPointwise: a row reduction outside a row program");
  }
  // A 16-bit float register holds a 16-bit value, as the unfused layers' tensors do.
  if (ins.dtype == DataType::kFloat16) e = "rnd_f16(" + e + ")";
  if (ins.dtype == DataType::kBFloat16) e = "rnd_bf16(" + e + ")";
  return e;
}

// ---- gathered loads (GatherLoads, fold_movement) ------------------------------------------------
// The same three entry points over a static output shape: `kiln_flat` and `kiln_bcast` (one
// element per thread) and `kiln_vec` (8 neighbours along the innermost dim per thread). Each input
// register is a device function evaluating its index nodes (constants baked in, so divisions by
// constants compile to multiplications); kiln_vec moves a register as one 16-byte access where its
// 8 elements are provably neighbours in one input (or one element repeated) and its bounds cannot
// split them, and element by element otherwise. Every offset is clamped into its input, so a
// plan's index nodes cannot reach outside the buffers it was given.

// How a node's value changes across a group of 8 neighbouring outputs (innermost coordinate
// 8*g + v, v in [0, 8)): invariant, or value(0) + step*v; `align` (1, 2, 4 or 8) divides value(0).
struct GroupForm {
  enum Kind { kInvariant, kAffine, kOther } kind = kOther;
  int64_t step = 0;
  int64_t align = 1;
};
int64_t pow2_factor(int64_t x) {
  if (x == 0) return 8;
  int64_t a = 1;
  while (a < 8 && x % (a * 2) == 0) a *= 2;
  return a;
}
std::vector<GroupForm> group_forms(const GatherLoads& g) {
  const size_t last = g.out_dims.size() - 1;
  std::vector<GroupForm> f(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const IndexNode& n = g.nodes[i];
    GroupForm r;
    switch (n.op) {
      case IndexNode::Op::kCoord:
        r = size_t(n.k) == last ? GroupForm{GroupForm::kAffine, 1, 8} : GroupForm{GroupForm::kInvariant, 0, 1};
        break;
      case IndexNode::Op::kConst: r = {GroupForm::kInvariant, 0, pow2_factor(n.k)}; break;
      case IndexNode::Op::kAdd: {
        const GroupForm &x = f[n.a], &y = f[n.b];
        if (x.kind == GroupForm::kOther || y.kind == GroupForm::kOther) break;
        r.step = x.step + y.step;
        r.kind = r.step == 0 ? GroupForm::kInvariant : GroupForm::kAffine;
        r.align = std::min(x.align, y.align);
        break;
      }
      case IndexNode::Op::kMul: {
        const GroupForm& x = f[n.a];
        if (x.kind == GroupForm::kOther) break;
        r.step = x.step * n.k;
        r.kind = r.step == 0 ? GroupForm::kInvariant : GroupForm::kAffine;
        r.align = std::min<int64_t>(8, x.align * pow2_factor(n.k));
        break;
      }
      case IndexNode::Op::kFloorDiv:
      case IndexNode::Op::kMod: {
        const GroupForm& x = f[n.a];
        if (x.kind == GroupForm::kInvariant) {
          r = {GroupForm::kInvariant, 0, 1};
        } else if (x.kind == GroupForm::kAffine && x.step == 1 && x.align == 8 && n.k % 8 == 0) {
          // x0 a multiple of 8 and k too: x0 + v stays in x0's block of k.
          r = n.op == IndexNode::Op::kFloorDiv ? GroupForm{GroupForm::kInvariant, 0, 1} : GroupForm{GroupForm::kAffine, 1, 8};
        }
        break;
      }
    }
    f[i] = r;
  }
  return f;
}

std::string gathered_kernels(const FusedPointwiseParams& prog, const std::vector<DataType>& reg_types,
                             const std::vector<DataType>& in_types, const std::vector<int64_t>& in_numel,
                             const std::string& body, const std::vector<DataType>& reg) {
  const GatherLoads& g = *prog.gather;
  const size_t rank = g.out_dims.size(), last = rank - 1;
  int64_t total = 1;
  for (int64_t d : g.out_dims) total *= d;
  const std::vector<index_expr::Range> ranges = index_expr::node_ranges(g);
  bool narrow = total < (int64_t{1} << 31);
  for (const auto& r : ranges) narrow = narrow && r.lo > -(int64_t{1} << 31) && r.hi < (int64_t{1} << 31);
  const std::string I = narrow ? "int" : "long long", U = narrow ? "unsigned" : "unsigned long long";
  const bool vec = g.out_dims[last] % 8 == 0;
  const std::vector<GroupForm> forms = group_forms(g);
  auto numel = [&](int32_t input) { return size_t(input) < in_numel.size() ? in_numel[size_t(input)] : 0; };

  auto node_expr = [&](size_t i) -> std::string {
    const IndexNode& n = g.nodes[i];
    const std::string a = n.a >= 0 ? "n" + std::to_string(n.a) : "", k = "((" + I + ")" + std::to_string(n.k) + "LL)";
    const bool nonneg = n.a >= 0 && ranges[size_t(n.a)].lo >= 0;
    switch (n.op) {
      case IndexNode::Op::kCoord: return "c[" + std::to_string(n.k) + "]";
      case IndexNode::Op::kConst: return k;
      case IndexNode::Op::kAdd: return "(" + a + " + n" + std::to_string(n.b) + ")";
      case IndexNode::Op::kMul: return "(" + a + " * " + k + ")";
      case IndexNode::Op::kFloorDiv:
        return nonneg ? "(" + I + ")((" + U + ")" + a + " / (" + U + ")" + k + ")" : "kfloordiv<" + I + ">(" + a + ", " + k + ")";
      case IndexNode::Op::kMod:
        return nonneg ? "(" + I + ")((" + U + ")" + a + " % (" + U + ")" + k + ")" : "kremainder<" + I + ">(" + a + ", " + k + ")";
    }
    return "0";
  };
  // The nodes register r reads, in order, as statements.
  auto nodes_of = [&](size_t r) {
    std::vector<char> need(g.nodes.size(), 0);
    for (const LoadPiece& p : g.registers[r]) {
      if (p.input >= 0) need[size_t(p.offset)] = 1;
      for (const IndexBound& b : p.bounds) need[size_t(b.node)] = 1;
    }
    for (size_t i = g.nodes.size(); i-- > 0;) {
      if (!need[i]) continue;
      if (g.nodes[i].a >= 0) need[size_t(g.nodes[i].a)] = 1;
      if (g.nodes[i].b >= 0) need[size_t(g.nodes[i].b)] = 1;
    }
    std::ostringstream o;
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (need[i]) o << "  const " << I << " n" << i << " = " << node_expr(i) << ";\n";
    return o.str();
  };
  auto condition = [&](const LoadPiece& p) {
    std::string c;
    for (const IndexBound& b : p.bounds)
      c += std::string(c.empty() ? "" : " && ") + "n" + std::to_string(b.node) + " >= " + std::to_string(b.lo) +
           "LL && n" + std::to_string(b.node) + " < " + std::to_string(b.hi) + "LL";
    return c;
  };
  auto constant = [&](DataType t, double v) { return is_float_reg(t) ? flit(v) : ilit(v, t); };
  auto piece_friendly = [&](const LoadPiece& p) {
    for (const IndexBound& b : p.bounds) {
      const GroupForm& f = forms[size_t(b.node)];
      if (f.kind == GroupForm::kInvariant) continue;
      if (!(f.kind == GroupForm::kAffine && f.step == 1 && f.align == 8 && b.lo % 8 == 0 && b.hi % 8 == 0)) return false;
    }
    if (p.input < 0) return true;
    const GroupForm& f = forms[size_t(p.offset)];
    if (f.kind == GroupForm::kInvariant) return numel(p.input) >= 1;
    return f.kind == GroupForm::kAffine && f.step == 1 && f.align == 8 && numel(p.input) >= 8;
  };

  std::ostringstream src;
  src << kPrelude;
  std::vector<bool> friendly(reg_types.size());
  for (size_t r = 0; r < reg_types.size(); ++r) {
    const DataType t = reg_types[r];
    const std::string R = std::to_string(r), CT = ctype(t), ST = storage_type(t);
    // One element.
    src << "__device__ __forceinline__ " << CT << " kg" << R << "(const KArgs& a, const " << I << "* c) {\n"
        << nodes_of(r);
    bool closed = false;
    for (const LoadPiece& p : g.registers[r]) {
      const std::string cond = condition(p);
      std::string value;
      if (p.input < 0 || numel(p.input) == 0) {
        value = constant(t, p.input < 0 ? p.value : 0.0);
      } else {
        const std::string n = std::to_string(numel(p.input)) + "LL";
        value = load_expr(in_types[size_t(p.input)], "a.in[" + std::to_string(p.input) + "]",
                          "kclamp((long long)n" + std::to_string(p.offset) + ", " + n + ")");
      }
      if (cond.empty()) {
        src << "  return " << value << ";\n";
        closed = true;
        break;
      }
      src << "  if (" << cond << ") return " << value << ";\n";
    }
    if (!closed) src << "  return " << constant(t, 0.0) << ";\n";
    src << "}\n";
    // Eight neighbours, where they move as one access.
    friendly[r] = vec && std::all_of(g.registers[r].begin(), g.registers[r].end(), piece_friendly);
    if (!friendly[r]) continue;
    src << "__device__ __forceinline__ void kg8_" << R << "(const KArgs& a, const " << I << "* c, " << ST
        << " (&d)[8]) {\n"
        << nodes_of(r);
    closed = false;
    for (const LoadPiece& p : g.registers[r]) {
      const std::string cond = condition(p);
      src << "  " << (cond.empty() ? "" : "if (" + cond + ") ") << "{\n";
      if (p.input < 0) {
        src << "    const " << ST << " s = " << to_storage(t, constant(t, p.value)) << ";\n"
            << "#pragma unroll\n    for (int v = 0; v < 8; ++v) d[v] = s;\n";
      } else {
        const bool contiguous = forms[size_t(p.offset)].kind == GroupForm::kAffine;
        const int64_t hi = numel(p.input) - (contiguous ? 8 : 1);
        src << "    kload8(d, (const " << ST << "*)a.in[" << p.input << "] + kclamp((long long)n" << p.offset << ", "
            << hi + 1 << "LL), " << (contiguous ? "true" : "false") << ");\n";
      }
      src << "    return;\n  }\n";
      if (cond.empty()) {
        closed = true;
        break;
      }
    }
    if (!closed)
      src << "  const " << ST << " s = " << to_storage(t, constant(t, 0.0)) << ";\n"
          << "#pragma unroll\n  for (int v = 0; v < 8; ++v) d[v] = s;\n";
    src << "}\n";
  }
  // Output coordinates of linear index `idx` (divisions by constants).
  auto coords = [&](const std::string& idx) {
    std::ostringstream o;
    o << "    " << I << " c[" << rank << "];\n    { " << U << " rem = (" << U << ")" << idx << ";\n";
    for (size_t d = rank; d-- > 0;) {
      o << "      c[" << d << "] = (" << I << ")(rem % " << g.out_dims[d] << "ULL);";
      if (d) o << " rem /= " << g.out_dims[d] << "ULL;";
      o << "\n";
    }
    o << "    }\n";
    return o.str();
  };
  std::ostringstream stores;
  for (size_t k = 0; k < prog.outputs.size(); ++k)
    stores << "    " << store_stmt(reg.at(size_t(prog.outputs[k])), "a.out[" + std::to_string(k) + "]", "i",
                                   "r" + std::to_string(prog.outputs[k]))
           << "\n";
  for (const char* name : {"kiln_flat", "kiln_bcast"}) {
    src << "extern \"C\" __global__ void __launch_bounds__(256) " << name << "(const KArgs a) {\n"
        << "  const long long step = (long long)gridDim.x * blockDim.x;\n"
        << "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < a.n; i += step) {\n"
        << coords("i");
    for (size_t r = 0; r < reg_types.size(); ++r)
      src << "    const " << ctype(reg_types[r]) << " r" << r << " = kg" << r << "(a, c);\n";
    src << body << stores.str() << "  }\n}\n";
  }
  src << "extern \"C\" __global__ void __launch_bounds__(256) kiln_vec(const KArgs a) {\n"
      << "  const long long step = (long long)gridDim.x * blockDim.x, groups = a.n / 8;\n"
      << "  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += step) {\n"
      << "    const long long i = g * 8;\n"
      << coords("i");
  for (size_t r = 0; r < reg_types.size(); ++r) {
    const std::string R = std::to_string(r);
    if (friendly[r]) {
      src << "    alignas(16) " << storage_type(reg_types[r]) << " b" << R << "[8];\n    kg8_" << R << "(a, c, b" << R
          << ");\n";
    } else {
      src << "    " << ctype(reg_types[r]) << " u" << R << "[8];\n"
          << "#pragma unroll\n    for (int v = 0; v < 8; ++v) {\n"
          << "      " << I << " cv[" << rank << "];\n"
          << "      for (int d = 0; d < " << rank << "; ++d) cv[d] = c[d];\n"
          << "      cv[" << last << "] += v;\n"
          << "      u" << R << "[v] = kg" << R << "(a, cv);\n    }\n";
    }
  }
  for (size_t k = 0; k < prog.outputs.size(); ++k)
    src << "    alignas(16) " << storage_type(reg.at(size_t(prog.outputs[k]))) << " ob" << k << "[8];\n";
  src << "#pragma unroll\n    for (int v = 0; v < 8; ++v) {\n";
  for (size_t r = 0; r < reg_types.size(); ++r) {
    const std::string R = std::to_string(r);
    src << "    const " << ctype(reg_types[r]) << " r" << R << " = "
        << (friendly[r] ? from_storage(reg_types[r], "b" + R + "[v]") : "u" + R + "[v]") << ";\n";
  }
  src << body;
  for (size_t k = 0; k < prog.outputs.size(); ++k) {
    const DataType t = reg.at(size_t(prog.outputs[k]));
    src << "    ob" << k << "[v] = " << to_storage(t, "r" + std::to_string(prog.outputs[k])) << ";\n";
  }
  src << "    }\n";
  for (size_t k = 0; k < prog.outputs.size(); ++k)
    src << "    kstore8((" << storage_type(reg.at(size_t(prog.outputs[k]))) << "*)a.out[" << k << "] + i, ob" << k << ");\n";
  src << "  }\n}\n";
  return src.str();
}

}  // namespace

// The generated module for a program whose inputs have `in_types` and outputs registers `outputs`.
std::string generate(const FusedPointwiseParams& prog, const std::vector<DataType>& layer_in_types,
                     const std::vector<int64_t>& in_numel) {
  std::vector<DataType> in_types = layer_in_types;  // the program's input registers
  if (prog.gather) {
    if (std::string why = index_expr::check(*prog.gather, layer_in_types); !why.empty()) throw NetworkError(why);
    in_types.clear();
    for (size_t r = 0; r < prog.gather->registers.size(); ++r)
      in_types.push_back(index_expr::register_type(*prog.gather, r, layer_in_types));
  }
  const size_t nin = in_types.size();
  std::vector<DataType> reg(in_types);
  for (const auto& ins : prog.program) reg.push_back(ins.dtype);

  std::ostringstream body;
  for (size_t i = 0; i < prog.program.size(); ++i) {
    const size_t r = nin + i;
    body << "    const " << ctype(prog.program[i].dtype) << " r" << r << " = "
         << instr_expr(prog.program[i], r, reg, [](int32_t o) { return "r" + std::to_string(o); }) << ";\n";
  }
  std::ostringstream stores;
  for (size_t k = 0; k < prog.outputs.size(); ++k) {
    int32_t o = prog.outputs[k];
    stores << "    " << store_stmt(reg.at(o), "a.out[" + std::to_string(k) + "]", "i", "r" + std::to_string(o)) << "\n";
  }

  if (prog.gather) return gathered_kernels(prog, in_types, layer_in_types, in_numel, body.str(), reg);

  // Each input's offset o<j> of the element at linear index i, from the collapsed dims/strides.
  auto offsets = [&](std::ostringstream& src) {
    for (size_t j = 0; j < nin; ++j) src << "    long long o" << j << " = 0;\n";
    // 32-bit division where the index fits: 64-bit division is emulated in many instructions
    // and would dominate a memory-bound kernel.
    src << "    if (a.n <= 0x7fffffffLL) {\n"
        << "      unsigned rem = (unsigned)i;\n"
        << "      for (int d = a.rank - 1; d >= 0; --d) {\n"
        << "        const unsigned dd = (unsigned)a.dims[d], c = rem % dd; rem /= dd;\n";
    for (size_t j = 0; j < nin; ++j) src << "        o" << j << " += (long long)c * a.st[" << j << "][d];\n";
    src << "      }\n"
        << "    } else {\n"
        << "      long long rem = i;\n"
        << "      for (int d = a.rank - 1; d >= 0; --d) {\n"
        << "        const long long c = rem % a.dims[d]; rem /= a.dims[d];\n";
    for (size_t j = 0; j < nin; ++j) src << "        o" << j << " += c * a.st[" << j << "][d];\n";
    src << "      }\n    }\n";
  };

  std::ostringstream src;
  src << kPrelude;
  for (int variant = 0; variant < 2; ++variant) {
    const bool bcast = variant == 1;
    src << "extern \"C\" __global__ void __launch_bounds__(256) " << (bcast ? "kiln_bcast" : "kiln_flat")
        << "(const KArgs a) {\n"
        << "  const long long step = (long long)gridDim.x * blockDim.x;\n"
        << "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < a.n; i += step) {\n";
    if (bcast) offsets(src);
    for (size_t j = 0; j < nin; ++j)
      src << "    const " << ctype(in_types[j]) << " r" << j << " = "
          << load_expr(in_types[j], "a.in[" + std::to_string(j) + "]", bcast ? "o" + std::to_string(j) : "i") << ";\n";
    src << body.str() << stores.str() << "  }\n}\n";
  }
  // kiln_vec: 8 neighbouring elements of one innermost row per thread, moved as 16-byte accesses
  // (launch_program checks the innermost dim, strides and alignment allow it). Per-element loads
  // of 2-byte values leave a memory-bound kernel at a fraction of the bandwidth.
  src << "extern \"C\" __global__ void __launch_bounds__(256) kiln_vec(const KArgs a) {\n"
      << "  const long long step = (long long)gridDim.x * blockDim.x, groups = a.n / 8;\n"
      << "  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += step) {\n"
      << "    const long long i = g * 8;\n";
  offsets(src);
  for (size_t j = 0; j < nin; ++j) {
    const std::string S = storage_type(in_types[j]), J = std::to_string(j);
    src << "    alignas(16) " << S << " b" << J << "[8];\n"
        << "    kload8(b" << J << ", (const " << S << "*)a.in[" << J << "] + o" << J << ", a.st[" << J << "][a.rank - 1] != 0);\n";
  }
  for (size_t k = 0; k < prog.outputs.size(); ++k)
    src << "    alignas(16) " << storage_type(reg.at(prog.outputs[k])) << " ob" << k << "[8];\n";
  src << "#pragma unroll\n    for (int v = 0; v < 8; ++v) {\n";
  for (size_t j = 0; j < nin; ++j)
    src << "    const " << ctype(in_types[j]) << " r" << j << " = " << from_storage(in_types[j], "b" + std::to_string(j) + "[v]")
        << ";\n";
  src << body.str();
  for (size_t k = 0; k < prog.outputs.size(); ++k) {
    const DataType t = reg.at(prog.outputs[k]);
    src << "    ob" << k << "[v] = " << to_storage(t, "r" + std::to_string(prog.outputs[k])) << ";\n";
  }
  src << "    }\n";
  for (size_t k = 0; k < prog.outputs.size(); ++k)
    src << "    kstore8((" << storage_type(reg.at(prog.outputs[k])) << "*)a.out[" << k << "] + i, ob" << k << ");\n";
  src << "  }\n}\n";
  return src.str();
}

// ---- row programs (fuse_rows) -------------------------------------------------------------------
// T threads share a row (a warp, 8 rows to a block of 256, or a block of up to 1024 for long rows);
// thread t holds CH chunks of V neighbouring elements, chunk k at column (k*T + t)*V, so a warp's
// accesses are contiguous. Per-element registers are arrays of the thread's N = CH*V elements,
// per-row registers one value; a row reduction combines the thread's elements, then the row's
// threads by shuffles (and shared memory across warps). Inputs are read once at the start and
// outputs written once at the end.

RowShape row_shape(int64_t row_length, int vec) {
  int threads = 32;
  while (threads < 1024 && int64_t(threads) * vec * 2 < row_length) threads *= 2;
  const int64_t per_pass = int64_t(threads) * vec;
  return {threads, vec, int((row_length + per_pass - 1) / per_pass)};
}

int row_vector_width(const FusedPointwiseParams& prog, const std::vector<DataType>& in_types,
                     const std::vector<char>& in_is_row) {
  const std::vector<char> row = detail::row_registers(prog, in_is_row);
  size_t widest = 1;
  for (size_t j = 0; j < in_types.size(); ++j)
    if (!in_is_row.at(j)) widest = std::max(widest, element_size(in_types[j]));
  for (int32_t o : prog.outputs) {
    const size_t r = size_t(o);
    if (!row.at(r))
      widest = std::max(widest, element_size(r < in_types.size() ? in_types[r] : prog.program.at(r - in_types.size()).dtype));
  }
  int v = int(std::min<size_t>(8, 16 / widest));
  while (v > 1 && prog.row_length % v) v /= 2;
  return v;
}

std::string generate_rows(const FusedPointwiseParams& prog, const std::vector<DataType>& in_types,
                          const std::vector<char>& in_is_row) {
  const int64_t R = prog.row_length;
  if (R <= 0 || prog.gather) throw NetworkError("row program: no row length, or gathered loads");
  if (in_is_row.size() != in_types.size()) throw NetworkError("row program: one row flag per input");
  const size_t nin = in_types.size();
  std::vector<DataType> reg(in_types);
  for (const auto& ins : prog.program) reg.push_back(ins.dtype);
  const std::vector<char> row = detail::row_registers(prog, in_is_row);
  for (int32_t o : prog.outputs)
    if (o < 0 || size_t(o) >= reg.size()) throw NetworkError("row program: output register out of range");

  std::ostringstream src;
  src << kPrelude << R"(
template <int B> struct KRaw;
template <> struct KRaw<2> { typedef unsigned short type; };
template <> struct KRaw<4> { typedef unsigned int type; };
template <> struct KRaw<8> { typedef KVec8 type; };
template <> struct KRaw<16> { typedef KVec16 type; };
template <class S, int V> __device__ __forceinline__ void kloadv(S (&d)[V], const S* p) {
  typedef typename KRaw<int(sizeof(S)) * V>::type W;
  *reinterpret_cast<W*>(d) = *reinterpret_cast<const W*>(p);
}
template <class S, int V> __device__ __forceinline__ void kstorev(S* p, const S (&d)[V]) {
  typedef typename KRaw<int(sizeof(S)) * V>::type W;
  *reinterpret_cast<W*>(p) = *reinterpret_cast<const W*>(d);
}
)";
  auto combine = [](ReduceOp op, const std::string& x, const std::string& y) {
    return op == ReduceOp::kSum ? "(" + x + " + " + y + ")" : std::string(op == ReduceOp::kMax ? "kmax" : "kmin") + "(" + x + ", " + y + ")";
  };
  auto identity = [](ReduceOp op) {
    return std::string(op == ReduceOp::kSum ? "0.f" : op == ReduceOp::kMax ? "(-__int_as_float(0x7f800000))" : "__int_as_float(0x7f800000)");
  };
  auto kernel = [&](const char* name, int V) {
    const RowShape rs = row_shape(R, V);
    const int T = rs.threads, block = T == 32 ? 256 : T;
    src << "extern \"C\" __global__ void __launch_bounds__(" << block << ") " << name << "(const KArgs a) {\n"
        << "  constexpr int T = " << T << ", V = " << V << ", CH = " << rs.chunks << ", N = CH * V;\n"
        << "  constexpr long long R = " << R << "LL;\n"
        << "  const int t = threadIdx.x % T;\n";
    if (T > 32) src << "  __shared__ float red[32];\n";
    if (T == 32)
      src << "  const long long rpb = blockDim.x / 32;\n"
          << "  for (long long m = (long long)blockIdx.x * rpb + threadIdx.x / 32; m < a.n; m += (long long)gridDim.x * rpb) {\n";
    else
      src << "  for (long long m = blockIdx.x; m < a.n; m += gridDim.x) {\n";
    for (size_t j = 0; j < nin; ++j) src << "    long long o" << j << " = 0;\n";
    src << "    {\n      unsigned long long rem = (unsigned long long)m;\n"
        << "      for (int d = a.rank - 1; d >= 0; --d) {\n"
        << "        const unsigned long long dd = (unsigned long long)a.dims[d], c = rem % dd; rem /= dd;\n";
    for (size_t j = 0; j < nin; ++j) src << "        o" << j << " += (long long)c * a.st[" << j << "][d];\n";
    src << "      }\n    }\n";
    for (size_t j = 0; j < nin; ++j) {
      const std::string J = std::to_string(j), CT = ctype(in_types[j]), ST = storage_type(in_types[j]);
      const std::string ptr = "a.in[" + J + "]";
      if (in_is_row[j]) {
        src << "    const " << CT << " r" << J << " = " << load_expr(in_types[j], ptr, "o" + J) << ";\n";
        continue;
      }
      src << "    " << CT << " r" << J << "[N];\n#pragma unroll\n    for (int k = 0; k < CH; ++k) {\n"
          << "      const long long col = ((long long)k * T + t) * V;\n";
      if (V == 1) {
        src << "      r" << J << "[k] = col < R ? " << load_expr(in_types[j], ptr, "o" + J + " + col") << " : (" << CT << ")0;\n";
      } else {
        src << "      alignas(16) " << ST << " b[V];\n"
            << "      if (col < R) kloadv<" << ST << ", V>(b, (const " << ST << "*)" << ptr << " + o" << J << " + col);\n"
            << "      else for (int v = 0; v < V; ++v) b[v] = 0;\n"
            << "#pragma unroll\n      for (int v = 0; v < V; ++v) r" << J << "[k * V + v] = " << from_storage(in_types[j], "b[v]") << ";\n";
      }
      src << "    }\n";
    }
    for (size_t i = 0; i < prog.program.size(); ++i) {
      const PointwiseInstr& ins = prog.program[i];
      const size_t r = nin + i;
      const std::string Rn = "r" + std::to_string(r), CT = ctype(ins.dtype);
      if (ins.kind == PointwiseInstr::Kind::kRowReduce) {
        const int32_t o = ins.operands.at(0);
        if (o < 0 || size_t(o) >= r) throw NetworkError("row program: operand register out of range");
        const std::string x = "r" + std::to_string(o), acc = "acc" + std::to_string(r);
        if (row[size_t(o)]) {  // a per-row value reduced over its row
          src << "    const float " << acc << " = " << (ins.reduce == ReduceOp::kSum ? "(float)R * " + x : x) << ";\n";
        } else {
          src << "    float " << acc << " = " << identity(ins.reduce) << ";\n#pragma unroll\n"
              << "    for (int e = 0; e < N; ++e)\n"
              << "      if (((e / V) * T + t) * V + e % V < R) " << acc << " = " << combine(ins.reduce, acc, x + "[e]") << ";\n"
              << "    for (int s = 16; s > 0; s >>= 1) " << acc << " = "
              << combine(ins.reduce, acc, "__shfl_xor_sync(0xffffffffu, " + acc + ", s)") << ";\n";
          if (T > 32)
            src << "    __syncthreads();\n    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = " << acc << ";\n"
                << "    __syncthreads();\n    " << acc << " = (threadIdx.x & 31) < T / 32 ? red[threadIdx.x & 31] : "
                << identity(ins.reduce) << ";\n"
                << "    for (int s = 16; s > 0; s >>= 1) " << acc << " = "
                << combine(ins.reduce, acc, "__shfl_xor_sync(0xffffffffu, " + acc + ", s)") << ";\n";
        }
        std::string v = acc;
        if (ins.dtype == DataType::kFloat16) v = "rnd_f16(" + v + ")";
        if (ins.dtype == DataType::kBFloat16) v = "rnd_bf16(" + v + ")";
        src << "    const float " << Rn << " = " << v << ";\n";
      } else if (row[r]) {
        src << "    const " << CT << " " << Rn << " = "
            << instr_expr(ins, r, reg, [](int32_t o) { return "r" + std::to_string(o); }) << ";\n";
      } else {
        src << "    " << CT << " " << Rn << "[N];\n#pragma unroll\n    for (int e = 0; e < N; ++e) " << Rn << "[e] = "
            << instr_expr(ins, r, reg, [&](int32_t o) { return "r" + std::to_string(o) + (row[size_t(o)] ? "" : "[e]"); })
            << ";\n";
      }
    }
    for (size_t k = 0; k < prog.outputs.size(); ++k) {
      const size_t o = size_t(prog.outputs[k]);
      const DataType dt = reg[o];
      const std::string out = "a.out[" + std::to_string(k) + "]", x = "r" + std::to_string(o);
      if (row[o]) {
        src << "    if (t == 0) " << store_stmt(dt, out, "m", x) << "\n";
        continue;
      }
      src << "#pragma unroll\n    for (int k = 0; k < CH; ++k) {\n"
          << "      const long long col = ((long long)k * T + t) * V;\n      if (col >= R) continue;\n";
      if (V == 1) {
        src << "      " << store_stmt(dt, out, "m * R + col", x + "[k]") << "\n";
      } else {
        const std::string ST = storage_type(dt);
        src << "      alignas(16) " << ST << " b[V];\n"
            << "#pragma unroll\n      for (int v = 0; v < V; ++v) b[v] = " << to_storage(dt, x + "[k * V + v]") << ";\n"
            << "      kstorev<" << ST << ", V>((" << ST << "*)" << out << " + m * R + col, b);\n";
      }
      src << "    }\n";
    }
    src << "  }\n}\n";
  };
  kernel("kiln_flat", 1);
  const int vec = row_vector_width(prog, in_types, in_is_row);
  if (vec > 1) kernel("kiln_vec", vec);
  return src.str();
}

// out = act(out + bias + residual) as a program over inputs (out[, bias][, residual]): registers
// are the inputs first, then one per instruction.
FusedPointwiseParams epilogue_program(DataType dt, bool bias, const std::optional<ActivationParams>& act, bool residual) {
  FusedPointwiseParams prog;
  const int32_t inputs = 1 + bias + residual;
  auto emit = [&](const PointwiseInstr& i) {
    prog.program.push_back(i);
    return static_cast<int32_t>(inputs + prog.program.size() - 1);
  };
  int32_t cur = 0;
  for (int32_t addend = 1; addend < inputs; ++addend) {
    PointwiseInstr add{};
    add.kind = PointwiseInstr::Kind::kBinary;
    add.binary = BinaryOp::kAdd;
    add.dtype = dt;
    add.operands = {cur, addend};
    cur = emit(add);
  }
  if (act) {
    PointwiseInstr a{};
    a.kind = PointwiseInstr::Kind::kActivation;
    a.activation = *act;
    a.dtype = dt;
    a.operands = {cur};
    cur = emit(a);
  }
  prog.outputs = {cur};
  return prog;
}

}  // namespace kiln::engine::cuda
