// What functionalization leaves of in-place and view mutations (slice_scatter, select_scatter,
// copy, fill), plus roll and as_strided. Each rebuilds the result from slices and concatenation
// (as_strided: a gather), so it needs static sizes along the axis it touches (validators check).
#include <algorithm>
#include <optional>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace sh = impl::shuffle;
namespace sl = impl::slice;

// PyTorch's clamp of a slice bound into [0, n].
int64_t clamp_bound(const Value& v, int64_t n, int64_t fallback) {
  if (v.is_none()) return fallback;
  int64_t b = v.to_int();
  if (b < 0) b += n;
  return std::clamp<int64_t>(b, 0, n);
}

// self with [start, end) along dim replaced by src.
Tensor* replace_range(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* self,
                      Tensor* src, int64_t dim, int64_t start, int64_t end) {
  const int64_t axis = impl::normalize_axis(dim, self->rank());
  const int64_t n = known_extent(self, axis, "slice/select scatter");
  src = impl::cast::to_dtype(ctx, target, kAten, name + "/cast", src, self->dtype());
  std::vector<Tensor*> parts;
  if (start > 0) parts.push_back(sl::slice_op(ctx, target, kAten, name + "/before", self, axis, int64_t{0}, start, 1));
  parts.push_back(src);
  if (end < n) parts.push_back(sl::slice_op(ctx, target, kAten, name + "/after", self, axis, end, Value(), 1));
  return impl::cat::cat(ctx, target, kAten, name, parts, axis);
}

Tensor* broadcast_to(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* value,
                     Tensor* like) {
  value = impl::cast::to_dtype(ctx, target, kAten, name + "/cast", value, like->dtype());
  value = impl::broadcast_rank(ctx, value, like->rank(), name);
  return sh::expand(ctx, target, kAten, name, value, like->shape());
}

bool contiguous_strides(const ir::TensorMeta& m) {
  if (m.strides.empty()) return true;
  int64_t expected = 1;
  for (size_t d = m.sizes.size(); d-- > 0;) {
    if (!m.sizes[d].is_constant() || !m.strides[d].is_constant()) return false;
    if (m.sizes[d].value != 1 && m.strides[d].value != expected) return false;
    expected *= m.sizes[d].value;
  }
  return true;
}

// Row-major strides, where one size may be symbolic: each stride equals the product of the sizes
// after it (compared as expressions; a product of a symbol with anything else is not followed).
bool contiguous_layout(const ir::TensorMeta& m) {
  if (m.strides.empty()) return true;
  ir::SymInt expected(int64_t{1});
  for (size_t d = m.sizes.size(); d-- > 0;) {
    const ir::SymInt& size = m.sizes[d];
    if (!(size.is_constant() && size.value == 1) && !(m.strides[d] == expected)) return false;
    if (size.is_constant() && expected.is_constant()) expected = ir::SymInt(expected.value * size.value);
    else if (expected.is_constant() && expected.value == 1) expected = size;
    else if (!(size.is_constant() && size.value == 1)) expected = ir::SymInt(int64_t{-1});  // not followed: fails later dims
  }
  return true;
}

}  // namespace

