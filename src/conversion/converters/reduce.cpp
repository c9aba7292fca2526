// Reductions, arg-reductions, cumsum, topk, nonzero.
#include <cmath>
#include <optional>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace red = impl::reduce;

// A full sort along a dim is a top-k of all of it: TopK orders ties by lower index first and NaN
// as the largest, which is what PyTorch's stable sort gives in both directions.
engine::Layer* full_sort(ConversionContext& ctx, const std::string& name, Args& a) {
  Tensor* x = a.tensor("self");
  engine::TopKParams p;
  p.axis = impl::normalize_axis(a.i("dim"), x->rank());
  p.k = engine::TopKParams::kWholeAxis;  // the axis may be a data-dependent count
  p.largest = a.b("descending");
  p.sorted = true;
  return ctx.net.add_topk(ctx.layer_name(name), x, p);
}
using engine::ReduceOp;

// `dtype=` of sum/mean/prod/cumsum: cast the input first (PyTorch accumulates in that dtype).
Tensor* with_dtype(ConversionContext& ctx, const Args& a, const std::string& target, const std::string& name,
                   Tensor* x) {
  const Value& dt = a["dtype"];
  if (dt.is_none()) return x;
  return impl::cast::to_dtype(ctx, target, kAten, name + "/dtype", x, to_engine_dtype(std::get<ir::ScalarType>(dt.v)));
}

// dim=None or dim=[] (amax / amin) mean every axis.
std::vector<int64_t> dims_of(const Args& a) { return a.ints("dim"); }

Fn reduction(ReduceOp op) {
  return [op](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args, const Kwargs& kwargs,
              const std::string& name) -> Value {
    Args a(target, args, kwargs);
    Tensor* x = with_dtype(ctx, a, target, name, a.tensor("self"));
    const bool keep = a["keepdim"].is_none() ? false : a.b("keepdim");
    return red::reduce(ctx, target, kAten, name, op, x, dims_of(a), keep);
  };
}

// max.dim / min.dim: (values, indices).
Fn value_and_index(ReduceOp value_op, ReduceOp index_op) {
  return [=](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args, const Kwargs& kwargs,
             const std::string& name) -> Value {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const int64_t dim = a.i("dim");
    const bool keep = a.b("keepdim");
    Tensor* v = red::reduce(ctx, target, kAten, name + "/values", value_op, x, {dim}, keep);
    Tensor* i = red::arg(ctx, target, kAten, name + "/indices", index_op, x, dim, keep);
    return Value::List{v, i};
  };
}

bool correction_ok(const ir::Node& n) {
  const ir::OpSchema* s = ir::find_schema(n.target);
  return s != nullptr;
}

double correction_of(const Args& a) {
  if (!a["correction"].is_none()) return a.d("correction");
  if (!a["unbiased"].is_none()) return a.b("unbiased") ? 1.0 : 0.0;
  return 1.0;  // var.correction with correction=None: Bessel's correction
}

}  // namespace

