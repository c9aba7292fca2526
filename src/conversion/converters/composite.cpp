// Ops PyTorch keeps whole in export graphs that the engine builds from simpler layers: repeat and
// repeat_interleave, flip, triu/tril, pixel (un)shuffle and channel shuffle, addcmul/addcdiv, lerp,
// logsumexp, glu, diff, nan_to_num, hypot, atan2.
#include <algorithm>
#include <limits>
#include <set>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace ew = impl::elementwise;
namespace sh = impl::shuffle;
using engine::UnaryOp;

bool static_along(const ir::Node& n, const std::string& self_arg, const std::string& dim_arg) {
  const ir::Argument dim = node_arg(n, dim_arg);
  return dim.is<int64_t>() && static_size(n, self_arg, dim.as<int64_t>()).has_value();
}

// triu / tril: keep x where (col - row) compares to `diagonal`, zero elsewhere.
Value triangle(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
               int64_t diagonal, bool upper) {
  const size_t r = x->rank();
  Tensor* diff = column_minus_row(ctx, target, name, x->shape()[r - 2], x->shape()[r - 1]);
  Tensor* keep = upper ? ew::ge(ctx, target, kAten, name + "/keep", diff, diagonal)
                       : ew::le(ctx, target, kAten, name + "/keep", diff, diagonal);
  Tensor* zero = ctx.constant(impl::scalar_weights(0, x->dtype(), r), name + "/zero");
  return impl::select::where(ctx, target, kAten, name, keep, x, zero);
}

}  // namespace