void register_functional() {
  add({"aten.slice_scatter.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    const int64_t dim = impl::normalize_axis(a.i("dim"), self->rank());
    const int64_t n = known_extent(self, dim, "slice_scatter");
    const int64_t s = clamp_bound(a["start"], n, 0), e = std::max(s, clamp_bound(a["end"], n, n));
    return replace_range(ctx, target, name, self, a.tensor("src"), dim, s, e);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        auto dim = int_arg(node_arg(n, "dim"));
        auto step = int_arg(node_arg(n, "step"));
        ir::Argument s = node_arg(n, "start"), e = node_arg(n, "end");
        return dim && step == std::optional<int64_t>(1) && static_size(n, "self", *dim) &&
               (s.is_none() || s.is<int64_t>()) && (e.is_none() || e.is<int64_t>());
      }, "step 1, static bounds and dim size"});
  add({"aten.select_scatter.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    const int64_t dim = impl::normalize_axis(a.i("dim"), self->rank());
    const int64_t n = known_extent(self, dim, "select_scatter");
    int64_t i = a.i("index");
    if (i < 0) i += n;
    Tensor* src = sh::unsqueeze(ctx, target, kAten, name + "/unsqueeze", a.tensor("src"), dim);
    return replace_range(ctx, target, name, self, src, dim, i, i + 1);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        auto dim = int_arg(node_arg(n, "dim"));
        return dim && int_arg(node_arg(n, "index")) && static_size(n, "self", *dim);
      }, "static index and dim size"});
  add({"aten.copy.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return broadcast_to(ctx, target, name, a.tensor("src"), a.tensor("self"));
  });
  add({"aten.fill.Scalar"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    return impl::creation::full(ctx, target, kAten, name, self->shape(), a.d("value"), self->dtype());
  });
  add({"aten.zero.default"}, KILN_CONVERTER {  // what tensor.zero_() becomes once functional
    Tensor* self = args.at(0).tensor();
    return impl::creation::full(ctx, target, kAten, name, self->shape(), 0.0, self->dtype());
  });
  add({"aten.fill.Tensor"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return broadcast_to(ctx, target, name, a.tensor("value"), a.tensor("self"));
  });
  add({"aten.roll.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    std::vector<int64_t> shifts = a.ints("shifts"), dims = a.ints("dims");
    const std::vector<DimExpr> original = x->shape();
    if (dims.empty()) {  // roll of the flattened tensor
      x = sh::reshape(ctx, target, kAten, name + "/flatten", x, {DimExpr(int64_t{-1})});
      dims = {0};
    }
    for (size_t k = 0; k < dims.size(); ++k) {
      const int64_t d = impl::normalize_axis(dims[k], x->rank());
      auto n = x->shape()[d].constant();
      if (!n) throw ConversionError("roll along a symbolic dim");
      const int64_t s = *n ? ((shifts.at(k) % *n) + *n) % *n : 0;
      if (s == 0) continue;
      const std::string part = name + "/" + std::to_string(k);
      Tensor* tail = sl::slice_op(ctx, target, kAten, part + "/tail", x, d, *n - s, Value(), 1);
      Tensor* head = sl::slice_op(ctx, target, kAten, part + "/head", x, d, int64_t{0}, *n - s, 1);
      x = impl::cat::cat(ctx, target, kAten, part, {tail, head}, d);
    }
    return sh::reshape(ctx, target, kAten, name, x, original);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument self = node_arg(n, "self");
        ir::Argument shifts = node_arg(n, "shifts");
        if (!self.is_node() || !self.node()->meta.is_tensor() || !self.node()->meta.tensor.is_static()) return false;
        if (shifts.is<int64_t>()) return true;
        if (!shifts.is_list()) return false;
        for (const auto& e : shifts.list())
          if (!e.is<int64_t>()) return false;
        return true;
      }, "static shape and shifts"});
  // as_strided of a contiguous input: a reshape where it only re-states a contiguous layout (what
  // decompositions of views leave); otherwise (overlapping frames, as torch.stft cuts them) a gather
  // of the flat positions offset + sum(index_d * stride_d), computed here from the static sizes.
  add({"aten.as_strided.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const std::vector<DimExpr> sizes = a.dims("size");
    bool symbolic = false;
    for (const DimExpr& d : sizes) symbolic |= !d.is_constant();
    for (const DimExpr& d : a.dims("stride")) symbolic |= !d.is_constant();
    if (symbolic) {
      // Sizes known only per call (frames of a signal of any length): the positions summed from
      // one arange per dim, broadcast together, each scaled by its stride. The gather checks each
      // position against the input at run time.
      namespace ew = impl::elementwise;
      const std::vector<DimExpr> stride = a.dims("stride");
      Tensor* at = impl::creation::full(ctx, target, kAten, name + "/offset", std::vector<DimExpr>(sizes.size(), DimExpr(int64_t{1})),
                                        double(a.none("storage_offset") ? 0 : a.i("storage_offset")), DataType::kInt64);
      for (size_t d = 0; d < sizes.size(); ++d) {
        std::vector<DimExpr> along(sizes.size(), DimExpr(int64_t{1}));
        along[d] = sizes[d];
        Tensor* steps = impl::creation::arange(ctx, target, kAten, name + "/steps" + std::to_string(d), int64_t{0}, sizes[d],
                                               int64_t{1}, DataType::kInt64);
        const Value step = stride[d].is_constant() ? Value(*stride[d].constant())
                                                   : Value(impl::symbolic_scalar(ctx, stride[d], name + "/stride_of" + std::to_string(d)));
        at = ew::add(ctx, target, kAten, name + "/at" + std::to_string(d), at,
                     sh::reshape(ctx, target, kAten, name + "/along" + std::to_string(d),
                                 ew::mul(ctx, target, kAten, name + "/stride" + std::to_string(d), steps, step), along));
      }
      DimExpr count(int64_t{1});
      for (const DimExpr& d : sizes) count = count * d;
      Tensor* flat = sh::reshape(ctx, target, kAten, name + "/flat", x, {DimExpr(int64_t{-1})});
      Tensor* taken = impl::select::index_select(ctx, target, kAten, name + "/taken", flat, 0,
                                                 sh::reshape(ctx, target, kAten, name + "/positions", at, {count}));
      return sh::reshape(ctx, target, kAten, name, taken, sizes);
    }
    const std::vector<int64_t> size = a.ints("size"), stride = a.ints("stride");
    const int64_t offset = a.none("storage_offset") ? 0 : a.i("storage_offset");
    std::vector<int64_t> positions{offset};
    bool contiguous = offset == 0;
    int64_t expected = 1;
    for (size_t d = size.size(); d-- > 0;) {
      contiguous &= size[d] == 1 || stride[d] == expected;
      expected *= size[d];
    }
    if (contiguous && x->rank() && expected == *impl::shape::numel(x).constant())
      return sh::reshape(ctx, target, kAten, name, x, a.dims("size"));
    for (size_t d = 0; d < size.size(); ++d) {  // row-major over the result's dims
      std::vector<int64_t> next;
      next.reserve(positions.size() * size_t(size[d]));
      for (int64_t p : positions)
        for (int64_t i = 0; i < size[d]; ++i) next.push_back(p + i * stride[d]);
      positions = std::move(next);
    }
    Tensor* flat = sh::reshape(ctx, target, kAten, name + "/flat", x, {DimExpr(int64_t{-1})});
    Tensor* index = positions_constant(ctx, name + "/positions", positions);
    Tensor* taken = impl::select::index_select(ctx, target, kAten, name + "/taken", flat, 0, index);
    return sh::reshape(ctx, target, kAten, name, taken, a.dims("size"));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument self = node_arg(n, "self"), off = node_arg(n, "storage_offset");
        if (!self.is_node() || !self.node()->meta.is_tensor() || !n.meta.is_tensor()) return false;
        const auto& in = self.node()->meta.tensor;
        ir::Argument size = node_arg(n, "size"), stride = node_arg(n, "stride");
        if (!size.is_list() || !stride.is_list() || size.list().size() != stride.list().size()) return false;
        if (!(off.is_none() || off.is<int64_t>()) || !in.storage_offset.is_constant() || in.storage_offset.value != 0)
          return false;
        bool symbolic = false;  // sizes known per call: positions computed then, and checked by the gather
        for (size_t i = 0; i < size.list().size(); ++i) {
          const ir::Argument &sz = size.list()[i], &st = stride.list()[i];
          if (!(st.is_node() || (st.is<int64_t>() && st.as<int64_t>() >= 0)) || !(sz.is_node() || sz.is<int64_t>())) return false;
          symbolic |= sz.is_node() || st.is_node();
        }
        if (symbolic) return contiguous_layout(in);
        if (!in.is_static() || !contiguous_strides(in)) return false;
        // Every position inside the input (its own elements, not the rest of a storage it may view).
        int64_t last = off.is<int64_t>() ? off.as<int64_t>() : 0, count = 1;
        for (size_t i = 0; i < size.list().size(); ++i) {
          if (!size.list()[i].is<int64_t>() || !stride.list()[i].is<int64_t>()) return false;
          const int64_t s = size.list()[i].as<int64_t>(), st = stride.list()[i].as<int64_t>();
          if (s < 0 || st < 0) return false;
          if (s == 0) return false;  // an empty view: nothing to gather
          last += (s - 1) * st;
          count *= s;
        }
        return last >= 0 && last < in.static_numel().value_or(0) && count <= kMaxConstantPositions;
      }, "a contiguous static input, every position inside it"});
}

}  // namespace kiln::conversion::converters