void register_reduce() {
  add({"aten.sum.dim_IntList", "aten.sum.default"}, reduction(ReduceOp::kSum));
  add({"aten.mean.dim", "aten.mean.default"}, reduction(ReduceOp::kMean));
  add({"aten.amax.default"}, reduction(ReduceOp::kMax));
  add({"aten.amin.default"}, reduction(ReduceOp::kMin));
  add({"aten.max.default"}, reduction(ReduceOp::kMax));
  add({"aten.min.default"}, reduction(ReduceOp::kMin));
  add({"aten.prod.default", "aten.prod.dim_int"}, reduction(ReduceOp::kProd));
  add({"aten.any.default", "aten.any.dim", "aten.any.dims"}, reduction(ReduceOp::kAny));
  add({"aten.all.default", "aten.all.dim", "aten.all.dims"}, reduction(ReduceOp::kAll));
  add({"aten.max.dim"}, value_and_index(ReduceOp::kMax, ReduceOp::kArgMax));
  add({"aten.min.dim"}, value_and_index(ReduceOp::kMin, ReduceOp::kArgMin));
  auto arg = [](ReduceOp op) {
    return [op](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                const Kwargs& kwargs, const std::string& name) -> Value {
      Args a(target, args, kwargs);
      const Value& d = a["dim"];
      return red::arg(ctx, target, kAten, name, op, a.tensor("self"),
                      d.is_none() ? std::nullopt : std::optional<int64_t>(d.to_int()), a.b("keepdim"));
    };
  };
  add({"aten.argmax.default"}, arg(ReduceOp::kArgMax));
  add({"aten.argmin.default"}, arg(ReduceOp::kArgMin));
  auto var = [](bool std_dev) {
    return [std_dev](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                     const Kwargs& kwargs, const std::string& name) -> Value {
      Args a(target, args, kwargs);
      const bool keep = a["keepdim"].is_none() ? false : a.b("keepdim");
      Tensor* v = red::reduce(ctx, target, kAten, std_dev ? name + "/var" : name, ReduceOp::kVar, a.tensor("self"),
                              a.ints("dim"), keep, correction_of(a));
      if (!std_dev) return v;
      return impl::unary::unary(ctx, target, kAten, name, engine::UnaryOp::kSqrt, v);
    };
  };
  add({"aten.var.correction", "aten.var.dim", "aten.var.default"}, var(false),
      {[](const ir::Node& n, const CompilationSettings&) { return correction_ok(n); }, "known schema"});
  add({"aten.std.correction", "aten.std.dim", "aten.std.default"}, var(true),
      {[](const ir::Node& n, const CompilationSettings&) { return correction_ok(n); }, "known schema"});
  static const auto p_of = [](const ir::Argument& a) -> std::optional<double> {
    return a.is_none() ? std::optional<double>(2.0) : number_arg(a);
  };
  static const auto p_ok = [](const ir::Argument& a) {
    const std::optional<double> p = p_of(a);
    return p && (*p >= 0 || std::isinf(*p));
  };
  // (variance or deviation, mean) in one call: torch.var_mean / torch.std_mean.
  add({"aten.var_mean.correction", "aten.std_mean.correction"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const bool keep = a.b("keepdim");
    const std::vector<int64_t> dims = a.ints("dim");
    Tensor* v = red::reduce(ctx, target, kAten, name + "/var", ReduceOp::kVar, x, dims, keep, correction_of(a));
    if (target == "aten.std_mean.correction") v = impl::unary::unary(ctx, target, kAten, name + "/std", engine::UnaryOp::kSqrt, v);
    return Value::List{v, red::reduce(ctx, target, kAten, name + "/mean", ReduceOp::kMean, x, dims, keep)};
  });
  add({"aten.linalg_vector_norm.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = with_dtype(ctx, a, target, name, a.tensor("self"));
    return red::p_norm(ctx, target, kAten, name, x, *p_of(node_arg(*ctx.current_node, "ord")), a.ints("dim"), a.b("keepdim"));
  }, {[](const ir::Node& n, const CompilationSettings&) { return p_ok(node_arg(n, "ord")); },
      "ord >= 0 or +-inf"});
  // Weight normalization (weight_norm on wav2vec2's positional convolution, vocoders): v scaled
  // to the norm g along dim, (v * g / |v|, |v|) with |v| over every other dim.
  add({"aten._weight_norm_interface.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* v = a.tensor("v");
    const int64_t dim = impl::normalize_axis(a.i("dim"), v->rank());
    std::vector<int64_t> others;
    for (int64_t d = 0; d < int64_t(v->rank()); ++d)
      if (d != dim) others.push_back(d);
    Tensor* norm = red::reduce(ctx, target, kAten, name + "/norm", ReduceOp::kNorm2, v, others, true);
    Tensor* scale = impl::elementwise::div(ctx, target, kAten, name + "/scale", a["g"], norm);
    return Value::List{impl::elementwise::mul(ctx, target, kAten, name, v, scale), norm};
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* v = arg_meta(n, "v");
        return v && v->rank() >= 1 && node_arg(n, "dim").is<int64_t>();
      }, "a static dim"});
  // torch.norm / F.normalize as PyTorch 1.13 traces them (2.x writes linalg_vector_norm).
  add({"aten.norm.ScalarOpt_dim"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return red::p_norm(ctx, target, kAten, name, a.tensor("self"), *p_of(node_arg(*ctx.current_node, "p")), a.ints("dim"),
                  a.b("keepdim"));
  }, {[](const ir::Node& n, const CompilationSettings&) { return p_ok(node_arg(n, "p")); }, "p >= 0 or +-inf"});
  add({"aten.cumsum.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return red::cumsum(ctx, target, kAten, name, with_dtype(ctx, a, target, name, a.tensor("self")), a.i("dim"));
  });
  add({"aten.topk.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    engine::TopKParams p;
    p.axis = impl::normalize_axis(a.i("dim"), x->rank());
    p.k = a.i("k");
    p.largest = a.b("largest");
    p.sorted = a.b("sorted");
    engine::Layer* l = ctx.net.add_topk(ctx.layer_name(name), x, p);
    return Value::List{l->output(0), l->output(1)};
  }, {[](const ir::Node& n, const CompilationSettings&) { return node_arg(n, "k").is<int64_t>(); }, "static k"});
  const Reg sorted_dim = {[](const ir::Node& n, const CompilationSettings&) {
    ir::Argument self = node_arg(n, "self"), dim = node_arg(n, "dim");
    if (!self.is_node() || !self.node()->meta.is_tensor()) return false;
    const auto& t = self.node()->meta.tensor;
    if (t.rank() == 0) return false;
    const int64_t r = int64_t(t.rank()), given = dim.is<int64_t>() ? dim.as<int64_t>() : -1;
    const int64_t d = given < 0 ? given + r : given;
    return d >= 0 && d < r;
  }, "a tensor of rank >= 1 and a dim in range", /*dynamic=*/true};
  add({"aten.sort.default", "aten.sort.stable"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    engine::Layer* l = full_sort(ctx, name, a);
    return Value::List{l->output(0), l->output(1)};
  }, sorted_dim);
  add({"aten.argsort.default", "aten.argsort.stable"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return full_sort(ctx, name, a)->output(1);
  }, sorted_dim);
  add({"aten.nonzero.default"}, KILN_CONVERTER {
    return ctx.net.add_nonzero(ctx.layer_name(name), args.at(0).tensor())->output(0);
  }, {{}, "", true, /*output_allocator=*/true});
  // torch.unique (sorted) and unique_consecutive over the flattened input: the values (sorted
  // first for unique) split into runs of equal neighbours; the first of each run is kept, found by
  // nonzero, so the count of distinct values is a data-dependent size (the output allocator).
  // inverse: each element's run number (cumsum of the run starts), scattered back to its place;
  // counts: ones scatter-added into the runs. Outputs not asked for are empty, as PyTorch's are.
  auto unique = [](bool sort_first) {
    return [sort_first](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                        const Kwargs& kwargs, const std::string& name) -> Value {
      namespace ew = impl::elementwise;
      namespace sh = impl::shuffle;
      Args a(target, args, kwargs);
      Tensor* x = a.tensor("self");
      DimExpr n(int64_t{1});
      for (const DimExpr& d : x->shape()) n = n * d;
      const int64_t count = known_extent(n, "unique");  // the validator's condition on the trace
      Tensor* values = sh::reshape(ctx, target, kAten, name + "/flat", x, {n});
      Tensor* order = nullptr;  // sorted position -> flat position
      if (sort_first) {
        engine::TopKParams p;
        p.axis = 0, p.k = count, p.largest = false, p.sorted = true;
        engine::Layer* sorted = ctx.net.add_topk(ctx.layer_name(name + "/sort"), values, p);
        values = sorted->output(0), order = sorted->output(1);
      }
      Tensor* starts = impl::creation::full(ctx, target, kAten, name + "/first", {DimExpr(int64_t{1})}, 1.0,
                                            DataType::kBool);
      if (count > 1) {
        Tensor* later = impl::slice::slice_op(ctx, target, kAten, name + "/later", values, 0, int64_t{1}, count, 1);
        Tensor* earlier = impl::slice::slice_op(ctx, target, kAten, name + "/earlier", values, 0, int64_t{0}, count - 1, 1);
        starts = impl::cat::cat(ctx, target, kAten, name + "/starts", {starts, ew::ne(ctx, target, kAten, name + "/differs", later, earlier)}, 0);
      }
      Tensor* where = ctx.net.add_nonzero(ctx.layer_name(name + "/where"), starts)->output(0);  // [u, 1]
      const DimExpr u = where->shape()[0];
      Tensor* first = sh::reshape(ctx, target, kAten, name + "/first_index", where, {u});
      Tensor* out = impl::select::index_select(ctx, target, kAten, name, values, 0, first);
      Tensor* run = nullptr;  // each sorted element's run number
      if (a.b("return_inverse") || a.b("return_counts"))
        run = ew::sub(ctx, target, kAten, name + "/run",
                      impl::reduce::cumsum(ctx, target, kAten, name + "/runs",
                                           impl::cast::to_dtype(ctx, target, kAten, name + "/starts_i64", starts,
                                                                DataType::kInt64), 0),
                      int64_t{1});
      auto empty = [&](const std::string& what) {
        return impl::creation::full(ctx, target, kAten, name + what, {DimExpr(int64_t{0})}, 0.0, DataType::kInt64);
      };
      Tensor* inverse = empty("/no_inverse");
      if (a.b("return_inverse")) {
        inverse = run;
        if (order) {
          Tensor* zeros = impl::creation::full(ctx, target, kAten, name + "/inverse0", {n}, 0.0, DataType::kInt64);
          inverse = impl::select::scatter(ctx, target, kAten, name + "/inverse_flat", zeros, 0, order, Value(run),
                                          engine::ScatterReduce::kNone);
        }
        inverse = sh::reshape(ctx, target, kAten, name + "/inverse", inverse, x->shape());
      }
      Tensor* counts = empty("/no_counts");
      if (a.b("return_counts")) {
        Tensor* zeros = impl::creation::full(ctx, target, kAten, name + "/counts0", {u}, 0.0, DataType::kInt64);
        Tensor* ones = impl::creation::full(ctx, target, kAten, name + "/ones", {n}, 1.0, DataType::kInt64);
        counts = impl::select::scatter(ctx, target, kAten, name + "/counts", zeros, 0, run, Value(ones),
                                       engine::ScatterReduce::kAdd);
      }
      return Value::List{out, inverse, counts};
    };
  };
  const Reg unique_reg = {[](const ir::Node& n, const CompilationSettings&) {
    ir::Argument self = node_arg(n, "self");
    if (!self.is_node() || !self.node()->meta.is_tensor() || !self.node()->meta.tensor.is_static()) return false;
    if (self.node()->meta.tensor.static_numel() == 0) return false;
    if (n.target == "aten._unique2.default") {
      ir::Argument sorted = node_arg(n, "sorted");
      if (!sorted.is<bool>() || !sorted.as<bool>()) return false;  // unsorted order is PyTorch's hash order
    } else if (!node_arg(n, "dim").is_none()) {
      return false;
    }
    return node_arg(n, "return_inverse").is<bool>() && node_arg(n, "return_counts").is<bool>();
  }, "sorted, no dim, a static non-empty input", true, /*output_allocator=*/true};
  add({"aten._unique2.default"}, unique(true), unique_reg);
  add({"aten.unique_consecutive.default"}, unique(false), unique_reg);
  add({"aten.masked_select.default"}, KILN_CONVERTER {
    // x and mask broadcast together and flattened; the elements where the mask holds, in order:
    // nonzero of the flat mask (its data-dependent count sizes the output), then index_select.
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    Tensor* mask = a.tensor("mask");
    const size_t rank = std::max(x->rank(), mask->rank());
    x = impl::broadcast_rank(ctx, x, rank, name + "/x_rank");
    mask = impl::broadcast_rank(ctx, mask, rank, name + "/mask_rank");
    std::vector<DimExpr> dims;
    DimExpr count(int64_t{1});
    for (size_t d = 0; d < rank; ++d) {
      const DimExpr& xd = x->shape()[d];
      dims.push_back(xd.constant() == int64_t{1} ? mask->shape()[d] : xd);
      count = count * dims.back();
    }
    x = impl::shuffle::expand(ctx, target, kAten, name + "/x_all", x, dims);
    mask = impl::shuffle::expand(ctx, target, kAten, name + "/mask_all", mask, dims);
    Tensor* flat_x = impl::shuffle::reshape(ctx, target, kAten, name + "/x_flat", x, {count});
    Tensor* flat_mask = impl::shuffle::reshape(ctx, target, kAten, name + "/mask_flat", mask, {count});
    return impl::select::index_select(ctx, target, kAten, name, flat_x, 0,
                                      impl::select::true_positions(ctx, target, kAten, name + "/index", flat_mask));
  }, {{}, "", true, /*output_allocator=*/true});
}

}  // namespace kiln::conversion::converters
