// Elementwise math, comparisons, unary math, activations, where / masked_fill.
#include <cmath>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace ew = impl::elementwise;
namespace act = impl::activation;
using engine::ActivationOp;
using engine::BinaryOp;
using engine::UnaryOp;

namespace {

// aten.<op>.Tensor / .Scalar with (self, other).
void binary(const std::string& op, BinaryOp bop, const std::vector<std::string>& overloads = {"Tensor", "Scalar"}) {
  std::vector<std::string> targets;
  for (const auto& o : overloads) targets.push_back("aten." + op + "." + o);
  add(targets, [bop](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                     const Kwargs& kwargs, const std::string& name) -> Value {
    return ew::binary(ctx, target, kAten, name, bop, args.at(0), args.at(1));
  });
}

void unary(const std::string& op, UnaryOp uop) {
  add({"aten." + op + ".default"}, [uop](ConversionContext& ctx, const std::string& target,
                                         const std::vector<Value>& args, const Kwargs&, const std::string& name) -> Value {
    return impl::unary::unary(ctx, target, kAten, name, uop, args.at(0).tensor());
  });
}

void activation(const std::string& op, ActivationOp aop) {
  add({"aten." + op + ".default"}, [aop](ConversionContext& ctx, const std::string& target,
                                         const std::vector<Value>& args, const Kwargs&, const std::string& name) -> Value {
    return act::act(ctx, target, kAten, name, aop, args.at(0).tensor());
  });
}

bool scalar_is(const ir::Node& n, const std::string& arg, double v) {
  ir::Argument a = node_arg(n, arg);
  if (a.is<double>()) return a.as<double>() == v;
  if (a.is<int64_t>()) return static_cast<double>(a.as<int64_t>()) == v;
  return false;
}

}  // namespace

