// Ops on the diagonals and rows of matrices, built from views, comparisons and reductions:
// diagonal, diag_embed, diag, trace, linalg_cross, cdist and pdist.
#include <algorithm>
#include <cmath>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace ew = impl::elementwise;
namespace sh = impl::shuffle;
namespace red = impl::reduce;
using engine::ReduceOp;
using engine::UnaryOp;

// The length of the `offset` diagonal of an [n, m] matrix (0 where it misses the matrix).
int64_t diagonal_length(int64_t n, int64_t m, int64_t offset) {
  return std::max<int64_t>(0, offset >= 0 ? std::min(n, m - offset) : std::min(n + offset, m));
}

// torch.diagonal: dims d1 and d2 moved last, merged into one run of n*m, and every (m+1)-th
// element taken from the diagonal's first one: the diagonal as the last dim, as PyTorch places it.
Tensor* diagonal(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
                 int64_t offset, int64_t dim1, int64_t dim2) {
  const size_t r = x->rank();
  const int64_t d1 = impl::normalize_axis(dim1, r, "dim1"), d2 = impl::normalize_axis(dim2, r, "dim2");
  std::vector<int64_t> perm;
  for (int64_t d = 0; d < int64_t(r); ++d)
    if (d != d1 && d != d2) perm.push_back(d);
  perm.insert(perm.end(), {d1, d2});
  const int64_t n = known_extent(x, d1, "diagonal"), m = known_extent(x, d2, "diagonal");
  const int64_t length = diagonal_length(n, m, offset);
  bool moved = false;
  for (size_t i = 0; i < r; ++i) moved |= perm[i] != int64_t(i);
  if (moved) x = sh::permute(ctx, target, kAten, name + "/last", x, perm);
  std::vector<DimExpr> flat(x->shape().begin(), x->shape().end() - 2);
  flat.push_back(DimExpr(n * m));
  x = sh::reshape(ctx, target, kAten, name + "/flat", x, flat);
  const int64_t first = offset >= 0 ? offset : -offset * m;
  return impl::slice::slice_op(ctx, target, kAten, name, x, int64_t(r) - 2, first, first + (length - 1) * (m + 1) + 1,
                               m + 1);
}

// torch.diag_embed: the last dim of x laid on the `offset` diagonal of new [N, N] matrices
// (N = n + |offset|) at dims dim1, dim2 of the result, zero elsewhere: x padded to N and
// broadcast along rows (offset >= 0: element i in row i) or columns (offset < 0: in column i),
// kept where column - row == offset.
Tensor* diag_embed(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
                   int64_t offset, int64_t dim1, int64_t dim2) {
  const size_t r = x->rank() + 1;  // the result's rank
  const int64_t d1 = impl::normalize_axis(dim1, r, "dim1"), d2 = impl::normalize_axis(dim2, r, "dim2");
  const int64_t n = known_extent(x->shape().back(), "diag_embed"), size = n + std::abs(offset);
  if (offset != 0) x = impl::pad::pad(ctx, target, kAten, name + "/pad", x, {0, std::abs(offset)}, engine::PadMode::kConstant, 0);
  Tensor* along = sh::unsqueeze(ctx, target, kAten, name + "/along", x, offset >= 0 ? -1 : -2);  // [..., N, 1] or [..., 1, N]
  Tensor* on = ew::eq(ctx, target, kAten, name + "/on", column_minus_row(ctx, target, name, DimExpr(size), DimExpr(size)), offset);
  Tensor* zero = ctx.constant(impl::scalar_weights(0, x->dtype(), r), name + "/zero");
  const bool last = d1 == int64_t(r) - 2 && d2 == int64_t(r) - 1;
  Tensor* y = impl::select::where(ctx, target, kAten, last ? name : name + "/matrices", on, along, zero);
  if (last) return y;
  // Rows to d1, columns to d2, the batch dims in order between them.
  std::vector<int64_t> perm(r);
  int64_t batch = 0;
  for (int64_t p = 0; p < int64_t(r); ++p)
    perm[size_t(p)] = p == d1 ? int64_t(r) - 2 : p == d2 ? int64_t(r) - 1 : batch++;
  return sh::permute(ctx, target, kAten, name, y, perm);
}

// Both dims named by (dim1, dim2) static and distinct, the diagonal not empty.
bool diagonal_ok(const ir::Node& n, int64_t offset, int64_t dim1, int64_t dim2) {
  const ir::TensorMeta* m = arg_meta(n, "self");
  if (!m || m->rank() < 2) return false;
  const int64_t r = int64_t(m->rank());
  if (dim1 < -r || dim1 >= r || dim2 < -r || dim2 >= r || (dim1 + r) % r == (dim2 + r) % r) return false;
  const auto rows = static_size(n, "self", dim1), cols = static_size(n, "self", dim2);
  return rows && cols && diagonal_length(*rows, *cols, offset) > 0;
}

