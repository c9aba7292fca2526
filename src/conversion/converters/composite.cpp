// Ops PyTorch keeps whole in export graphs that the engine builds from simpler layers: repeat,
// flip, triu/tril, pixel_shuffle, addcmul/addcdiv, lerp, logsumexp, glu, diff.
#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace ew = impl::elementwise;
namespace sh = impl::shuffle;
using engine::UnaryOp;

bool static_along(const ir::Node& n, const std::string& self_arg, const std::string& dim_arg) {
  ir::Argument self = node_arg(n, self_arg), dim = node_arg(n, dim_arg);
  if (!self.is_node() || !self.node()->meta.is_tensor() || !dim.is<int64_t>()) return false;
  const auto& m = self.node()->meta.tensor;
  int64_t d = dim.as<int64_t>();
  if (d < 0) d += static_cast<int64_t>(m.rank());
  return d >= 0 && d < static_cast<int64_t>(m.rank()) && m.sizes[d].is_constant();
}

// triu / tril: keep x where (col - row) compares to `diagonal`, zero elsewhere.
Value triangle(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
               int64_t diagonal, bool upper) {
  const size_t r = x->rank();
  const DimExpr rows_n = x->shape()[r - 2], cols_n = x->shape()[r - 1];
  auto iota = [&](const DimExpr& n, const std::string& suffix) {
    return impl::creation::arange(ctx, target, kAten, name + suffix, int64_t{0}, n, int64_t{1}, DataType::kInt64);
  };
  Tensor* rows = sh::reshape(ctx, target, kAten, name + "/rows_col", iota(rows_n, "/rows"), {rows_n, DimExpr(int64_t{1})});
  Tensor* cols = sh::reshape(ctx, target, kAten, name + "/cols_row", iota(cols_n, "/cols"), {DimExpr(int64_t{1}), cols_n});
  Tensor* diff = ew::sub(ctx, target, kAten, name + "/diff", cols, rows);
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
  add({"aten.pixel_shuffle.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    const int64_t r = args.at(1).to_int();
    const auto& s = x->shape();  // [N, C*r*r, H, W] -> [N, C, r, r, H, W] -> [N, C, H, r, W, r]
    const DimExpr c = floor_div(s[1], DimExpr(r * r));
    Tensor* y = sh::reshape(ctx, target, kAten, name + "/split", x, {s[0], c, DimExpr(r), DimExpr(r), s[2], s[3]});
    y = sh::permute(ctx, target, kAten, name + "/permute", y, {0, 1, 4, 2, 5, 3});
    return sh::reshape(ctx, target, kAten, name, y, {s[0], c, s[2] * DimExpr(r), s[3] * DimExpr(r)});
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument self = node_arg(n, "self");
        return self.is_node() && self.node()->meta.is_tensor() && self.node()->meta.tensor.rank() == 4;
      }, "4-d input"});
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
    const int64_t half = *x->shape()[d].constant() / 2;
    auto parts = impl::slice::split(ctx, target, kAten, name + "/split", x, {half, half}, d);
    return ew::mul(ctx, target, kAten, name, parts[0],
                   impl::activation::sigmoid(ctx, target, kAten, name + "/gate", parts[1]));
  }, {[](const ir::Node& n, const CompilationSettings&) { return static_along(n, "self", "dim"); }, "static dim"});
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
