// Order statistics and NaN-skipping reductions: median, nanmedian and kthvalue read one place of
// the sorted values (TopK sorts NaN as the largest, ties by index, as PyTorch's stable sort does);
// nansum / nanmean sum with NaN as 0; count_nonzero; isin.
#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace ew = impl::elementwise;
namespace sh = impl::shuffle;
namespace red = impl::reduce;
using engine::ReduceOp;
using engine::UnaryOp;

// The lower middle place of `count` numbers, max((count - 1) / 2, 0): nanmedian's place.
Tensor* lower_middle_place(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* count) {
  Tensor* half = ew::floor_divide(ctx, target, kAten, name + "/half", ew::sub(ctx, target, kAten, name + "/less_one", count, int64_t{1}),
                                  int64_t{2});
  return impl::activation::clamp(ctx, target, kAten, name + "/place", half, int64_t{0}, Value());
}

enum class Statistic { kMedian, kNanMedian, kKth };

// (values, indices) of the element at one sorted place along `axis`: the k-th smallest (kth,
// 0-based `k`); the lower median, or the first NaN where there is one (median, which PyTorch
// propagates NaN through); the lower median of the numbers (nanmedian; NaN when all are NaN).
Value::List order_statistic(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
                            int64_t axis, Statistic statistic, int64_t k, bool keepdim) {
  const int64_t n = known_extent(x, axis, "median / kthvalue");
  engine::TopKParams p;
  p.axis = axis, p.k = n, p.largest = false, p.sorted = true;
  engine::Layer* sorted = ctx.net.add_topk(ctx.layer_name(name + "/sort"), x, p);
  Tensor* place = nullptr;  // [.., 1, ..] i64
  if (statistic == Statistic::kKth) {
    std::vector<DimExpr> one = x->shape();
    one[size_t(axis)] = DimExpr(int64_t{1});
    place = impl::creation::full(ctx, target, kAten, name + "/place", one, double(k), DataType::kInt64);
  } else {
    Tensor* nans = red::reduce(ctx, target, kAten, name + "/nans", ReduceOp::kSum,
                               impl::cast::to_dtype(ctx, target, kAten, name + "/is_nan_i64",
                                                    impl::unary::unary(ctx, target, kAten, name + "/is_nan", UnaryOp::kIsNan, x),
                                                    DataType::kInt64),
                               {axis}, true);
    Tensor* numbers = ew::sub(ctx, target, kAten, name + "/numbers", n, nans);
    if (statistic == Statistic::kNanMedian) {
      place = lower_middle_place(ctx, target, name, numbers);
    } else {
      place = impl::select::where(ctx, target, kAten, name + "/place", ew::gt(ctx, target, kAten, name + "/has_nan", nans, int64_t{0}),
                                  Value(numbers), int64_t((n - 1) / 2));
    }
  }
  Tensor* values = impl::select::gather(ctx, target, kAten, name + "/values", sorted->output(0), axis, place);
  Tensor* indices = impl::select::gather(ctx, target, kAten, name + "/indices", sorted->output(1), axis, place);
  if (!keepdim) {
    values = sh::squeeze(ctx, target, kAten, name + "/values_squeezed", values, {axis});
    indices = sh::squeeze(ctx, target, kAten, name + "/indices_squeezed", indices, {axis});
  }
  return {values, indices};
}

bool sortable(const ir::Node& n, int64_t dim) {
  const ir::TensorMeta* m = arg_meta(n, "self");
  return m && (m->rank() == 0 || static_size(n, "self", dim).has_value());
}

int64_t dim_of(const ir::Node& n) { return int_arg(node_arg(n, "dim")).value_or(-1); }

}  // namespace

