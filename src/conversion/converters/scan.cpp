// Scans the engine has no layer for, as log-step (Hillis-Steele) scans of pointwise layers: after
// step s every element combines the 2^s elements ending at it, so ceil(log2 n) steps over a static
// size n. cumprod, logcumsumexp with a stable pairwise log-add-exp, and cummax / cummin.
#include <cmath>
#include <functional>
#include <limits>
#include <optional>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace ew = impl::elementwise;
using engine::UnaryOp;

using Combine = std::function<Tensor*(Tensor* later, Tensor* earlier, const std::string& name)>;

// Inclusive scan of x along `axis` (static size) with an associative `combine`; `identity` fills
// the places before the start that each step's shifted copy reads. Without one (max, min: any
// dtype, no identity value needed) the first element does, which an idempotent combine absorbs.
Tensor* log_step_scan(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
                      int64_t axis, std::optional<double> identity, const Combine& combine) {
  const int64_t n = known_extent(x, axis, "scan");
  const size_t r = x->rank();
  int64_t step = 1;
  for (int round = 0; step < n; ++round, step *= 2) {
    const std::string at = 2 * step < n ? name + "/step" + std::to_string(round) : name;
    Tensor* kept = impl::slice::slice_op(ctx, target, kAten, at + "/kept", x, axis, int64_t{0}, n - step, 1);
    std::vector<int64_t> pad(2 * (r - size_t(axis)), 0);
    pad[pad.size() - 2] = step;  // before, along axis (PyTorch order: last dim first)
    Tensor* shifted = impl::pad::pad(ctx, target, kAten, at + "/shifted", kept, pad,
                                     identity ? engine::PadMode::kConstant : engine::PadMode::kReplicate, identity.value_or(0));
    x = combine(x, shifted, at);
  }
  return x;
}

bool static_scan_dim(const ir::Node& n) {
  const ir::Argument dim = node_arg(n, "dim");
  const ir::TensorMeta* m = arg_meta(n, "self");
  if (!m || !dim.is<int64_t>()) return false;
  if (m->rank() == 0) return true;
  return static_size(n, "self", dim.as<int64_t>()).has_value();
}

}  // namespace

void register_scan() {
  // cumprod: integers and bools multiply in i64 (PyTorch's result dtype), dtype= casts first.
  add({"aten.cumprod.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    DataType out = !a.none("dtype") ? node_dtype(ctx) : engine::is_floating(x->dtype()) ? x->dtype() : DataType::kInt64;
    if (x->dtype() != out) x = impl::cast::to_dtype(ctx, target, kAten, name + "/cast", x, out);
    if (x->rank() == 0) return x;
    return log_step_scan(ctx, target, name, x, impl::normalize_axis(a.i("dim"), x->rank()), 1.0,
                         [&](Tensor* later, Tensor* earlier, const std::string& at) {
                           return ew::mul(ctx, target, kAten, at, later, earlier);
                         });
  }, {[](const ir::Node& n, const CompilationSettings&) { return static_scan_dim(n); }, "a static size along dim"});
  // cummax / cummin: the running extreme (NaN, once seen, stays: torch.maximum's rule), and the
  // index of the last element that set it, ties and NaNs included (PyTorch's): the running
  // maximum of the positions where the element equals the running value or is NaN.
  add({"aten.cummax.default", "aten.cummin.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    if (x->rank() == 0) return Value::List{x, impl::creation::full(ctx, target, kAten, name + "/index", {}, 0, DataType::kInt64)};
    const int64_t axis = impl::normalize_axis(a.i("dim"), x->rank());
    const bool max = target == "aten.cummax.default";
    Tensor* values = log_step_scan(ctx, target, name + "/values", x, axis, std::nullopt,
                                   [&](Tensor* later, Tensor* earlier, const std::string& at) {
                                     return max ? ew::maximum(ctx, target, kAten, at, later, earlier)
                                                : ew::minimum(ctx, target, kAten, at, later, earlier);
                                   });
    Tensor* sets = ew::eq(ctx, target, kAten, name + "/sets", x, values);
    if (engine::is_floating(x->dtype()))
      sets = ew::logical_or(ctx, target, kAten, name + "/sets_or_nan", sets,
                            impl::unary::unary(ctx, target, kAten, name + "/nan", UnaryOp::kIsNan, x));
    const DimExpr n = x->shape()[size_t(axis)];
    std::vector<DimExpr> along(x->rank(), DimExpr(int64_t{1}));
    along[size_t(axis)] = n;
    Tensor* positions = impl::shuffle::reshape(
        ctx, target, kAten, name + "/positions",
        impl::creation::arange(ctx, target, kAten, name + "/iota", int64_t{0}, n, int64_t{1}, DataType::kInt64), along);
    Tensor* setters = impl::select::where(ctx, target, kAten, name + "/setters", sets, Value(positions), int64_t{0});
    Tensor* indices = log_step_scan(ctx, target, name + "/indices", setters, axis, 0.0,
                                    [&](Tensor* later, Tensor* earlier, const std::string& at) {
                                      return ew::maximum(ctx, target, kAten, at, later, earlier);
                                    });
    return Value::List{values, indices};
  }, {[](const ir::Node& n, const CompilationSettings&) { return static_scan_dim(n); }, "a static size along dim"});
  // logcumsumexp: each step adds in log space, max(a, b) + log1p(exp(min - max)), which neither
  // overflows nor loses the smaller term to underflow; -inf (nothing yet) leaves the other side,
  // and equal sides (inf included) give max + log 2.
  add({"aten.logcumsumexp.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    if (!engine::is_floating(x->dtype())) x = impl::cast::to_dtype(ctx, target, kAten, name + "/float", x, DataType::kFloat32);
    if (x->rank() == 0) return x;
    const double kNegInf = -std::numeric_limits<double>::infinity();
    return log_step_scan(ctx, target, name, x, impl::normalize_axis(a.i("dim"), x->rank()), kNegInf,
                         [&](Tensor* later, Tensor* earlier, const std::string& at) -> Tensor* {
                           Tensor* hi = ew::maximum(ctx, target, kAten, at + "/hi", later, earlier);
                           Tensor* lo = ew::minimum(ctx, target, kAten, at + "/lo", later, earlier);
                           Tensor* gap = ew::sub(ctx, target, kAten, at + "/gap", lo, hi);
                           Tensor* sum = ew::add(ctx, target, kAten, at + "/sum", hi,
                                                 impl::unary::unary(ctx, target, kAten, at + "/log1p", UnaryOp::kLog1p,
                                                                    impl::unary::unary(ctx, target, kAten, at + "/exp",
                                                                                       UnaryOp::kExp, gap)));
                           Tensor* twice = ew::add(ctx, target, kAten, at + "/twice", hi, std::log(2.0));
                           Tensor* one_side = impl::select::where(ctx, target, kAten, at + "/one_side",
                                                                  ew::eq(ctx, target, kAten, at + "/empty", lo, kNegInf),
                                                                  Value(hi), Value(sum));
                           return impl::select::where(ctx, target, kAten, at, ew::eq(ctx, target, kAten, at + "/equal", lo, hi),
                                                      Value(twice), Value(one_side));
                         });
  }, {[](const ir::Node& n, const CompilationSettings&) { return static_scan_dim(n); }, "a static size along dim"});
}

}  // namespace kiln::conversion::converters