void register_pointwise() {
  // ---- arithmetic with alpha ----
  add({"aten.add.Tensor", "aten.add.Scalar"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return ew::add_alpha(ctx, target, kAten, name, a["self"], a["other"], a["alpha"]);
  });
  add({"aten.sub.Tensor", "aten.sub.Scalar"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return ew::sub_alpha(ctx, target, kAten, name, a["self"], a["other"], a["alpha"]);
  });
  add({"aten.rsub.Tensor", "aten.rsub.Scalar"}, KILN_CONVERTER {  // other - alpha * self
    Args a(target, args, kwargs);
    return ew::sub_alpha(ctx, target, kAten, name, a["other"], a["self"], a["alpha"]);
  });
  binary("mul", BinaryOp::kMul);
  binary("div", BinaryOp::kDiv);
  add({"aten.div.Tensor_mode", "aten.div.Scalar_mode"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const Value& mode = a["rounding_mode"];
    if (mode.is_none()) return ew::div(ctx, target, kAten, name, a["self"], a["other"]);
    const BinaryOp op = mode.str() == "floor" ? BinaryOp::kFloorDiv : BinaryOp::kTruncDiv;
    return ew::binary(ctx, target, kAten, name, op, a["self"], a["other"]);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument m = node_arg(n, "rounding_mode");
        return m.is_none() || (m.is<std::string>() && (m.as<std::string>() == "floor" || m.as<std::string>() == "trunc"));
      }, "rounding_mode in {None, floor, trunc}"});
  binary("floor_divide", BinaryOp::kFloorDiv, {"default", "Scalar"});
  binary("remainder", BinaryOp::kRemainder);
  binary("fmod", BinaryOp::kFmod);
  add({"aten.pow.Tensor_Tensor", "aten.pow.Tensor_Scalar"}, KILN_CONVERTER {
    const Value& e = args.at(1);
    // x**2 is common (variance, GELU-tanh); a multiply is exact and fuses well.
    if (!e.is_tensor() && !e.is_none() && e.to_double() == 2.0 && engine::is_floating(args[0].tensor()->dtype()))
      return ew::mul(ctx, target, kAten, name, args[0], args[0]);
    return ew::pow(ctx, target, kAten, name, args.at(0), e);
  });
  add({"aten.pow.Scalar"}, KILN_CONVERTER { return ew::pow(ctx, target, kAten, name, args.at(0), args.at(1)); });
  binary("minimum", BinaryOp::kMin, {"default"});
  binary("maximum", BinaryOp::kMax, {"default"});
  binary("min", BinaryOp::kMin, {"other"});  // torch.min(a, b): elementwise
  binary("max", BinaryOp::kMax, {"other"});
  binary("eq", BinaryOp::kEqual);
  binary("ne", BinaryOp::kNotEqual);
  binary("lt", BinaryOp::kLess);
  binary("le", BinaryOp::kLessEqual);
  binary("gt", BinaryOp::kGreater);
  binary("ge", BinaryOp::kGreaterEqual);
  binary("logical_and", BinaryOp::kAnd, {"default"});
  binary("logical_or", BinaryOp::kOr, {"default"});
  binary("logical_xor", BinaryOp::kXor, {"default"});
  binary("bitwise_and", BinaryOp::kBitAnd);
  binary("bitwise_or", BinaryOp::kBitOr);
  binary("bitwise_xor", BinaryOp::kBitXor);
  // Python's `a & b`, `a | b`, `a ^ b` as torch.export records them (bool masks in transformers'
  // and_masks / or_masks): bitwise ops, which on bool are the logical ones.
  binary("__and__", BinaryOp::kBitAnd);
  binary("__or__", BinaryOp::kBitOr);
  binary("__xor__", BinaryOp::kBitXor);

  // ---- unary math ----
  const std::pair<const char*, UnaryOp> unaries[] = {
      {"exp", UnaryOp::kExp},     {"log", UnaryOp::kLog},         {"log2", UnaryOp::kLog2},
      {"log1p", UnaryOp::kLog1p}, {"expm1", UnaryOp::kExpm1},     {"sqrt", UnaryOp::kSqrt},
      {"rsqrt", UnaryOp::kRsqrt}, {"abs", UnaryOp::kAbs},         {"neg", UnaryOp::kNeg},
      {"sin", UnaryOp::kSin},     {"cos", UnaryOp::kCos},         {"tan", UnaryOp::kTan},
      {"asin", UnaryOp::kAsin},   {"acos", UnaryOp::kAcos},       {"atan", UnaryOp::kAtan},
      {"sinh", UnaryOp::kSinh},   {"cosh", UnaryOp::kCosh},       {"erf", UnaryOp::kErf},
      {"floor", UnaryOp::kFloor}, {"ceil", UnaryOp::kCeil},       {"round", UnaryOp::kRound},
      {"trunc", UnaryOp::kTrunc}, {"sign", UnaryOp::kSign},       {"reciprocal", UnaryOp::kReciprocal},
      {"logical_not", UnaryOp::kNot}, {"isnan", UnaryOp::kIsNan}, {"isinf", UnaryOp::kIsInf},
      {"bitwise_not", UnaryOp::kBitNot}, {"lgamma", UnaryOp::kLgamma}, {"digamma", UnaryOp::kDigamma},
      {"erfinv", UnaryOp::kErfinv},
  };
  for (const auto& [op, u] : unaries) unary(op, u);
  add({"aten.log10.default"}, KILN_CONVERTER {
    Tensor* l = impl::unary::unary(ctx, target, kAten, name + "/log", UnaryOp::kLog, args.at(0).tensor());
    return ew::div(ctx, target, kAten, name, l, std::log(10.0));
  });
  add({"aten.square.default"}, KILN_CONVERTER { return ew::mul(ctx, target, kAten, name, args.at(0), args.at(0)); });

  // ---- activations ----
  add({"aten.relu.default"}, KILN_CONVERTER { return act::relu(ctx, target, kAten, name, args.at(0).tensor()); });
  activation("sigmoid", ActivationOp::kSigmoid);
  activation("tanh", ActivationOp::kTanh);
  activation("silu", ActivationOp::kSilu);
  activation("hardsigmoid", ActivationOp::kHardSigmoid);
  activation("hardswish", ActivationOp::kHardSwish);
  activation("mish", ActivationOp::kMish);
  add({"aten.gelu.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const Value& mode = a["approximate"];
    return act::gelu(ctx, target, kAten, name, a.tensor("self"), mode.is_none() ? "none" : mode.str());
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument m = node_arg(n, "approximate");
        return m.is<std::string>() && (m.as<std::string>() == "none" || m.as<std::string>() == "tanh");
      }, "approximate in {none, tanh}"});
  add({"aten.leaky_relu.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return act::leaky_relu(ctx, target, kAten, name, a.tensor("self"), a.d("negative_slope"));
  });
  // elu(x) = scale * (x > 0 ? x : alpha * (exp(input_scale * x) - 1)): SELU (a scale) and CELU
  // (an input scale of 1/alpha) are elus too. The plain one is the engine's activation.
  add({"aten.elu.default", "aten.celu.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const double alpha = a.d("alpha");
    const bool celu = target == "aten.celu.default";
    const double scale = celu ? 1.0 : a.d("scale"), input_scale = celu ? 1.0 / alpha : a.d("input_scale");
    Tensor* y;
    if (input_scale == 1.0) {
      y = act::elu(ctx, target, kAten, scale == 1.0 ? name : name + "/elu", x, alpha);
    } else {  // max(x, 0) + alpha * (exp(input_scale * min(x, 0)) - 1): each side zero where the other acts
      Tensor* neg = act::clamp(ctx, target, kAten, name + "/neg", x, Value(), 0.0);
      Tensor* e = impl::unary::unary(ctx, target, kAten, name + "/expm1", UnaryOp::kExpm1,
                                     ew::mul(ctx, target, kAten, name + "/scaled", neg, input_scale));
      y = ew::add(ctx, target, kAten, scale == 1.0 ? name : name + "/sum",
                  act::clamp(ctx, target, kAten, name + "/pos", x, 0.0, Value()),
                  ew::mul(ctx, target, kAten, name + "/alpha", e, alpha));
    }
    return scale == 1.0 ? y : ew::mul(ctx, target, kAten, name, y, scale);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        return n.target == "aten.elu.default" || !scalar_is(n, "alpha", 0.0);
      }, "alpha != 0 (celu)"});
  add({"aten.softplus.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return act::softplus(ctx, target, kAten, name, a.tensor("self"), a.d("beta"), a.d("threshold"));
  });
  add({"aten.frac.default"}, KILN_CONVERTER {  // x - trunc(x), the sign of x kept
    Tensor* x = args.at(0).tensor();
    return ew::sub(ctx, target, kAten, name, x, impl::unary::unary(ctx, target, kAten, name + "/trunc", UnaryOp::kTrunc, x));
  });
  // Integer shifts by a constant: x << k = x * 2^k (the same bits, wrapping), x >> k = floor(x / 2^k)
  // (an arithmetic shift).
  add({"aten.__lshift__.Scalar", "aten.bitwise_left_shift.Tensor_Scalar", "aten.__rshift__.Scalar",
       "aten.bitwise_right_shift.Tensor_Scalar"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    const int64_t power = int64_t{1} << args.at(1).to_int();
    const bool left = target.find("lshift") != std::string::npos || target.find("left") != std::string::npos;
    return left ? ew::mul(ctx, target, kAten, name, x, power) : ew::floor_divide(ctx, target, kAten, name, x, power);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        const ir::Argument k = node_arg(n, "other");
        return m && !ir::is_floating(m->dtype) && m->dtype != ir::ScalarType::Bool && k.is<int64_t>() &&
               k.as<int64_t>() >= 0 && k.as<int64_t>() < 31;
      }, "an integer tensor shifted by a constant in [0, 31)"});
  // heaviside(x, values): `values` where x == 0, else 1 where x > 0 and 0 otherwise (NaN too, as
  // PyTorch computes it).
  add({"aten.heaviside.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    const DataType t = impl::promote(x->dtype(), args.at(1).tensor()->dtype());
    Tensor* step = impl::cast::to_dtype(ctx, target, kAten, name + "/step", ew::gt(ctx, target, kAten, name + "/above", x, 0.0), t);
    return impl::select::where(ctx, target, kAten, name, ew::eq(ctx, target, kAten, name + "/zero", x, 0.0),
                               Value(impl::cast::to_dtype(ctx, target, kAten, name + "/values", args.at(1).tensor(), t)), Value(step));
  });
  // fmax / fmin: the larger / smaller, a NaN on one side ignored (NumPy's fmax).
  add({"aten.fmax.default", "aten.fmin.default"}, KILN_CONVERTER {
    const Value &a = args.at(0), &b = args.at(1);
    const bool larger = target == "aten.fmax.default";
    Tensor* m = larger ? ew::maximum(ctx, target, kAten, name + "/extreme", a, b) : ew::minimum(ctx, target, kAten, name + "/extreme", a, b);
    if (!engine::is_floating(m->dtype())) return m;
    auto nan = [&](const Value& v, const char* what) {
      return impl::unary::unary(ctx, target, kAten, name + what, UnaryOp::kIsNan,
                                impl::cast::to_dtype(ctx, target, kAten, name + what + "_cast", v.tensor(), m->dtype()));
    };
    Tensor* bv = impl::cast::to_dtype(ctx, target, kAten, name + "/b", b.tensor(), m->dtype());
    Tensor* av = impl::cast::to_dtype(ctx, target, kAten, name + "/a", a.tensor(), m->dtype());
    Tensor* without_a = impl::select::where(ctx, target, kAten, name + "/a_nan", nan(a, "/isnan_a"), Value(bv), Value(m));
    return impl::select::where(ctx, target, kAten, name, nan(b, "/isnan_b"), Value(av), Value(without_a));
  });
  // threshold(x, t, v): x where x > t, else v (NaN stays). hardshrink: x where |x| > lambda, else
  // 0; softshrink: x moved lambda toward 0 where |x| > lambda, else 0.
  add({"aten.threshold.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    Tensor* at_or_below = ew::le(ctx, target, kAten, name + "/at_or_below", x, a["threshold"]);
    return impl::select::where(ctx, target, kAten, name, at_or_below,
                               impl::get_tensor(ctx, a["value"], x->dtype(), 0, name + "/value"), x);
  });
  add({"aten.hardshrink.default", "aten.softshrink.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const double lambda = a.d("lambd");
    Tensor* inside = ew::le(ctx, target, kAten, name + "/inside",
                            impl::unary::unary(ctx, target, kAten, name + "/abs", UnaryOp::kAbs, x), lambda);
    Tensor* kept = x;
    if (target == "aten.softshrink.default")
      kept = ew::sub(ctx, target, kAten, name + "/shrunk", x,
                     ew::mul(ctx, target, kAten, name + "/toward", impl::unary::unary(ctx, target, kAten, name + "/sign",
                                                                                     UnaryOp::kSign, x), lambda));
    return impl::select::where(ctx, target, kAten, name, inside, ctx.constant(impl::scalar_weights(0, x->dtype()), name + "/zero"),
                               kept);
  });
  // RReLU at inference: a leaky ReLU of the mean slope (lower + upper) / 2.
  add({"aten.rrelu_with_noise.default", "aten.rrelu.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return act::leaky_relu(ctx, target, kAten, name, a.tensor("self"), (a.d("lower") + a.d("upper")) / 2);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument training = node_arg(n, "training");
        return training.is<bool>() && !training.as<bool>();
      }, "training=False"});
  // logit: log(p / (1 - p)), p clamped into [eps, 1 - eps] when eps is given.
  add({"aten.logit.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* p = a.tensor("self");
    if (!engine::is_floating(p->dtype())) p = impl::cast::to_dtype(ctx, target, kAten, name + "/float", p, DataType::kFloat32);
    if (!a.none("eps")) p = act::clamp(ctx, target, kAten, name + "/clamp", p, a.d("eps"), 1.0 - a.d("eps"));
    Tensor* odds = ew::div(ctx, target, kAten, name + "/odds", p, ew::sub(ctx, target, kAten, name + "/rest", 1.0, p));
    return impl::unary::unary(ctx, target, kAten, name, UnaryOp::kLog, odds);
  });
  constexpr double kPi = 3.14159265358979323846;
  add({"aten.deg2rad.default"}, KILN_CONVERTER { return ew::mul(ctx, target, kAten, name, args.at(0), kPi / 180.0); });
  add({"aten.rad2deg.default"}, KILN_CONVERTER { return ew::mul(ctx, target, kAten, name, args.at(0), 180.0 / kPi); });
  // round(x, decimals): to the nearest multiple of 10^-decimals, ties to even, computed as
  // PyTorch does (scaled by the power of ten, rounded, scaled back).
  add({"aten.round.decimals"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const int64_t decimals = a.i("decimals");
    if (decimals == 0) return impl::unary::unary(ctx, target, kAten, name, UnaryOp::kRound, x);
    const double ten = std::pow(10.0, double(std::abs(decimals)));
    Tensor* scaled = decimals > 0 ? ew::mul(ctx, target, kAten, name + "/scale", x, ten)
                                  : ew::div(ctx, target, kAten, name + "/scale", x, ten);
    Tensor* r = impl::unary::unary(ctx, target, kAten, name + "/round", UnaryOp::kRound, scaled);
    return decimals > 0 ? ew::div(ctx, target, kAten, name, r, ten) : ew::mul(ctx, target, kAten, name, r, ten);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        return m && ir::is_floating(m->dtype) && node_arg(n, "decimals").is<int64_t>();
      }, "a floating input"});
  // sinc(x) = sin(pi x) / (pi x), 1 at 0.
  add({"aten.sinc.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    if (!engine::is_floating(x->dtype())) x = impl::cast::to_dtype(ctx, target, kAten, name + "/float", x, DataType::kFloat32);
    Tensor* px = ew::mul(ctx, target, kAten, name + "/pi_x", x, kPi);
    Tensor* ratio = ew::div(ctx, target, kAten, name + "/ratio",
                            impl::unary::unary(ctx, target, kAten, name + "/sin", UnaryOp::kSin, px), px);
    return impl::select::where(ctx, target, kAten, name, ew::eq(ctx, target, kAten, name + "/zero", x, 0.0),
                               ctx.constant(impl::scalar_weights(1, x->dtype()), name + "/one"), ratio);
  });
  // xlogy(x, y) = x * log(y), 0 where x == 0 unless y is NaN; xlog1py with log1p(y).
  auto xlog = [](UnaryOp log) {
    return [log](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args, const Kwargs&,
                 const std::string& name) -> Value {
      const Value &x = args.at(0), &y = args.at(1);
      const DataType real = engine::is_floating(x.tensor()->dtype()) ? x.tensor()->dtype() : DataType::kFloat32;
      Tensor* logy = impl::unary::unary(ctx, target, kAten, name + "/log", log,
                                        y.is_tensor() ? y.tensor() : impl::get_tensor(ctx, y, real, 0, name + "/y"));
      Tensor* product = ew::mul(ctx, target, kAten, name + "/product", x, logy);
      Tensor* zero_x = ew::logical_and(ctx, target, kAten, name + "/zero_x", ew::eq(ctx, target, kAten, name + "/x_zero", x, 0.0),
                                       impl::unary::unary(ctx, target, kAten, name + "/y_number", UnaryOp::kNot,
                                                          impl::unary::unary(ctx, target, kAten, name + "/y_nan", UnaryOp::kIsNan, logy)));
      return impl::select::where(ctx, target, kAten, name, zero_x,
                                 ctx.constant(impl::scalar_weights(0, product->dtype()), name + "/zero"), product);
    };
  };
  add({"aten.xlogy.Tensor", "aten.xlogy.Scalar_Other"}, xlog(UnaryOp::kLog));
  add({"aten.special_xlog1py.default"}, xlog(UnaryOp::kLog1p));
  // logaddexp(a, b) = max + log1p(exp(-|a - b|)); max where the sides are equal (infinities).
  add({"aten.logaddexp.default"}, KILN_CONVERTER {
    Tensor* hi = ew::maximum(ctx, target, kAten, name + "/hi", args.at(0), args.at(1));
    Tensor* lo = ew::minimum(ctx, target, kAten, name + "/lo", args.at(0), args.at(1));
    Tensor* sum = ew::add(ctx, target, kAten, name + "/sum", hi,
                          impl::unary::unary(ctx, target, kAten, name + "/log1p", UnaryOp::kLog1p,
                                             impl::unary::unary(ctx, target, kAten, name + "/exp", UnaryOp::kExp,
                                                                ew::sub(ctx, target, kAten, name + "/gap", lo, hi))));
    Tensor* infinite = impl::unary::unary(ctx, target, kAten, name + "/infinite", UnaryOp::kIsInf, hi);
    return impl::select::where(ctx, target, kAten, name,
                               ew::logical_and(ctx, target, kAten, name + "/same_inf", infinite, ew::eq(ctx, target, kAten, name + "/equal", lo, hi)),
                               Value(hi), Value(sum));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta *a = arg_meta(n, "self"), *b = arg_meta(n, "other");
        return a && b && ir::is_floating(a->dtype) && ir::is_floating(b->dtype);
      }, "floating operands"});
  add({"aten.hardtanh.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return act::clamp(ctx, target, kAten, name, a.tensor("self"), a["min_val"], a["max_val"]);
  });
  add({"aten.relu6.default"}, KILN_CONVERTER {
    return act::clamp(ctx, target, kAten, name, args.at(0).tensor(), 0.0, 6.0);
  });
  add({"aten.clamp.default", "aten.clamp.Tensor"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return act::clamp(ctx, target, kAten, name, a.tensor("self"), a["min"], a["max"]);
  });
  add({"aten.clamp_min.default", "aten.clamp_min.Tensor"}, KILN_CONVERTER {
    return act::clamp(ctx, target, kAten, name, args.at(0).tensor(), args.at(1), Value());
  });
  add({"aten.clamp_max.default", "aten.clamp_max.Tensor"}, KILN_CONVERTER {
    return act::clamp(ctx, target, kAten, name, args.at(0).tensor(), Value(), args.at(1));
  });

  // ---- selection ----
  add({"aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", "aten.where.Scalar"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return impl::select::where(ctx, target, kAten, name, a.tensor("condition"), a["self"], a["other"]);
  });
  add({"aten.masked_fill.Scalar", "aten.masked_fill.Tensor"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    Value value = a["value"];
    // The fill value takes self's dtype (masked_fill never promotes).
    if (value.is_tensor()) value = impl::cast::to_dtype(ctx, target, kAten, name + "/value", value.tensor(), self->dtype());
    else value = impl::get_tensor(ctx, value, self->dtype(), 0, name + "/value");
    return impl::select::where(ctx, target, kAten, name, a.tensor("mask"), value, self);
  });
}

}  // namespace kiln::conversion::converters