void register_composite() {
  add({"aten.repeat.default"}, KILN_CONVERTER {
    // x[d0, d1] repeated (r0, r1): view as [1, d0, 1, d1], expand to [r0, d0, r1, d1], merge pairs.
    Tensor* x = args.at(0).tensor();
    std::vector<DimExpr> reps = args.at(1).to_dims();
    if (reps.size() < x->rank()) throw ConversionError("repeat needs at least one repeat per dim");
    x = impl::broadcast_rank(ctx, x, reps.size(), name);
    std::vector<DimExpr> inter, expanded, merged;
    for (size_t i = 0; i < reps.size(); ++i) {
      const DimExpr& d = x->shape()[i];
      inter.insert(inter.end(), {DimExpr(int64_t{1}), d});
      expanded.insert(expanded.end(), {reps[i], d});
      merged.push_back(reps[i] * d);
    }
    Tensor* y = sh::reshape(ctx, target, kAten, name + "/interleave", x, inter);
    y = sh::expand(ctx, target, kAten, name + "/expand", y, expanded);
    return sh::reshape(ctx, target, kAten, name, y, merged);
  });
  // repeat_interleave(repeats) -> the positions 0, 1, ... each repeats[i] times (PyTorch 1.13
  // writes x.repeat_interleave(2, dim) as this plus index_select). Its length is the sum of the
  // repeats, data-dependent in general: converted where output_size= states it, or where the
  // repeats come from constants alone, so the traced length holds for every call. Position j takes the count of cumulative
  // sums at or below it.
  add({"aten.repeat_interleave.Tensor"}, KILN_CONVERTER {
    Tensor* repeats = args.at(0).tensor();
    const DimExpr length = node_shape(ctx).at(0);
    Tensor* ends = impl::reduce::cumsum(ctx, target, kAten, name + "/ends",
                                        impl::cast::to_dtype(ctx, target, kAten, name + "/repeats", repeats,
                                                             DataType::kInt64), 0);
    Tensor* positions = sh::reshape(
        ctx, target, kAten, name + "/positions",
        impl::creation::arange(ctx, target, kAten, name + "/iota", int64_t{0}, length, int64_t{1}, DataType::kInt64),
        {length, DimExpr(int64_t{1})});
    Tensor* passed = ew::le(ctx, target, kAten, name + "/passed",
                            sh::reshape(ctx, target, kAten, name + "/ends_row", ends, {DimExpr(int64_t{1}), ends->shape()[0]}),
                            positions);  // [length, n]: segment k ended at or before position j
    return impl::reduce::reduce(ctx, target, kAten, name, engine::ReduceOp::kSum,
                                impl::cast::to_dtype(ctx, target, kAten, name + "/counted", passed, DataType::kInt64),
                                {1}, false);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        if (!n.meta.is_tensor() || n.meta.tensor.rank() != 1 || !n.meta.tensor.sizes[0].is_constant()) return false;
        // The caller states the length (output_size=, as PyTorch lets it for a sync-free call).
        if (node_arg(n, "output_size").is<int64_t>()) return true;
        // Computed from constants alone: no graph input among the repeats' ancestors.
        std::vector<const ir::Node*> todo{&n};
        std::set<const ir::Node*> seen;
        while (!todo.empty()) {
          const ir::Node* m = todo.back();
          todo.pop_back();
          if (!seen.insert(m).second) continue;
          if (m->kind == ir::NodeKind::Placeholder) return false;
          for (const ir::Node* in : m->inputs()) todo.push_back(in);
        }
        return true;
      }, "output_size given, or repeats computed from constants"});
  // bucketize(x, boundaries) / searchsorted(sequence, x) over one sorted 1-d sequence: the count of
  // sequence values below x (left) or at or below it (right), from an [..., n] comparison summed.
  add({"aten.bucketize.Tensor", "aten.searchsorted.Tensor"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const bool bucketize = target == "aten.bucketize.Tensor";
    Tensor* x = a.tensor("self");
    Tensor* sequence = a.tensor(bucketize ? "boundaries" : "sorted_sequence");
    const bool right = a.b("right") || (!bucketize && !a.none("side") && a["side"].str() == "right");
    std::vector<DimExpr> row(x->rank(), DimExpr(int64_t{1}));
    row.push_back(sequence->shape()[0]);
    Tensor* seq = sh::reshape(ctx, target, kAten, name + "/sequence", sequence, row);
    Tensor* xs = sh::unsqueeze(ctx, target, kAten, name + "/values", x, int64_t(x->rank()));
    Tensor* below = right ? ew::le(ctx, target, kAten, name + "/below", seq, xs) : ew::lt(ctx, target, kAten, name + "/below", seq, xs);
    const DataType out = a.b("out_int32") ? DataType::kInt32 : DataType::kInt64;
    Tensor* count = impl::reduce::reduce(ctx, target, kAten, name + "/count", engine::ReduceOp::kSum,
                                         impl::cast::to_dtype(ctx, target, kAten, name + "/counted", below, DataType::kInt64),
                                         {int64_t(x->rank())}, false);
    return impl::cast::to_dtype(ctx, target, kAten, name, count, out);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const bool bucketize = n.target == "aten.bucketize.Tensor";
        const ir::Argument seq = node_arg(n, bucketize ? "boundaries" : "sorted_sequence");
        if (!bucketize && !node_arg(n, "sorter").is_none()) return false;
        return seq.is_node() && seq.node()->meta.is_tensor() && seq.node()->meta.tensor.rank() == 1;
      }, "one 1-d sorted sequence, no sorter"});
  add({"aten.repeat_interleave.self_int"}, KILN_CONVERTER {
    // Each element `repeats` times in a row along `dim` (the flattened input without one):
    // [.., n, ..] viewed as [.., n, 1, ..], expanded to [.., n, r, ..], merged to [.., n*r, ..].
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const DimExpr r = a["repeats"].to_dim();
    int64_t dim = 0;
    if (a.none("dim")) x = sh::flatten(ctx, target, kAten, name + "/flat", x, 0, int64_t(x->rank()) - 1);
    else dim = impl::normalize_axis(a.i("dim"), x->rank());
    if (x->rank() == 0) x = sh::reshape(ctx, target, kAten, name + "/as_1d", x, {DimExpr(int64_t{1})});
    std::vector<DimExpr> inter, expanded, merged;
    for (size_t i = 0; i < x->rank(); ++i) {
      const DimExpr& d = x->shape()[i];
      inter.push_back(d);
      expanded.push_back(d);
      merged.push_back(int64_t(i) == dim ? d * r : d);
      if (int64_t(i) == dim) inter.push_back(DimExpr(int64_t{1})), expanded.push_back(r);
    }
    Tensor* y = sh::reshape(ctx, target, kAten, name + "/unsqueeze", x, inter);
    y = sh::expand(ctx, target, kAten, name + "/expand", y, expanded);
    return sh::reshape(ctx, target, kAten, name, y, merged);
  });
  add({"aten.flip.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    std::vector<bool> flip(x->rank(), false);
    for (int64_t d : args.at(1).to_ints()) flip[impl::normalize_axis(d, x->rank())] = true;
    engine::SliceParams p;  // a reversed slice: start at n-1, stride -1
    for (size_t i = 0; i < x->rank(); ++i) {
      const DimExpr& n = x->shape()[i];
      p.start.push_back(flip[i] ? n - DimExpr(int64_t{1}) : DimExpr(int64_t{0}));
      p.size.push_back(n);
      p.stride.push_back(DimExpr(flip[i] ? int64_t{-1} : int64_t{1}));
    }
    return ctx.net.add_slice(ctx.layer_name(name), x, p)->output(0);
  });
  add({"aten.triu.default"}, KILN_CONVERTER {
    return triangle(ctx, target, name, args.at(0).tensor(), args.at(1).to_int(), true);
  });
  add({"aten.tril.default"}, KILN_CONVERTER {
    return triangle(ctx, target, name, args.at(0).tensor(), args.at(1).to_int(), false);
  });
  const Reg four_d = {[](const ir::Node& n, const CompilationSettings&) {
                        ir::Argument self = node_arg(n, "self");
                        return self.is_node() && self.node()->meta.is_tensor() && self.node()->meta.tensor.rank() == 4;
                      }, "4-d input"};
  add({"aten.pixel_shuffle.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    const int64_t r = args.at(1).to_int();
    const auto& s = x->shape();  // [N, C*r*r, H, W] -> [N, C, r, r, H, W] -> [N, C, H, r, W, r]
    const DimExpr c = floor_div(s[1], DimExpr(r * r));
    Tensor* y = sh::reshape(ctx, target, kAten, name + "/split", x, {s[0], c, DimExpr(r), DimExpr(r), s[2], s[3]});
    y = sh::permute(ctx, target, kAten, name + "/permute", y, {0, 1, 4, 2, 5, 3});
    return sh::reshape(ctx, target, kAten, name, y, {s[0], c, s[2] * DimExpr(r), s[3] * DimExpr(r)});
  }, four_d);
  add({"aten.pixel_unshuffle.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    const int64_t r = args.at(1).to_int();
    const auto& s = x->shape();  // [N, C, H*r, W*r] -> [N, C, H, r, W, r] -> [N, C, r, r, H, W]
    const DimExpr h = floor_div(s[2], DimExpr(r)), w = floor_div(s[3], DimExpr(r));
    Tensor* y = sh::reshape(ctx, target, kAten, name + "/split", x, {s[0], s[1], h, DimExpr(r), w, DimExpr(r)});
    y = sh::permute(ctx, target, kAten, name + "/permute", y, {0, 1, 3, 5, 2, 4});
    return sh::reshape(ctx, target, kAten, name, y, {s[0], s[1] * DimExpr(r * r), h, w});
  }, four_d);
  // ShuffleNet's channel shuffle: [N, g*k, ...] -> [N, g, k, ...] -> [N, k, g, ...] -> [N, k*g, ...].
  add({"aten.channel_shuffle.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    const int64_t g = args.at(1).to_int();
    std::vector<DimExpr> s = x->shape();
    std::vector<DimExpr> split{s[0], DimExpr(g), floor_div(s[1], DimExpr(g))};
    split.insert(split.end(), s.begin() + 2, s.end());
    std::vector<int64_t> order{0, 2, 1};
    for (size_t d = 3; d < split.size(); ++d) order.push_back(int64_t(d));
    Tensor* y = sh::reshape(ctx, target, kAten, name + "/split", x, split);
    y = sh::permute(ctx, target, kAten, name + "/permute", y, order);
    return sh::reshape(ctx, target, kAten, name, y, s);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument self = node_arg(n, "self"), g = node_arg(n, "groups");
        return self.is_node() && self.node()->meta.is_tensor() && self.node()->meta.tensor.rank() >= 2 &&
               g.is<int64_t>() && g.as<int64_t>() > 0;
      }, "groups > 0"});
  // nan_to_num: NaN to `nan` (0), +inf / -inf to `posinf` / `neginf` (the dtype's largest and lowest).
  add({"aten.nan_to_num.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const bool half = x->dtype() == DataType::kFloat16, bf16 = x->dtype() == DataType::kBFloat16;
    const double big = half ? 65504.0 : bf16 ? 3.3895313892515355e38 : double(std::numeric_limits<float>::max());
    const double nan = a.none("nan") ? 0.0 : a.d("nan"), posinf = a.none("posinf") ? big : a.d("posinf"),
                 neginf = a.none("neginf") ? -big : a.d("neginf");
    Tensor* inf = impl::unary::unary(ctx, target, kAten, name + "/isinf", UnaryOp::kIsInf, x);
    Tensor* positive = ew::gt(ctx, target, kAten, name + "/positive", x, 0.0);
    Tensor* sign = impl::cast::to_dtype(ctx, target, kAten, name + "/sign_cast",
                                        impl::select::where(ctx, target, kAten, name + "/sign", positive, posinf, neginf),
                                        x->dtype());
    Tensor* y = impl::select::where(ctx, target, kAten, name + "/inf", inf, Value(sign), x);
    Tensor* isnan = impl::unary::unary(ctx, target, kAten, name + "/isnan", UnaryOp::kIsNan, x);
    return impl::select::where(ctx, target, kAten, name, isnan, nan, y);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument self = node_arg(n, "self");
        return self.is_node() && self.node()->meta.is_tensor() && ir::is_floating(self.node()->meta.tensor.dtype);
      }, "floating input"});
  add({"aten.hypot.default"}, KILN_CONVERTER {  // sqrt(a^2 + b^2)
    Tensor* sq = ew::add(ctx, target, kAten, name + "/sum", ew::mul(ctx, target, kAten, name + "/a2", args.at(0), args.at(0)),
                         ew::mul(ctx, target, kAten, name + "/b2", args.at(1), args.at(1)));
    return impl::unary::unary(ctx, target, kAten, name, UnaryOp::kSqrt, sq);
  });
  // atan2(y, x): atan(y / x), moved by +-pi left of the y axis (x < 0, or -0), +-pi/2 on it, and
  // at the origin +-0 or +-pi as the signs of the zeros say (IEEE's atan2, as PyTorch computes it;
  // both infinite gives NaN here where IEEE gives multiples of pi/4).
  add({"aten.atan2.default"}, KILN_CONVERTER {
    const Value &y = args.at(0), &x = args.at(1);
    constexpr double kPi = 3.14159265358979323846;
    Tensor* base = impl::unary::unary(ctx, target, kAten, name + "/atan", UnaryOp::kAtan,
                                      ew::div(ctx, target, kAten, name + "/ratio", y, x));
    auto like_base = [&](Tensor* t, const char* what) {  // scalar wheres are f32; keep fp16 / bf16
      return impl::cast::to_dtype(ctx, target, kAten, name + what, t, base->dtype());
    };
    auto negative = [&](const Value& v, const std::string& what) {  // v < 0, or v is -0 (1/v is -inf)
      return ew::logical_or(ctx, target, kAten, name + what, ew::lt(ctx, target, kAten, name + what + "_lt", v, 0.0),
                            ew::lt(ctx, target, kAten, name + what + "_inv_lt",
                                   ew::div(ctx, target, kAten, name + what + "_inv", 1.0, v), 0.0));
    };
    Tensor* shift = like_base(impl::select::where(ctx, target, kAten, name + "/shift", negative(y, "/y_sign"), -kPi, kPi),
                              "/shift_cast");
    Tensor* left = negative(x, "/x_sign");
    Tensor* turned = impl::select::where(ctx, target, kAten, name + "/turned", left,
                                         Value(ew::add(ctx, target, kAten, name + "/shifted", base, shift)), base);
    Tensor* vertical = like_base(impl::select::where(ctx, target, kAten, name + "/vertical",
                                                     ew::lt(ctx, target, kAten, name + "/y_neg", y, 0.0), -kPi / 2,
                                                     kPi / 2),
                                 "/vertical_cast");
    Tensor* origin = like_base(impl::select::where(ctx, target, kAten, name + "/origin", left, Value(shift), y),
                               "/origin_cast");
    Tensor* on_axis = impl::select::where(ctx, target, kAten, name + "/on_axis",
                                          ew::eq(ctx, target, kAten, name + "/y_zero", y, 0.0), Value(origin),
                                          Value(vertical));
    return impl::select::where(ctx, target, kAten, name, ew::eq(ctx, target, kAten, name + "/x_zero", x, 0.0),
                               Value(on_axis), Value(turned));
  });
  auto addc = [](bool divide) {
    return [divide](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                    const Kwargs& kwargs, const std::string& name) -> Value {
      Args a(target, args, kwargs);
      Tensor* t = divide ? ew::div(ctx, target, kAten, name + "/div", a["tensor1"], a["tensor2"])
                         : ew::mul(ctx, target, kAten, name + "/mul", a["tensor1"], a["tensor2"]);
      if (a.d("value") != 1.0) t = ew::mul(ctx, target, kAten, name + "/value", t, a["value"]);
      return ew::add(ctx, target, kAten, name, a["self"], t);
    };
  };
  add({"aten.addcmul.default"}, addc(false));
  add({"aten.addcdiv.default"}, addc(true));
  add({"aten.lerp.Scalar"}, KILN_CONVERTER {  // self + weight * (end - self)
    Args a(target, args, kwargs);
    Tensor* d = ew::sub(ctx, target, kAten, name + "/delta", a["end"], a["self"]);
    return ew::add(ctx, target, kAten, name, a["self"], ew::mul(ctx, target, kAten, name + "/scale", d, a["weight"]));
  });
  add({"aten.logsumexp.default"}, KILN_CONVERTER {
    // max + log(sum(exp(x - max))), stable for large inputs.
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    if (!engine::is_floating(x->dtype())) x = impl::cast::to_dtype(ctx, target, kAten, name + "/float", x, DataType::kFloat32);
    const std::vector<int64_t> dims = a.ints("dim");
    namespace red = impl::reduce;
    Tensor* m = red::reduce(ctx, target, kAten, name + "/max", engine::ReduceOp::kMax, x, dims, true);
    Tensor* e = impl::unary::unary(ctx, target, kAten, name + "/exp", UnaryOp::kExp,
                                   ew::sub(ctx, target, kAten, name + "/shift", x, m));
    Tensor* s = red::reduce(ctx, target, kAten, name + "/sum", engine::ReduceOp::kSum, e, dims, true);
    Tensor* out = ew::add(ctx, target, kAten, name + "/add",
                          impl::unary::unary(ctx, target, kAten, name + "/log", UnaryOp::kLog, s), m);
    if (a.b("keepdim")) return out;
    return sh::squeeze(ctx, target, kAten, name, out, dims.empty() ? std::vector<int64_t>{} : dims);
  });
  add({"aten.glu.default"}, KILN_CONVERTER {  // a * sigmoid(b), halves along dim
    Tensor* x = args.at(0).tensor();
    const int64_t d = impl::normalize_axis(args.at(1).to_int(), x->rank());
    const int64_t half = known_extent(x, int64_t(d), "glu") / 2;
    auto parts = impl::slice::split(ctx, target, kAten, name + "/split", x, {half, half}, d);
    return ew::mul(ctx, target, kAten, name, parts[0],
                   impl::activation::sigmoid(ctx, target, kAten, name + "/gate", parts[1]));
  }, {[](const ir::Node& n, const CompilationSettings&) { return static_along(n, "self", "dim"); }, "static dim"});
  // rot90(k, dims): k quarter turns from dims[0] toward dims[1], as flips and a transpose.
  add({"aten.rot90.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const std::vector<int64_t> dims = a.ints("dims");
    const int64_t d0 = impl::normalize_axis(dims[0], x->rank()), d1 = impl::normalize_axis(dims[1], x->rank());
    const int64_t k = ((a.i("k") % 4) + 4) % 4;
    auto flip = [&](Tensor* t, std::vector<int64_t> along, const std::string& nm) {
      engine::SliceParams p;  // reversed along each dim of `along`
      for (size_t d = 0; d < t->rank(); ++d) {
        const bool rev = std::find(along.begin(), along.end(), int64_t(d)) != along.end();
        p.start.push_back(rev ? t->shape()[d] - DimExpr(int64_t{1}) : DimExpr(int64_t{0}));
        p.size.push_back(t->shape()[d]);
        p.stride.push_back(DimExpr(rev ? int64_t{-1} : int64_t{1}));
      }
      return ctx.net.add_slice(ctx.layer_name(nm), t, p)->output(0);
    };
    if (k == 0) return sh::reshape(ctx, target, kAten, name, x, x->shape());
    if (k == 2) return flip(x, {d0, d1}, name);
    if (k == 1) return sh::transpose(ctx, target, kAten, name, flip(x, {d1}, name + "/flip"), d0, d1);
    return flip(sh::transpose(ctx, target, kAten, name + "/transpose", x, d0, d1), {d1}, name);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        const auto dims = ints_arg(node_arg(n, "dims"), 2);
        if (!m || !int_arg(node_arg(n, "k")) || !dims) return false;
        const int64_t r = int64_t(m->rank()), a = (*dims)[0], b = (*dims)[1];
        return a >= -r && a < r && b >= -r && b < r && (a + r) % r != (b + r) % r;
      }, "two distinct dims"});
  // block_diag: each matrix padded with zeros to its place in the total width, stacked by rows.
  add({"aten.block_diag.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    std::vector<Tensor*> blocks = a.tensors("tensors");
    const DataType out = node_dtype(ctx);
    std::vector<std::pair<int64_t, int64_t>> sizes;  // rows, cols of each as a matrix
    int64_t width = 0;
    for (Tensor*& b : blocks) {
      b = impl::cast::to_dtype(ctx, target, kAten, name + "/cast", b, out);
      if (b->rank() < 2) b = sh::reshape(ctx, target, kAten, name + "/matrix", b, {DimExpr(int64_t{1}), b->rank() ? b->shape()[0] : DimExpr(int64_t{1})});
      sizes.emplace_back(known_extent(b, 0, "block_diag"), known_extent(b, 1, "block_diag"));
      width += sizes.back().second;
    }
    std::vector<Tensor*> rows;
    int64_t left = 0;
    for (size_t i = 0; i < blocks.size(); ++i) {
      const int64_t right = width - left - sizes[i].second;
      rows.push_back(left || right ? impl::pad::pad(ctx, target, kAten, name + "/row", blocks[i], {left, right}, engine::PadMode::kConstant, 0)
                                   : blocks[i]);
      left += sizes[i].second;
    }
    return impl::cat::cat(ctx, target, kAten, name, rows, 0);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument list = node_arg(n, "tensors");
        if (!list.is<ir::Argument::List>() || list.as<ir::Argument::List>().empty()) return false;
        for (const ir::Argument& t : list.as<ir::Argument::List>()) {
          if (!t.is_node() || !t.node()->meta.is_tensor()) return false;
          const ir::TensorMeta& m = t.node()->meta.tensor;
          if (m.rank() > 2 || !m.is_static()) return false;
        }
        return true;
      }, "static matrices, vectors or scalars"});
  // take: the flattened input indexed (negative indices from the end).
  add({"aten.take.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* flat = sh::reshape(ctx, target, kAten, name + "/flat", a.tensor("self"), {DimExpr(int64_t{-1})});
    Tensor* index = a.tensor("index");
    Tensor* picked = impl::select::index_select(ctx, target, kAten, name + "/picked", flat, 0,
                                                sh::reshape(ctx, target, kAten, name + "/index", index, {DimExpr(int64_t{-1})}));
    return sh::reshape(ctx, target, kAten, name, picked, index->shape());
  });
  // index_fill(dim, index, value): the slices along dim that index names set to value, through a
  // mask of the positions index holds.
  add({"aten.index_fill.int_Scalar", "aten.index_fill.int_Tensor"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const int64_t d = impl::normalize_axis(a.i("dim"), x->rank());
    const DimExpr n = x->shape()[size_t(d)];
    Tensor* index = sh::reshape(ctx, target, kAten, name + "/index", a.tensor("index"), {DimExpr(int64_t{-1})});
    index = impl::cast::to_dtype(ctx, target, kAten, name + "/index_i64", index, DataType::kInt64);
    index = ew::remainder(ctx, target, kAten, name + "/wrapped", index, Value(n));  // negative from the end
    Tensor* positions = sh::unsqueeze(ctx, target, kAten, name + "/positions",
                                      impl::creation::arange(ctx, target, kAten, name + "/iota", int64_t{0}, n, int64_t{1}, DataType::kInt64), 1);
    Tensor* hit = impl::reduce::reduce(ctx, target, kAten, name + "/hit", engine::ReduceOp::kAny,
                                       ew::eq(ctx, target, kAten, name + "/equal", positions, index), {1}, false);  // [n]
    std::vector<DimExpr> along(x->rank(), DimExpr(int64_t{1}));
    along[size_t(d)] = n;
    Tensor* mask = sh::reshape(ctx, target, kAten, name + "/mask", hit, along);
    Value value = a["value"];
    value = value.is_tensor() ? Value(impl::cast::to_dtype(ctx, target, kAten, name + "/value", value.tensor(), x->dtype()))
                              : Value(impl::get_tensor(ctx, value, x->dtype(), 0, name + "/value"));
    return impl::select::where(ctx, target, kAten, name, mask, value, x);
  });
  add({"aten.diff.default"}, KILN_CONVERTER {
    // torch.diff: cat(prepend, self, append) along dim, then n times x[1:] - x[:-1] (logical_xor
    // for bool, as PyTorch does). transformers' packed-sequence detection diffs position ids.
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const int64_t n = a.i("n");
    if (x->rank() == 0) throw ConversionError("diff of a 0-d tensor");
    const int64_t d = impl::normalize_axis(a.i("dim"), x->rank());
    std::vector<Tensor*> parts;
    if (Tensor* p = a.opt_tensor("prepend")) parts.push_back(p);
    parts.push_back(x);
    if (Tensor* p = a.opt_tensor("append")) parts.push_back(p);
    if (parts.size() > 1) x = impl::cat::cat(ctx, target, kAten, name + "/cat", parts, d);
    for (int64_t i = 0; i < n; ++i) {
      const std::string step = i + 1 == n ? name : name + "/" + std::to_string(i);
      Tensor* hi = impl::slice::slice_op(ctx, target, kAten, step + "/hi", x, d, int64_t{1}, Value(), 1);
      Tensor* lo = impl::slice::slice_op(ctx, target, kAten, step + "/lo", x, d, int64_t{0}, int64_t{-1}, 1);
      x = x->dtype() == DataType::kBool ? ew::logical_xor(ctx, target, kAten, step, hi, lo)
                                        : ew::sub(ctx, target, kAten, step, hi, lo);
    }
    return x;
  }, {[](const ir::Node& n, const CompilationSettings&) {
        // prepend/append must be tensors (PyTorch also takes them only as tensors) and n >= 0.
        ir::Argument k = node_arg(n, "n");
        return k.is<int64_t>() && k.as<int64_t>() >= 0 && node_arg(n, "dim").is<int64_t>();
      }, "static n >= 0 and dim"});
}

}  // namespace kiln::conversion::converters
