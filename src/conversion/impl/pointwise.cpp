// Shared helpers, casts, elementwise (binary), unary and activation helpers.
#include <cmath>
#include <cstring>
#include <limits>

#include "conversion/impl/impl.h"

namespace kiln::conversion::impl {

using engine::ActivationOp;
using engine::BinaryOp;
using engine::UnaryOp;

// ---- shared helpers -------------------------------------------------------------------------------

engine::Weights scalar_weights(double v, DataType dtype, size_t rank) {
  engine::Weights w = scalar_as_weights(v, dtype);
  w.dims.assign(rank, 1);
  return w;
}

int64_t normalize_axis(int64_t axis, size_t rank, const std::string& what) {
  const int64_t r = static_cast<int64_t>(rank);
  const int64_t a = axis < 0 ? axis + r : axis;
  if (a < 0 || a >= std::max<int64_t>(r, 1))
    throw ConversionError(what + " " + std::to_string(axis) + " out of range for rank " + std::to_string(rank));
  return a;
}

namespace {
int category(DataType t) {
  if (t == DataType::kBool) return 0;
  return engine::is_floating(t) ? 2 : 1;
}
int int_rank(DataType t) {
  switch (t) {
    case DataType::kInt64: return 4;
    case DataType::kInt32: return 3;
    default: return 1;  // i8, u8
  }
}
}  // namespace

DataType promote(DataType a, DataType b) {
  if (a == b) return a;
  const int ca = category(a), cb = category(b);
  if (ca != cb) return ca > cb ? a : b;
  if (ca == 2) return DataType::kFloat32;  // f32 with anything, or f16 with bf16
  // Two distinct integer types: the wider; i8 with u8 widens (to i32 here, the engine has no i16).
  if (int_rank(a) != int_rank(b)) return int_rank(a) > int_rank(b) ? a : b;
  return DataType::kInt32;
}

DataType promote_with_scalar(DataType t, const Value& scalar) {
  if (scalar.is<double>()) return engine::is_floating(t) ? t : DataType::kFloat32;
  if ((scalar.is<int64_t>() || scalar.is<DimExpr>()) && t == DataType::kBool) return DataType::kInt64;
  return t;
}

std::vector<int64_t> static_dims(const Tensor* t, const std::string& what) {
  std::vector<int64_t> out;
  for (const auto& d : t->shape()) {
    auto c = d.constant();
    if (!c) throw ConversionError(what + " needs static sizes, got " + t->str());
    out.push_back(*c);
  }
  return out;
}

Tensor* broadcast_rank(ConversionContext& ctx, Tensor* t, size_t rank, const std::string& name) {
  if (t->rank() >= rank) return t;
  engine::Shape s(rank - t->rank(), DimExpr(int64_t{1}));
  for (const auto& d : t->shape()) s.push_back(d);
  engine::ShuffleParams p;
  p.reshape = s;
  return ctx.net.add_shuffle(ctx.layer_name(name + "/broadcast_rank"), t, p)->output(0);
}

Tensor* symbolic_scalar(ConversionContext& ctx, const DimExpr& n, const std::string& name) {
  // The engine has no "tensor from a dimension" layer, but a fill can take a symbolic length:
  // sum(ones(n)) == n, evaluated at run time like every other symbolic size. Sizes are >= 0.
  engine::FillParams fill;
  fill.op = engine::FillOp::kConstant;
  fill.dims = {n};
  fill.dtype = DataType::kInt64;
  fill.value = 1;
  Tensor* ones = ctx.net.add_fill(ctx.layer_name(name + "/ones"), fill)->output(0);
  engine::ReduceParams sum;
  sum.op = engine::ReduceOp::kSum;
  sum.axes = {0};
  return ctx.net.add_reduce(ctx.layer_name(name), ones, sum)->output(0);
}

Tensor* get_tensor(ConversionContext& ctx, const Value& v, DataType dtype, size_t rank, const std::string& name) {
  if (v.is_tensor()) {
    Tensor* t = v.tensor();
    if (t->dtype() != dtype) t = ctx.net.add_cast(ctx.layer_name(name + "/cast"), t, dtype)->output(0);
    return broadcast_rank(ctx, t, rank, name);
  }
  if (v.is<DimExpr>() && !std::get<DimExpr>(v.v).is_constant()) {
    Tensor* t = symbolic_scalar(ctx, std::get<DimExpr>(v.v), name + "/symint");
    if (t->dtype() != dtype) t = ctx.net.add_cast(ctx.layer_name(name + "/symint_cast"), t, dtype)->output(0);
    return broadcast_rank(ctx, t, rank, name + "/symint");
  }
  return ctx.constant(scalar_weights(v.is<DimExpr>() ? static_cast<double>(v.to_int()) : v.to_double(), dtype, rank),
                      name + "/scalar");
}

namespace cast {
Tensor* to_dtype(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input,
                 DataType dtype) {
  if (input->dtype() == dtype) return input;
  return ctx.net.add_cast(ctx.layer_name(name), input, dtype)->output(0);
}
}  // namespace cast

// ---- elementwise ----------------------------------------------------------------------------------

namespace elementwise {

namespace {
bool is_comparison(BinaryOp op) {
  switch (op) {
    case BinaryOp::kEqual: case BinaryOp::kNotEqual: case BinaryOp::kLess: case BinaryOp::kLessEqual:
    case BinaryOp::kGreater: case BinaryOp::kGreaterEqual: return true;
    default: return false;
  }
}
bool is_logical(BinaryOp op) { return op == BinaryOp::kAnd || op == BinaryOp::kOr || op == BinaryOp::kXor; }
}  // namespace

Tensor* binary(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, BinaryOp op,
               const Value& lhs, const Value& rhs) {
  DataType dt;
  if (lhs.is_tensor() && rhs.is_tensor()) {
    Tensor *a = lhs.tensor(), *b = rhs.tensor();
    // PyTorch: a 0-d tensor does not promote a dimensioned tensor of the same category.
    if (a->rank() == 0 && b->rank() > 0 && category(a->dtype()) <= category(b->dtype())) dt = b->dtype();
    else if (b->rank() == 0 && a->rank() > 0 && category(b->dtype()) <= category(a->dtype())) dt = a->dtype();
    else dt = promote(a->dtype(), b->dtype());
  } else if (lhs.is_tensor()) {
    dt = promote_with_scalar(lhs.tensor()->dtype(), rhs);
  } else if (rhs.is_tensor()) {
    dt = promote_with_scalar(rhs.tensor()->dtype(), lhs);
  } else {
    dt = (lhs.is<double>() || rhs.is<double>()) ? DataType::kFloat32 : DataType::kInt64;
  }
  if (op == BinaryOp::kDiv && !engine::is_floating(dt)) dt = DataType::kFloat32;  // true division
  if (is_logical(op)) dt = DataType::kBool;
  if (op == BinaryOp::kPow && dt == DataType::kBool) dt = DataType::kInt64;
  if (dt == DataType::kBool) {  // PyTorch's arithmetic on two bools stays bool: x*y is and, x+y or
    if (op == BinaryOp::kMul || op == BinaryOp::kMin) op = BinaryOp::kAnd;
    else if (op == BinaryOp::kAdd || op == BinaryOp::kMax) op = BinaryOp::kOr;
  }
  const size_t rank = std::max(lhs.is_tensor() ? lhs.tensor()->rank() : 0, rhs.is_tensor() ? rhs.tensor()->rank() : 0);
  Tensor* a = get_tensor(ctx, lhs, dt, rank, name + "/lhs");
  Tensor* b = get_tensor(ctx, rhs, dt, rank, name + "/rhs");
  (void)is_comparison;
  return ctx.net.add_elementwise(ctx.layer_name(name), a, b, op)->output(0);
}

#define KILN_BINARY(fn, OP)                                                                            \
  Tensor* fn(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, \
             const Value& lhs, const Value& rhs) {                                                     \
    return binary(ctx, target, source_ir, name, BinaryOp::OP, lhs, rhs);                               \
  }
KILN_BINARY(add, kAdd) KILN_BINARY(sub, kSub) KILN_BINARY(mul, kMul) KILN_BINARY(div, kDiv)
KILN_BINARY(floor_divide, kFloorDiv) KILN_BINARY(trunc_div, kTruncDiv) KILN_BINARY(remainder, kRemainder)
KILN_BINARY(fmod, kFmod) KILN_BINARY(pow, kPow) KILN_BINARY(minimum, kMin) KILN_BINARY(maximum, kMax)
KILN_BINARY(eq, kEqual) KILN_BINARY(ne, kNotEqual) KILN_BINARY(lt, kLess) KILN_BINARY(le, kLessEqual)
KILN_BINARY(gt, kGreater) KILN_BINARY(ge, kGreaterEqual) KILN_BINARY(logical_and, kAnd)
KILN_BINARY(logical_or, kOr) KILN_BINARY(logical_xor, kXor) KILN_BINARY(bitwise_and, kBitAnd)
KILN_BINARY(bitwise_or, kBitOr) KILN_BINARY(bitwise_xor, kBitXor)
#undef KILN_BINARY

namespace {
Value scaled(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
             const Value& rhs, const Value& alpha) {
  if (alpha.is_none() || alpha.to_double() == 1.0) return rhs;
  if (!rhs.is_tensor()) {
    if (rhs.is<double>() || alpha.is<double>()) return rhs.to_double() * alpha.to_double();
    return rhs.to_int() * alpha.to_int();
  }
  return mul(ctx, target, source_ir, name + "/alpha", rhs, alpha);
}
}  // namespace

Tensor* add_alpha(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  const Value& lhs, const Value& rhs, const Value& alpha) {
  return add(ctx, target, source_ir, name, lhs, scaled(ctx, target, source_ir, name, rhs, alpha));
}
Tensor* sub_alpha(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  const Value& lhs, const Value& rhs, const Value& alpha) {
  return sub(ctx, target, source_ir, name, lhs, scaled(ctx, target, source_ir, name, rhs, alpha));
}

}  // namespace elementwise

// ---- unary ----------------------------------------------------------------------------------------

namespace unary {

Tensor* unary(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, UnaryOp op,
              Tensor* input) {
  const bool is_int = !engine::is_floating(input->dtype());
  switch (op) {
    case UnaryOp::kFloor: case UnaryOp::kCeil: case UnaryOp::kRound: case UnaryOp::kTrunc:
      if (is_int) return input;  // integral already
      break;
    case UnaryOp::kAbs: case UnaryOp::kNeg: case UnaryOp::kSign: case UnaryOp::kBitNot:
      break;
    case UnaryOp::kNot:
      input = cast::to_dtype(ctx, target, source_ir, name + "/to_bool", input, DataType::kBool);
      break;
    default:  // float-valued math: integer inputs compute in f32
      if (is_int) input = cast::to_dtype(ctx, target, source_ir, name + "/to_float", input, DataType::kFloat32);
  }
  if (op == UnaryOp::kBitNot && input->dtype() == DataType::kBool) op = UnaryOp::kNot;
  return ctx.net.add_unary(ctx.layer_name(name), input, op)->output(0);
}

}  // namespace unary

// ---- activation -----------------------------------------------------------------------------------

namespace activation {

Tensor* act(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, ActivationOp op,
            Tensor* input, double alpha, double beta) {
  if (!engine::is_floating(input->dtype()))
    input = cast::to_dtype(ctx, target, source_ir, name + "/to_float", input, DataType::kFloat32);
  return ctx.net.add_activation(ctx.layer_name(name), input, op, alpha, beta)->output(0);
}

Tensor* relu(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input) {
  if (!engine::is_floating(input->dtype()))  // integer relu stays integer
    return elementwise::maximum(ctx, target, source_ir, name, input, int64_t{0});
  return act(ctx, target, source_ir, name, ActivationOp::kRelu, input);
}
#define KILN_ACT(fn, OP)                                                                                          \
  Tensor* fn(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input) { \
    return act(ctx, target, source_ir, name, ActivationOp::OP, input);                                            \
  }
KILN_ACT(sigmoid, kSigmoid) KILN_ACT(tanh, kTanh) KILN_ACT(silu, kSilu) KILN_ACT(hardsigmoid, kHardSigmoid)
KILN_ACT(hardswish, kHardSwish) KILN_ACT(mish, kMish)
#undef KILN_ACT

Tensor* gelu(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
             const std::string& approximate) {
  if (approximate != "none" && approximate != "tanh")
    throw ConversionError("gelu approximate='" + approximate + "' (expected 'none' or 'tanh')");
  return act(ctx, target, source_ir, name, approximate == "tanh" ? ActivationOp::kGeluTanh : ActivationOp::kGeluErf,
             input);
}
Tensor* leaky_relu(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, double negative_slope) {
  return act(ctx, target, source_ir, name, ActivationOp::kLeakyRelu, input, negative_slope);
}
Tensor* elu(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
            double alpha) {
  return act(ctx, target, source_ir, name, ActivationOp::kElu, input, alpha);
}
Tensor* softplus(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                 Tensor* input, double beta, double threshold) {
  return act(ctx, target, source_ir, name, ActivationOp::kSoftplus, input, beta, threshold);
}

Tensor* clamp(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
              const Value& min, const Value& max) {
  const bool scalars = !min.is_tensor() && !max.is_tensor();
  DataType dt = input->dtype();
  for (const Value* b : {&min, &max})
    if (!b->is_none()) dt = b->is_tensor() ? promote(dt, b->tensor()->dtype()) : promote_with_scalar(dt, *b);
  if (scalars && engine::is_floating(dt)) {
    const double inf = std::numeric_limits<double>::infinity();
    input = cast::to_dtype(ctx, target, source_ir, name + "/cast", input, dt);
    return act(ctx, target, source_ir, name, ActivationOp::kClip, input, min.is_none() ? -inf : min.to_double(),
               max.is_none() ? inf : max.to_double());
  }
  // Tensor bounds or integer tensors: max then min, as PyTorch defines clamp.
  Tensor* out = cast::to_dtype(ctx, target, source_ir, name + "/cast", input, dt);
  if (!min.is_none()) out = elementwise::maximum(ctx, target, source_ir, name + "/min", out, min);
  if (!max.is_none()) out = elementwise::minimum(ctx, target, source_ir, name + "/max", out, max);
  return out;
}

}  // namespace activation
}  // namespace kiln::conversion::impl