bool embed_ok(const ir::Node& n, int64_t dim1, int64_t dim2) {
  const ir::TensorMeta* m = arg_meta(n, "self");
  if (!m || m->rank() < 1 || !static_size(n, "self", -1)) return false;
  const int64_t r = int64_t(m->rank()) + 1;
  return dim1 >= -r && dim1 < r && dim2 >= -r && dim2 < r && (dim1 + r) % r != (dim2 + r) % r;
}

// The int argument `name` of n; 0 (the schemas' default) where it is not an int literal.
int64_t int_or_zero(const ir::Node& n, const std::string& name) { return int_arg(node_arg(n, name)).value_or(0); }

}  // namespace

void register_matrix() {
  add({"aten.diagonal.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return diagonal(ctx, target, name, a.tensor("self"), a.i("offset"), a.i("dim1"), a.i("dim2"));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        return diagonal_ok(n, int_or_zero(n, "offset"), int_or_zero(n, "dim1"), int_or_zero(n, "dim2"));
      }, "static sizes along dim1 and dim2, a diagonal that is not empty"});
  add({"aten.diag_embed.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return diag_embed(ctx, target, name, a.tensor("self"), a.i("offset"), a.i("dim1"), a.i("dim2"));
  }, {[](const ir::Node& n, const CompilationSettings&) { return embed_ok(n, int_or_zero(n, "dim1"), int_or_zero(n, "dim2")); },
      "a static last dim, dim1 != dim2"});
  // torch.diag: a vector's diagonal matrix, or a matrix's diagonal.
  add({"aten.diag.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const int64_t k = a.i("diagonal");
    return x->rank() == 1 ? diag_embed(ctx, target, name, x, k, 0, 1) : diagonal(ctx, target, name, x, k, 0, 1);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        if (!m) return false;
        return m->rank() == 1 ? embed_ok(n, 0, 1) : m->rank() == 2 && diagonal_ok(n, int_or_zero(n, "diagonal"), 0, 1);
      }, "a vector or matrix of static size"});
  add({"aten.trace.default"}, KILN_CONVERTER {  // the main diagonal's sum (integers in i64)
    Tensor* d = diagonal(ctx, target, name + "/diagonal", args.at(0).tensor(), 0, 0, 1);
    return red::reduce(ctx, target, kAten, name, ReduceOp::kSum, d, {}, false);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        return m && m->rank() == 2 && diagonal_ok(n, 0, 0, 1);
      }, "a matrix of static size"});
  // torch.linalg.cross of 3-vectors along dim: a[i+1] b[i+2] - a[i+2] b[i+1], the rotations of
  // each operand taken by index_select.
  add({"aten.linalg_cross.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    Tensor* y = a.tensor("other");
    const size_t r = std::max(x->rank(), y->rank());
    x = impl::broadcast_rank(ctx, x, r, name + "/self");
    y = impl::broadcast_rank(ctx, y, r, name + "/other");
    const int64_t d = impl::normalize_axis(a.i("dim"), r);
    auto rotated = [&](Tensor* t, int64_t by, const std::string& what) {
      const int64_t order[3] = {by % 3, (by + 1) % 3, (by + 2) % 3};
      Tensor* index = ctx.constant(engine::Weights::copy_of(DataType::kInt64, {3}, order), name + what + "/order");
      return impl::select::index_select(ctx, target, kAten, name + what, t, d, index);
    };
    Tensor* first = ew::mul(ctx, target, kAten, name + "/first", rotated(x, 1, "/a1"), rotated(y, 2, "/b2"));
    Tensor* second = ew::mul(ctx, target, kAten, name + "/second", rotated(x, 2, "/a2"), rotated(y, 1, "/b1"));
    return ew::sub(ctx, target, kAten, name, first, second);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument dim = node_arg(n, "dim");
        if (!dim.is<int64_t>()) return false;
        const int64_t d = dim.as<int64_t>();
        const ir::TensorMeta *x = arg_meta(n, "self"), *y = arg_meta(n, "other");
        if (!x || !y) return false;
        // Each operand has size 3 along dim, counted from the end when negative.
        auto three = [&](const char* arg, const ir::TensorMeta* m) {
          const int64_t r = int64_t(std::max(x->rank(), y->rank())), own = d < 0 ? d : d - (r - int64_t(m->rank()));
          return own >= -int64_t(m->rank()) && own < int64_t(m->rank()) && static_size(n, arg, own) == 3;
        };
        return three("self", x) && three("other", y);
      }, "size 3 along dim"});
  // torch.cdist of [.., P, M] and [.., R, M] rows: their p-distances, [.., P, R]. For p = 2 with
  // more than 25 rows on a side (PyTorch's default compute_mode), |a|^2 + |b|^2 - 2 a.b through a
  // matrix multiply, clamped at 0, as PyTorch computes it; otherwise the differences broadcast.
  add({"aten._cdist_forward.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("x1");
    Tensor* y = a.tensor("x2");
    const double p = a.d("p");
    const int64_t mode = a.none("compute_mode") ? 0 : a.i("compute_mode");
    const size_t r = x->rank();
    const DimExpr rows_x = x->shape()[r - 2], rows_y = y->shape()[y->rank() - 2];
    const bool many = !rows_x.is_constant() || !rows_y.is_constant() || *rows_x.constant() > 25 || *rows_y.constant() > 25;
    if (p == 2.0 && (mode == 1 || (mode == 0 && many))) {
      Tensor* xx = red::reduce(ctx, target, kAten, name + "/xx", ReduceOp::kSum, ew::mul(ctx, target, kAten, name + "/x2", x, x), {-1}, true);
      Tensor* yy = red::reduce(ctx, target, kAten, name + "/yy", ReduceOp::kSum, ew::mul(ctx, target, kAten, name + "/y2", y, y), {-1}, true);
      Tensor* xy = impl::matmul::matrix_multiply(ctx, target, kAten, name + "/xy", x, y, false, true);
      Tensor* sq = ew::add(ctx, target, kAten, name + "/sum",
                           ew::sub(ctx, target, kAten, name + "/less", xx, ew::mul(ctx, target, kAten, name + "/twice", xy, 2.0)),
                           sh::transpose(ctx, target, kAten, name + "/yy_row", yy, -1, -2));
      return impl::unary::unary(ctx, target, kAten, name, UnaryOp::kSqrt,
                                impl::activation::clamp(ctx, target, kAten, name + "/clamp", sq, 0.0, Value()));
    }
    Tensor* diff = ew::sub(ctx, target, kAten, name + "/diff", sh::unsqueeze(ctx, target, kAten, name + "/x_rows", x, -2),
                           sh::unsqueeze(ctx, target, kAten, name + "/y_rows", y, -3));  // [.., P, R, M]
    return red::p_norm(ctx, target, kAten, name, diff, p, {-1}, false);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const double v = number_arg(node_arg(n, "p")).value_or(-1.0);
        const ir::TensorMeta *x = arg_meta(n, "x1"), *y = arg_meta(n, "x2");
        if (!(v >= 0 || std::isinf(v)) || !x || !y || x->rank() < 2 || x->rank() != y->rank()) return false;
        // Where the converter does not multiply matrices it forms the differences, [.., P, R, M]: bounded.
        const ir::Argument mode = node_arg(n, "compute_mode");
        const int64_t m_mode = mode.is<int64_t>() ? mode.as<int64_t>() : 0;
        const bool many = !n.meta.is_tensor() || !n.meta.tensor.is_static() ||
                          n.meta.tensor.sizes[n.meta.tensor.rank() - 2].value > 25 || n.meta.tensor.sizes.back().value > 25;
        if (v == 2.0 && (m_mode == 1 || (m_mode == 0 && many))) return true;
        const auto out = n.meta.is_tensor() ? n.meta.tensor.static_numel() : std::nullopt;
        const auto m = static_size(n, "x1", -1);
        return out && m && *out * *m <= (int64_t{1} << 26);
      }, "p >= 0 or inf, operands of one rank, differences of at most 64 Mi elements"});
  // F.pdist of the rows of [n, m]: the p-distances of the pairs i < j in row-major order, from the
  // [n, n] table of differences' norms and a constant list of its upper triangle's positions.
  add({"aten._pdist_forward.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const int64_t n = known_extent(x, 0, "pdist");
    Tensor* diff = ew::sub(ctx, target, kAten, name + "/diff", sh::unsqueeze(ctx, target, kAten, name + "/rows", x, 1),
                           sh::unsqueeze(ctx, target, kAten, name + "/cols", x, 0));  // [n, n, m]
    Tensor* table = red::p_norm(ctx, target, kAten, name + "/table", diff, a.d("p"), {-1}, false);
    std::vector<int64_t> pairs;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) pairs.push_back(i * n + j);
    return impl::select::index_select(ctx, target, kAten, name, sh::reshape(ctx, target, kAten, name + "/flat", table, {DimExpr(n * n)}),
                                      0, positions_constant(ctx, name + "/pairs", pairs));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        const double v = number_arg(node_arg(n, "p")).value_or(-1.0);
        if (!m || m->rank() != 2 || !m->is_static() || !(v >= 0 || std::isinf(v))) return false;
        const int64_t rows = m->sizes[0].value, cols = m->sizes[1].value;
        return rows >= 2 && rows * rows * std::max<int64_t>(cols, 1) <= (int64_t{1} << 26);
      }, "a static [n >= 2, m] input, p >= 0 or inf, n*n*m at most 64 Mi"});
}

}  // namespace kiln::conversion::converters