void register_order() {
  add({"aten.median.dim", "aten.nanmedian.dim"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    if (x->rank() == 0) return Value::List{x, impl::creation::full(ctx, target, kAten, name + "/index", {}, 0, DataType::kInt64)};
    const Statistic s = target == "aten.median.dim" ? Statistic::kMedian : Statistic::kNanMedian;
    return order_statistic(ctx, target, name, x, impl::normalize_axis(a.i("dim"), x->rank()), s, 0, a.b("keepdim"));
  }, {[](const ir::Node& n, const CompilationSettings&) { return sortable(n, dim_of(n)); }, "a static size along dim"});
  add({"aten.median.default", "aten.nanmedian.default"}, KILN_CONVERTER {  // over every element
    Tensor* x = args.at(0).tensor();
    Tensor* flat = sh::reshape(ctx, target, kAten, name + "/flat", x, {DimExpr(int64_t{-1})});
    const Statistic s = target == "aten.median.default" ? Statistic::kMedian : Statistic::kNanMedian;
    return order_statistic(ctx, target, name, flat, 0, s, 0, false)[0];
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        if (!m) return false;
        for (const auto& d : m->sizes)
          if (!d.is_constant()) return false;
        return m->static_numel().value_or(0) > 0;
      }, "a static, non-empty input"});
  add({"aten.kthvalue.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    if (x->rank() == 0) return Value::List{x, impl::creation::full(ctx, target, kAten, name + "/index", {}, 0, DataType::kInt64)};
    return order_statistic(ctx, target, name, x, impl::normalize_axis(a.i("dim"), x->rank()), Statistic::kKth, a.i("k") - 1,
                           a.b("keepdim"));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument k = node_arg(n, "k");
        if (!sortable(n, dim_of(n)) || !k.is<int64_t>()) return false;
        const ir::TensorMeta* m = arg_meta(n, "self");
        const int64_t size = m->rank() == 0 ? 1 : *static_size(n, "self", dim_of(n));
        return k.as<int64_t>() >= 1 && k.as<int64_t>() <= size;
      }, "a static size along dim, 1 <= k <= it"});
  add({"aten.aminmax.default"}, KILN_CONVERTER {  // (min, max) over dim, or over everything
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const std::vector<int64_t> dims = a.none("dim") ? std::vector<int64_t>{} : std::vector<int64_t>{a.i("dim")};
    const bool keep = a.b("keepdim");
    return Value::List{red::reduce(ctx, target, kAten, name + "/min", ReduceOp::kMin, x, dims, keep),
                       red::reduce(ctx, target, kAten, name + "/max", ReduceOp::kMax, x, dims, keep)};
  });
  // nansum / nanmean: NaN counted as 0 (and, for the mean, not counted).
  add({"aten.nansum.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    if (!a.none("dtype")) x = impl::cast::to_dtype(ctx, target, kAten, name + "/dtype", x, node_dtype(ctx));
    if (engine::is_floating(x->dtype()))
      x = impl::select::where(ctx, target, kAten, name + "/numbers",
                              impl::unary::unary(ctx, target, kAten, name + "/is_nan", UnaryOp::kIsNan, x),
                              ctx.constant(impl::scalar_weights(0, x->dtype()), name + "/zero"), x);
    return red::reduce(ctx, target, kAten, name, ReduceOp::kSum, x, a.ints("dim"), a.b("keepdim"));
  });
  add({"aten.count_nonzero.default", "aten.count_nonzero.dim_IntList"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    std::vector<int64_t> dims;
    if (target == "aten.count_nonzero.dim_IntList") dims = a.ints("dim");
    else if (!a.none("dim")) dims = {a.i("dim")};
    Tensor* nonzero = impl::cast::to_dtype(ctx, target, kAten, name + "/nonzero",
                                           ew::ne(ctx, target, kAten, name + "/ne", x, int64_t{0}), DataType::kInt64);
    return red::reduce(ctx, target, kAten, name, ReduceOp::kSum, nonzero, dims, false);
  });
  // isin(elements, test_elements): each element compared with every test element, any equal
  // (none, with invert).
  add({"aten.isin.Tensor_Tensor", "aten.isin.Tensor_Scalar"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("elements");
    const bool invert = a.b("invert");
    if (target == "aten.isin.Tensor_Scalar")
      return invert ? ew::ne(ctx, target, kAten, name, x, a["test_element"]) : ew::eq(ctx, target, kAten, name, x, a["test_element"]);
    Tensor* tests = sh::reshape(ctx, target, kAten, name + "/tests", a.tensor("test_elements"), {DimExpr(int64_t{-1})});
    std::vector<DimExpr> row(x->rank(), DimExpr(int64_t{1}));
    row.push_back(tests->shape()[0]);
    Tensor* equal = ew::eq(ctx, target, kAten, name + "/equal", sh::unsqueeze(ctx, target, kAten, name + "/each", x, int64_t(x->rank())),
                           sh::reshape(ctx, target, kAten, name + "/test_row", tests, row));
    Tensor* any = red::reduce(ctx, target, kAten, invert ? name + "/any" : name, ReduceOp::kAny, equal, {int64_t(x->rank())}, false);
    return invert ? impl::unary::unary(ctx, target, kAten, name, UnaryOp::kNot, any) : any;
  }, {[](const ir::Node& n, const CompilationSettings&) {
        if (n.target == "aten.isin.Tensor_Scalar") return arg_meta(n, "elements") != nullptr;
        const ir::TensorMeta *tests = arg_meta(n, "test_elements"), *elements = arg_meta(n, "elements");
        if (!elements || !tests || !tests->static_numel()) return false;
        const auto count = elements->static_numel();  // the comparisons formed: elements x tests
        return !count || *count * *tests->static_numel() <= (int64_t{1} << 26);
      }, "a static number of test elements, at most 64 Mi comparisons"});
}

}  // namespace kiln::conversion::converters
