// Views and reshapes, slicing, indexing, concatenation, creation, casts, no-ops, getitem and
// symbolic-int arithmetic.
#include <algorithm>
#include <optional>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace sh = impl::shuffle;
namespace sl = impl::slice;
namespace se = impl::select;

Value list_of(const std::vector<Tensor*>& ts) {
  Value::List l;
  for (Tensor* t : ts) l.push_back(t);
  return l;
}

// The i-th element sizes of a tuple-returning node (split): from its metadata, which torch.export
// computed (static along the split dim whenever the split sizes are static).
// The pieces split / split_with_sizes / chunk cut along `dim`, from the op's own arguments and the
// input's size there (static), as PyTorch computes them; nullopt when they depend on a symbol. (The
// node's tuple metadata cannot serve: a trace records it only for the pieces that are used.)
std::optional<std::vector<int64_t>> split_sizes(const ir::Node& n) {
  if (n.args.empty() || !n.args[0].is_node() || !n.args[0].node()->meta.is_tensor()) return std::nullopt;
  const auto& in = n.args[0].node()->meta.tensor;
  ir::Argument d = node_arg(n, "dim");
  if (!d.is<int64_t>() || in.rank() == 0) return std::nullopt;
  int64_t axis = d.as<int64_t>();
  if (axis < 0) axis += static_cast<int64_t>(in.rank());
  if (axis < 0 || axis >= static_cast<int64_t>(in.rank()) || !in.sizes[size_t(axis)].is_constant()) return std::nullopt;
  const int64_t D = in.sizes[size_t(axis)].value;
  std::vector<int64_t> out;
  if (n.is_op("aten.split_with_sizes.default") || n.is_op("aten.split.sizes")) {
    ir::Argument l = node_arg(n, n.is_op("aten.split.sizes") ? "split_size" : "split_sizes");
    if (!l.is_list()) return std::nullopt;
    int64_t total = 0;
    for (const auto& e : l.list()) {
      if (!e.is<int64_t>() || e.as<int64_t>() < 0) return std::nullopt;
      out.push_back(e.as<int64_t>());
      total += e.as<int64_t>();
    }
    if (total != D) return std::nullopt;
    return out;
  }
  int64_t piece = 0;
  if (n.is_op("aten.chunk.default")) {
    ir::Argument c = node_arg(n, "chunks");
    if (!c.is<int64_t>() || c.as<int64_t>() <= 0) return std::nullopt;
    piece = (D + c.as<int64_t>() - 1) / c.as<int64_t>();
  } else {
    ir::Argument sz = node_arg(n, "split_size");
    if (!sz.is<int64_t>() || sz.as<int64_t>() <= 0) return std::nullopt;
    piece = sz.as<int64_t>();
  }
  if (D == 0) return std::vector<int64_t>{0};  // one empty piece, as PyTorch gives
  for (int64_t at = 0; at < D; at += piece) out.push_back(std::min(piece, D - at));
  return out;
}

// Whether a size uses a data-dependent symbol (one no network input binds: a nonzero's count).
bool data_dependent(const ConversionContext& ctx, const DimExpr& d) { return !ctx.net.input_bound(d); }

// The trace's metadata of the converted node's first argument, where its sizes are the traced
// numbers (PyTorch 1.13) for each of `rank` dims; else null.
const ir::TensorMeta* traced_input(const ConversionContext& ctx, size_t rank) {
  if (!ctx.current_node || ctx.current_node->args.empty() || !ctx.current_node->args[0].is_node()) return nullptr;
  const ir::ValueMeta& m = ctx.current_node->args[0].node()->meta;
  if (!m.is_tensor() || m.tensor.rank() != rank) return nullptr;
  for (const ir::SymInt& s : m.tensor.sizes)
    if (!s.is_constant()) return nullptr;
  return &m.tensor;
}

// A reshape of a tensor with a data-dependent size (nonzero's count) to sizes the trace recorded as
// numbers: PyTorch 1.13's make_fx records x[mask].reshape(-1, d) as a reshape to the traced count.
// The target dim that holds the count is one whose fellow target dims divide the input's constant
// dims (so it can take the count times what is left). Where several can, the one aligned with the
// input's data-dependent dims (the same constant extents before and after it: reshape(-1, d),
// flatten) is taken, as -1 is written there in practice; where that does not single one out, the
// sizes stay as traced and the runtime refuses a call whose count differs (a ShapeError).
std::vector<DimExpr> with_data_dependent_size(const ConversionContext& ctx, const Tensor* x,
                                              std::vector<DimExpr> target) {
  const engine::Shape& in = x->shape();
  if (!std::any_of(in.begin(), in.end(), [&](const DimExpr& d) { return data_dependent(ctx, d); })) return target;
  const ir::TensorMeta* traced_meta = traced_input(ctx, in.size());
  if (!traced_meta) return target;
  // A -1 takes its traced value first: x[mask].view(x[mask].size(0), -1) records the count as a
  // number beside the -1, which shape inference would otherwise divide the count by.
  const std::vector<DimExpr> original = target;
  std::optional<size_t> minus;
  int64_t known = 1;
  for (size_t i = 0; i < target.size(); ++i) {
    const auto c = target[i].constant();
    if (!c || *c == 0 || *c < -1 || (*c == -1 && minus)) return original;  // symbolic, empty: shape inference's
    if (*c == -1) minus = i;
    else known *= *c;
  }
  int64_t traced = 1;  // the input's traced numel
  for (const ir::SymInt& d : traced_meta->sizes) traced *= d.value;
  if (minus) {
    if (traced % known != 0) return original;
    target[*minus] = DimExpr(traced / known);
  }
  // The input's constant extent, and before / after its first / last symbolic dim.
  int64_t constant = 1, before = 1, after = 1;
  size_t first = in.size(), last = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (auto c = in[i].constant()) {
      if (*c <= 0) return original;
      constant *= *c;
    } else {
      first = std::min(first, i);
      last = i;
    }
  }
  if (first == in.size()) return original;
  for (size_t i = 0; i < first; ++i) before *= *in[i].constant();
  for (size_t i = last + 1; i < in.size(); ++i) after *= *in[i].constant();
  int64_t target_numel = 1;
  for (const DimExpr& d : target) target_numel *= *d.constant();
  if (target_numel != traced) return original;  // not the traced reshape: leave it to the checks
  std::vector<size_t> fits, aligned;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t others = 1, left = 1;
    for (size_t j = 0; j < target.size(); ++j) {
      if (j != i) others *= *target[j].constant();
      if (j < i) left *= *target[j].constant();
    }
    if (constant % others != 0) continue;
    fits.push_back(i);
    if (left == before && others / left == after) aligned.push_back(i);
  }
  size_t at;
  if (fits.size() == 1) at = fits[0];
  else if (aligned.size() == 1) at = aligned[0];
  else return original;
  DimExpr size(constant / [&] {
    int64_t others = 1;
    for (size_t j = 0; j < target.size(); ++j)
      if (j != at) others *= *target[j].constant();
    return others;
  }());
  for (const DimExpr& d : in)
    if (!d.constant()) size = size * d;
  target[at] = size;
  return target;
}

// An expand of a tensor with a data-dependent size to sizes the trace recorded as numbers (1.13's
// F.normalize of x[mask] expands the norms to x[mask]'s traced shape): a target dim equal to the
// traced size of a data-dependent input dim keeps that dim (as -1 would); a real broadcast (from a
// traced 1) stays, and the runtime refuses a count it does not fit.
std::vector<DimExpr> expand_with_data_dependent_sizes(const ConversionContext& ctx, const Tensor* x,
                                                      std::vector<DimExpr> target) {
  const engine::Shape& in = x->shape();
  if (target.size() < in.size()) return target;
  const ir::TensorMeta* traced_meta = traced_input(ctx, in.size());
  if (!traced_meta) return target;
  const size_t lead = target.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) {
    const auto t = target[lead + i].constant();
    if (t && *t >= 0 && *t == traced_meta->sizes[i].value && !in[i].constant() && data_dependent(ctx, in[i]))
      target[lead + i] = in[i];
  }
  return target;
}

// `shape` with the k dims a boolean mask covers from `at` flattened into one (`covered` elements):
// self[mask] selects rows along that dim.
std::vector<DimExpr> mask_dims_flattened(const std::vector<DimExpr>& shape, size_t at, size_t k, DimExpr* covered) {
  std::vector<DimExpr> flat(shape.begin(), shape.begin() + std::ptrdiff_t(at));
  *covered = DimExpr(int64_t{1});
  for (size_t d = at; d < at + k; ++d) *covered = *covered * shape[d];
  flat.push_back(*covered);
  flat.insert(flat.end(), shape.begin() + std::ptrdiff_t(at + k), shape.end());
  return flat;
}

Fn identity() {
  return KILN_CONVERTER { return args.at(0); };
}

Fn sym_binary(DimExpr (*f)(const DimExpr&, const DimExpr&)) {
  return [f](ConversionContext&, const std::string&, const std::vector<Value>& args, const Kwargs&,
             const std::string&) -> Value { return f(args.at(0).to_dim(), args.at(1).to_dim()); };
}

}  // namespace

void register_tensor() {
  // ---- reshapes and views ----
  add({"aten.view.default", "aten.reshape.default", "aten._unsafe_view.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    return sh::reshape(ctx, target, kAten, name, x, with_data_dependent_size(ctx, x, args.at(1).to_dims()));
  });
  add({"aten.view_as.default", "aten.reshape_as.default"}, KILN_CONVERTER {
    return sh::reshape(ctx, target, kAten, name, args.at(0).tensor(), args.at(1).tensor()->shape());
  });
  add({"aten.permute.default"}, KILN_CONVERTER {
    return sh::permute(ctx, target, kAten, name, args.at(0).tensor(), args.at(1).to_ints());
  });
  add({"aten.transpose.int"}, KILN_CONVERTER {
    return sh::transpose(ctx, target, kAten, name, args.at(0).tensor(), args.at(1).to_int(), args.at(2).to_int());
  });
  add({"aten.movedim.int", "aten.movedim.intlist"}, KILN_CONVERTER {
    // The moved dims land at their destinations; the others keep their order in the places left.
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const size_t rank = x->rank();
    const std::vector<int64_t> source = a.ints("source"), destination = a.ints("destination");
    if (source.size() != destination.size())
      throw ConversionError("movedim: " + std::to_string(source.size()) + " source dims but " +
                            std::to_string(destination.size()) + " destinations");
    std::vector<int64_t> perm(rank, -1);
    std::vector<bool> moved(rank, false);
    for (size_t i = 0; i < source.size(); ++i) {
      const int64_t s = impl::normalize_axis(source[i], rank, "source"), d = impl::normalize_axis(destination[i], rank, "destination");
      if (moved[size_t(s)] || perm[size_t(d)] != -1) throw ConversionError("movedim: repeated dim in source or destination");
      perm[size_t(d)] = s;
      moved[size_t(s)] = true;
    }
    int64_t next = 0;
    for (int64_t& p : perm) {
      if (p != -1) continue;
      while (moved[size_t(next)]) ++next;
      p = next++;
    }
    return sh::permute(ctx, target, kAten, name, x, perm);
  });
  add({"aten.t.default"}, KILN_CONVERTER {
    return sh::transpose(ctx, target, kAten, name, args.at(0).tensor(), 0, 1);
  });
  add({"aten.expand.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    return sh::expand(ctx, target, kAten, name, x, expand_with_data_dependent_sizes(ctx, x, args.at(1).to_dims()));
  });
  add({"aten.expand_as.default"}, KILN_CONVERTER {
    return sh::expand(ctx, target, kAten, name, args.at(0).tensor(), args.at(1).tensor()->shape());
  });
  add({"aten.unsqueeze.default"}, KILN_CONVERTER {
    return sh::unsqueeze(ctx, target, kAten, name, args.at(0).tensor(), args.at(1).to_int());
  });
  add({"aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    return sh::squeeze(ctx, target, kAten, name, x, args.size() > 1 ? args[1].to_ints() : std::vector<int64_t>{});
  });
  add({"aten.flatten.using_ints"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return sh::flatten(ctx, target, kAten, name, a.tensor("self"), a.i("start_dim"), a.i("end_dim"));
  });
  add({"aten.unflatten.int"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const int64_t d = impl::normalize_axis(a.i("dim"), x->rank());
    std::vector<DimExpr> s = x->shape(), sizes = a.dims("sizes");
    s.erase(s.begin() + d);
    s.insert(s.begin() + d, sizes.begin(), sizes.end());
    return sh::reshape(ctx, target, kAten, name, x, s);
  });
  // Ops with no effect on values (lowering removes most; converters cover unlowered graphs).
  add({"aten.contiguous.default", "aten.clone.default", "aten.alias.default", "aten.detach.default", "aten.detach_.default",
       "aten.lift_fresh_copy.default", "aten.lift_fresh.default"}, identity());
  add({"aten.dropout.default", "aten.feature_dropout.default", "aten.alpha_dropout.default", "aten.dropout_.default",
       "aten.feature_dropout_.default"}, identity(),
      {[](const ir::Node& n, const CompilationSettings&) {
         ir::Argument t = node_arg(n, "train");
         return t.is<bool>() && !t.as<bool>();
       }, "train == False"});
  add({"aten._assert_tensor_metadata.default", "aten._assert_async.msg", "aten._assert_scalar.default",
       "aten.sym_constrain_range_for_size.default"}, KILN_CONVERTER { return Value(); });

  // ---- slicing ----
  add({"aten.slice.Tensor"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return sl::slice_op(ctx, target, kAten, name, a.tensor("self"), a.i("dim"), a["start"], a["end"], a.i("step"));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument s = node_arg(n, "step");
        return s.is<int64_t>() && s.as<int64_t>() > 0;
      }, "static positive step"});
  add({"aten.narrow.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const Value& start = a["start"];
    Value end = start.is_tensor() ? Value() : Value(start.to_dim() + a["length"].to_dim());
    return sl::slice_op(ctx, target, kAten, name, a.tensor("self"), a.i("dim"), start, end, 1);
  });
  add({"aten.select.int"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return se::select(ctx, target, kAten, name, a.tensor("self"), a.i("dim"), a["index"]);
  });
  add({"aten.split.Tensor", "aten.split.sizes", "aten.split_with_sizes.default", "aten.chunk.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    std::optional<std::vector<int64_t>> sizes = split_sizes(*ctx.current_node);
    if (!sizes) throw ConversionError("split sizes that are not static");
    Tensor* x = a.tensor("self");
    const int64_t dim = impl::normalize_axis(a.i("dim"), x->rank());
    const DimExpr n = x->shape()[size_t(dim)];
    if (n.constant()) return list_of(sl::split(ctx, target, kAten, name, x, *sizes, dim));
    // A data-dependent count the trace recorded as a number. PyTorch 1.13 records x[mask].chunk(k)
    // as split(split_size = ceil(traced count / k)); with as many pieces as traced for every
    // count, the pieces are chunks: ceil(n / pieces) each, the last ones shorter. Given sizes keep
    // theirs and the last piece takes the rest, as it must for any count PyTorch accepts.
    std::vector<Tensor*> out;
    const std::string& op = ctx.current_node->target;
    const bool even = op == "aten.chunk.default" || op == "aten.split.Tensor";  // not given sizes
    const DimExpr piece = even ? ceil_div(n, DimExpr(int64_t(sizes->size()))) : DimExpr(0);
    DimExpr start(int64_t{0});
    for (size_t i = 0; i < sizes->size(); ++i) {
      const DimExpr begin = even ? min(piece * DimExpr(int64_t(i)), n) : start;
      const DimExpr end = even ? min(piece * DimExpr(int64_t(i + 1)), n)
                          : i + 1 == sizes->size() ? n : start + DimExpr((*sizes)[i]);
      out.push_back(sl::slice_op(ctx, target, kAten, name + "/" + std::to_string(i), x, dim, Value(begin), Value(end), 1));
      start = end;
    }
    return list_of(out);
  }, {[](const ir::Node& n, const CompilationSettings&) { return split_sizes(n).has_value(); },
      "static size along the split dim"});
  add({"aten.unbind.int"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const int64_t d = impl::normalize_axis(a.i("dim"), x->rank());
    auto n = x->shape()[d].constant();
    if (!n) {
      // Shapes traced as numbers (PyTorch 1.13) that kiln knows to be data-dependent: the graph
      // reads as many pieces as the traced input gave, so it is a loop over the tensor unrolled.
      const size_t pieces = ctx.current_node ? ctx.current_node->meta.tuple.size() : 0;
      throw ConversionError("unbind along a size that depends on the data (" + x->shape()[d].str() +
                            "), where the trace read " + std::to_string(pieces) +
                            " pieces: a Python loop over such a tensor (for c in torch.unique(...)) was unrolled "
                            "for the traced input and would be wrong for others; compile the parts around it");
    }
    std::vector<Tensor*> out;
    for (int64_t i = 0; i < *n; ++i)
      out.push_back(se::select(ctx, target, kAten, name + "/" + std::to_string(i), x, d, i));
    return list_of(out);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument self = node_arg(n, "self"), dim = node_arg(n, "dim");
        if (!self.is_node() || !self.node()->meta.is_tensor() || !dim.is<int64_t>()) return false;
        const auto& m = self.node()->meta.tensor;
        int64_t d = dim.as<int64_t>();
        if (d < 0) d += static_cast<int64_t>(m.rank());
        return d >= 0 && d < static_cast<int64_t>(m.rank()) && m.sizes[d].is_constant();
      }, "static unbind dim"});
  add({"aten.cat.default", "aten.concat.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return impl::cat::cat(ctx, target, kAten, name, a.tensors("tensors"), a.i("dim"));
  });
  add({"aten.stack.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return impl::cat::stack(ctx, target, kAten, name, a.tensors("tensors"), a.i("dim"));
  });

  // ---- indexing ----
  // Advanced indexing with integer index tensors, one or several (broadcast together), with
  // Nones for whole dims: transformers' mask functions index attention_mask[batch_idx, kv_idx]
  // with [B,1,1,1] and [1,1,1,KV] index tensors. A boolean mask index is the next converter's.
  const Reg integer_indices = {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument self = node_arg(n, "self"), l = node_arg(n, "indices");
        if (!l.is_list() || !self.is_node() || !self.node()->meta.is_tensor()) return false;
        if (l.list().size() > self.node()->meta.tensor.rank()) return false;
        int tensors = 0;
        for (const auto& e : l.list()) {
          if (e.is_none()) continue;
          if (!e.is_node() || !e.node()->meta.is_tensor()) return false;
          const ir::ScalarType t = e.node()->meta.tensor.dtype;
          if (t != ir::ScalarType::Long && t != ir::ScalarType::Int) return false;
          ++tensors;
        }
        return tensors >= 1;
      }, "integer index tensors"};
  static const auto index_list = [](const Value& list) {  // (static: converters capture nothing)
    std::vector<Tensor*> indices;
    for (const Value& v : list.list()) indices.push_back(v.is_none() ? nullptr : v.tensor());
    return indices;
  };
  add({"aten.index.Tensor", "aten._unsafe_index.Tensor"}, KILN_CONVERTER {
    return se::index(ctx, target, kAten, name, args.at(0).tensor(), index_list(args.at(1)));
  }, integer_indices);
  // One boolean index covering k dims of self at its place (after leading Nones), as PyTorch requires.
  const Reg one_mask = {[](const ir::Node& n, const CompilationSettings&) {
      ir::Argument self = node_arg(n, "self"), l = node_arg(n, "indices");
      if (!l.is_list() || !self.is_node() || !self.node()->meta.is_tensor()) return false;
      const ir::TensorMeta& x = self.node()->meta.tensor;
      size_t at = 0, masks = 0, mask_rank = 0;
      for (size_t i = 0; i < l.list().size(); ++i) {
        const ir::Argument& e = l.list()[i];
        if (e.is_none()) continue;
        if (!e.is_node() || !e.node()->meta.is_tensor() || e.node()->meta.tensor.dtype != ir::ScalarType::Bool)
          return false;
        at = i, mask_rank = e.node()->meta.tensor.rank(), ++masks;
      }
      // PyTorch requires the mask's dims to be self's dims at that place (no broadcasting).
      if (masks != 1 || mask_rank == 0 || at + mask_rank > x.rank()) return false;
      const ir::TensorMeta& m = l.list()[at].node()->meta.tensor;
      for (size_t d = 0; d < mask_rank; ++d)
        if (m.sizes[d].is_constant() && x.sizes[at + d].is_constant() && m.sizes[d].value != x.sizes[at + d].value)
          return false;
      return true;
    }, "one boolean mask index", true, /*output_allocator=*/true};
  // self[mask] (detectors' boxes[keep], scores[scores > t]): one boolean index covering k dims of
  // self, after leading Nones (self[:, mask]). Those k dims collapse into one of the data-dependent
  // count of trues: the flat mask's nonzero positions select rows of self with the k dims flattened
  // (the output allocator sizes it), so later ops see a symbolic count, never the traced one.
  add({"aten.index.Tensor"}, KILN_CONVERTER {
    Tensor* self = args.at(0).tensor();
    const std::vector<Tensor*> indices = index_list(args.at(1));
    size_t at = 0;
    while (!indices[at]) ++at;
    Tensor* mask = indices[at];
    DimExpr covered;
    const std::vector<DimExpr> flat = mask_dims_flattened(self->shape(), at, mask->rank(), &covered);
    Tensor* flat_self = sh::reshape(ctx, target, kAten, name + "/self_flat", self, flat);
    Tensor* flat_mask = sh::reshape(ctx, target, kAten, name + "/mask_flat", mask, {covered});
    return se::index_select(ctx, target, kAten, name, flat_self, int64_t(at),
                            se::true_positions(ctx, target, kAten, name + "/index", flat_mask));
  }, one_mask);
  // self[indices] = values (or += with accumulate): the flat positions the same indexing selects
  // from an iota shaped like self, then one scatter into the flattened self. Repeated positions
  // take the sum with accumulate, else one of the values (PyTorch leaves which one unspecified).
  static const auto put_at = [](ConversionContext& ctx, const std::string& target, const std::string& name,
                                Args& a, Tensor* self, Tensor* where, const DimExpr& n) -> Value {
    const std::vector<DimExpr> shape = self->shape();
    Tensor* values = a.tensor("values");
    if (values->dtype() != self->dtype()) values = impl::cast::to_dtype(ctx, target, kAten, name + "/values", values, self->dtype());
    values = sh::expand(ctx, target, kAten, name + "/values_expanded", values, where->shape());
    const int64_t last = int64_t(where->rank()) - 1;
    Tensor* flat_where = where->rank() == 1 ? where : sh::flatten(ctx, target, kAten, name + "/where_flat", where, 0, last);
    Tensor* flat_values = values->rank() == 1 ? values : sh::flatten(ctx, target, kAten, name + "/values_flat", values, 0, last);
    if (where->rank() == 0) {
      flat_where = sh::reshape(ctx, target, kAten, name + "/where_1", where, {DimExpr(int64_t{1})});
      flat_values = sh::reshape(ctx, target, kAten, name + "/values_1", values, {DimExpr(int64_t{1})});
    }
    Tensor* flat_self = sh::reshape(ctx, target, kAten, name + "/self_flat", self, {n});
    Tensor* out = se::scatter(ctx, target, kAten, name + "/scatter", flat_self, 0, flat_where, Value(flat_values),
                              a.b("accumulate") ? engine::ScatterReduce::kAdd : engine::ScatterReduce::kNone);
    return sh::reshape(ctx, target, kAten, name, out, shape);
  };
  static const auto iota_like = [](ConversionContext& ctx, const std::string& target, const std::string& name,
                                   const std::vector<DimExpr>& shape, DimExpr* n) {
    *n = DimExpr(int64_t{1});
    for (const DimExpr& d : shape) *n = *n * d;
    Tensor* iota = impl::creation::arange(ctx, target, kAten, name + "/iota", int64_t{0}, *n, int64_t{1},
                                          DataType::kInt64);
    return sh::reshape(ctx, target, kAten, name + "/positions", iota, shape);
  };
  add({"aten.index_put.default", "aten._unsafe_index_put.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    DimExpr n;
    Tensor* iota = iota_like(ctx, target, name, self->shape(), &n);
    return put_at(ctx, target, name, a, self, se::index(ctx, target, kAten, name + "/selected", iota,
                                                        index_list(a["indices"])), n);
  }, integer_indices);
  // self[mask] = values (masked assignment, x[x < 0] = 0; += with accumulate): the positions of the
  // mask's trues (a data-dependent count) select from the iota as self[mask] would, and the values
  // (a scalar, a row, or one per true) scatter there.
  add({"aten.index_put.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    const std::vector<Tensor*> indices = index_list(a["indices"]);
    size_t at = 0;
    while (!indices[at]) ++at;
    const std::vector<DimExpr> shape = self->shape();
    DimExpr covered;
    const std::vector<DimExpr> flat = mask_dims_flattened(shape, at, indices[at]->rank(), &covered);
    DimExpr n;
    Tensor* iota = sh::reshape(ctx, target, kAten, name + "/iota_flat", iota_like(ctx, target, name, shape, &n), flat);
    Tensor* mask = sh::reshape(ctx, target, kAten, name + "/mask_flat", indices[at], {covered});
    Tensor* where = se::index_select(ctx, target, kAten, name + "/selected", iota, int64_t(at),
                                     se::true_positions(ctx, target, kAten, name + "/trues", mask));
    return put_at(ctx, target, name, a, self, where, n);
  }, one_mask);
  // self with its masked positions taking source's elements in order (LLaVA-style models put
  // image features among token embeddings so): position i reads source[count of trues before i],
  // static shapes throughout. Too few source elements is an error at run time, as in PyTorch.
  add({"aten.masked_scatter.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    const std::vector<DimExpr> shape = self->shape();
    DimExpr n(int64_t{1});
    for (const DimExpr& d : shape) n = n * d;
    Tensor* mask = sh::expand(ctx, target, kAten, name + "/mask", a.tensor("mask"), shape);
    Tensor* taken = impl::cast::to_dtype(ctx, target, kAten, name + "/taken",
                                         sh::reshape(ctx, target, kAten, name + "/mask_flat", mask, {n}), DataType::kInt64);
    Tensor* before = impl::reduce::cumsum(ctx, target, kAten, name + "/count", taken, 0);
    Tensor* at = impl::elementwise::maximum(ctx, target, kAten, name + "/at",
                                            impl::elementwise::sub(ctx, target, kAten, name + "/at0", before, int64_t{1}),
                                            int64_t{0});
    Tensor* source = a.tensor("source");
    if (source->dtype() != self->dtype())
      source = impl::cast::to_dtype(ctx, target, kAten, name + "/source", source, self->dtype());
    DimExpr s(int64_t{1});
    for (const DimExpr& d : source->shape()) s = s * d;
    source = sh::reshape(ctx, target, kAten, name + "/source_flat", source, {s});
    Tensor* picked = se::index_select(ctx, target, kAten, name + "/picked", source, 0, at);
    picked = sh::reshape(ctx, target, kAten, name + "/picked_shaped", picked, shape);
    return se::where(ctx, target, kAten, name, mask, picked, self);
  });
  add({"aten.index_select.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return se::index_select(ctx, target, kAten, name, a.tensor("self"), a.i("dim"), a.tensor("index"));
  });
  add({"aten.gather.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return se::gather(ctx, target, kAten, name, a.tensor("self"), a.i("dim"), a.tensor("index"));
  });
  add({"aten.embedding.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return impl::embedding::embedding(ctx, target, kAten, name, a.tensor("indices"), a.tensor("weight"));
  });
  add({"aten.scatter.src", "aten.scatter.value"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const Value& src = a["src"].is_none() ? a["value"] : a["src"];
    return se::scatter(ctx, target, kAten, name, a.tensor("self"), a.i("dim"), a.tensor("index"), src,
                       engine::ScatterReduce::kNone);
  });
  // index_add: source's slices along dim added into self at index (repeats accumulate), as a
  // scatter-add whose index is broadcast across source's other dims.
  add({"aten.index_add.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    Tensor* source = a.tensor("source");
    const int64_t dim = impl::normalize_axis(a.i("dim"), self->rank());
    if (source->dtype() != self->dtype())
      source = impl::cast::to_dtype(ctx, target, kAten, name + "/source", source, self->dtype());
    if (!a["alpha"].is_none() && a.d("alpha") != 1.0)
      source = impl::elementwise::mul(ctx, target, kAten, name + "/alpha", source, a["alpha"]);
    std::vector<DimExpr> along(source->rank(), DimExpr(int64_t{1}));
    along[size_t(dim)] = source->shape()[size_t(dim)];
    Tensor* index = sh::expand(ctx, target, kAten, name + "/index",
                               sh::reshape(ctx, target, kAten, name + "/index_along", a.tensor("index"), along),
                               source->shape());
    return se::scatter(ctx, target, kAten, name, self, dim, index, Value(source), engine::ScatterReduce::kAdd);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument self = node_arg(n, "self"), source = node_arg(n, "source"), index = node_arg(n, "index");
        return self.is_node() && source.is_node() && index.is_node() && self.node()->meta.is_tensor() &&
               source.node()->meta.is_tensor() && index.node()->meta.is_tensor() &&
               index.node()->meta.tensor.rank() == 1 &&
               self.node()->meta.tensor.rank() == std::max<size_t>(source.node()->meta.tensor.rank(), 1);
      }, "1-d index, source of self's rank"});
  // scatter_reduce (graph networks' aggregations: PyG's sum / mean / max / min, GAT's softmax over
  // neighbours): sum, amax, amin and prod as a scatter with that reduction into self, or, with
  // include_self=False, into self with the scattered positions first reset (to 0 for sums, 1 for
  // products; for amax / amin to one of the scattered values, which the reduction then absorbs).
  // The mean divides the sum by a count scattered the same way. Positions nothing scatters to keep
  // self.
  add({"aten.scatter_reduce.two"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* self = a.tensor("self");
    Tensor* index = a.tensor("index");
    const int64_t dim = a.i("dim");
    const bool include_self = a.b("include_self");
    const std::string reduce = a["reduce"].str();
    using engine::ScatterReduce;
    const ScatterReduce op = reduce == "amax" ? ScatterReduce::kMax : reduce == "amin" ? ScatterReduce::kMin
                             : reduce == "prod" ? ScatterReduce::kMul : ScatterReduce::kAdd;
    auto reset_scattered = [&](Tensor* t, const Value& to, const std::string& what) {
      return include_self ? t : se::scatter(ctx, target, kAten, name + what, t, dim, index, to, ScatterReduce::kNone);
    };
    const Value start = op == ScatterReduce::kMul ? Value(1.0) : op == ScatterReduce::kAdd ? Value(0.0) : a["src"];
    const bool mean = reduce == "mean";
    Tensor* sum = se::scatter(ctx, target, kAten, mean ? name + "/sum" : name, reset_scattered(self, start, "/cleared"), dim,
                              index, a["src"], op);
    if (!mean) return sum;
    Tensor* ones = impl::creation::full(ctx, target, kAten, name + "/ones", self->shape(), 1.0, self->dtype());
    Tensor* count = se::scatter(ctx, target, kAten, name + "/count", reset_scattered(ones, 0.0, "/count_cleared"), dim, index,
                                1.0, ScatterReduce::kAdd);
    return impl::elementwise::div(ctx, target, kAten, name, sum, count);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument reduce = node_arg(n, "reduce"), self = node_arg(n, "self"), index = node_arg(n, "index"),
                           src = node_arg(n, "src");
        if (!reduce.is<std::string>() || !self.is_node() || !index.is_node() || !src.is_node()) return false;
        if (!self.node()->meta.is_tensor() || !index.node()->meta.is_tensor() || !src.node()->meta.is_tensor())
          return false;
        const std::string& r = reduce.as<std::string>();
        const ir::TensorMeta &im = index.node()->meta.tensor, &sm = src.node()->meta.tensor;
        if (im.rank() != sm.rank()) return false;  // index covering all of src (PyTorch allows less)
        for (size_t d = 0; d < im.rank(); ++d)
          if (!(im.sizes[d].is_constant() && sm.sizes[d].is_constant() && im.sizes[d].value == sm.sizes[d].value))
            return false;
        return r == "sum" || r == "amax" || r == "amin" || r == "prod" ||
               (r == "mean" && ir::is_floating(self.node()->meta.tensor.dtype));
      }, "sum, amax, amin, prod, or mean of floats; index shaped like src"});
  add({"aten.scatter_add.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return se::scatter(ctx, target, kAten, name, a.tensor("self"), a.i("dim"), a.tensor("index"), a["src"],
                       engine::ScatterReduce::kAdd);
  });

  // ---- creation: dtype and shape from the node's metadata (torch.export resolved the defaults) ----
  namespace cr = impl::creation;
  add({"aten.full.default", "aten.new_full.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return cr::full(ctx, target, kAten, name, node_shape(ctx), a.d("fill_value"), node_dtype(ctx));
  });
  add({"aten.zeros.default", "aten.new_zeros.default", "aten.zeros_like.default", "aten.empty.memory_format",
       "aten.new_empty.default", "aten.empty_like.default", "aten.empty_strided.default"}, KILN_CONVERTER {
    // Empty tensors are zero-filled: deterministic, and a converted program never reads them anyway.
    return cr::full(ctx, target, kAten, name, node_shape(ctx), 0.0, node_dtype(ctx));
  });
  add({"aten.ones.default", "aten.new_ones.default", "aten.ones_like.default"}, KILN_CONVERTER {
    return cr::full(ctx, target, kAten, name, node_shape(ctx), 1.0, node_dtype(ctx));
  });
  add({"aten.full_like.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return cr::full(ctx, target, kAten, name, a.tensor("self")->shape(), a.d("fill_value"), node_dtype(ctx));
  });
  add({"aten.scalar_tensor.default"}, KILN_CONVERTER {
    return ctx.constant(impl::scalar_weights(args.at(0).to_double(), node_dtype(ctx), 0), name);
  });
  add({"aten.arange.default", "aten.arange.start", "aten.arange.start_step"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const Value start = a.none("start") ? Value(int64_t{0}) : a["start"];
    const Value step = a.none("step") ? Value(int64_t{1}) : a["step"];
    return cr::arange(ctx, target, kAten, name, start, a["end"], step, node_dtype(ctx));
  });
  // eye(n[, m]): where column == row, for sizes that may be symbolic.
  add({"aten.eye.default", "aten.eye.m"}, KILN_CONVERTER {
    const std::vector<DimExpr> shape = node_shape(ctx);
    Tensor* on = impl::elementwise::eq(ctx, target, kAten, name + "/on", column_minus_row(ctx, target, name, shape[0], shape[1]),
                                       int64_t{0});
    return impl::cast::to_dtype(ctx, target, kAten, name, on, node_dtype(ctx));
  });
  // tril_indices / triu_indices(row, col, offset): the [2, count] coordinates of the kept
  // triangle in row-major order, a constant.
  add({"aten.tril_indices.default", "aten.triu_indices.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const int64_t rows = a.i("row"), cols = a.i("col"), offset = a.i("offset");
    const bool lower = target == "aten.tril_indices.default";
    std::vector<int64_t> r, c;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        if (lower ? j - i <= offset : j - i >= offset) r.push_back(i), c.push_back(j);
    r.insert(r.end(), c.begin(), c.end());
    Tensor* at = ctx.constant(engine::Weights::copy_of(DataType::kInt64, {2, int64_t(c.size())}, r.data()), name + "/at");
    return impl::cast::to_dtype(ctx, target, kAten, name, at, node_dtype(ctx));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        for (const char* arg : {"row", "col", "offset"})
          if (!node_arg(n, arg).is<int64_t>()) return false;
        return node_arg(n, "row").as<int64_t>() >= 0 && node_arg(n, "col").as<int64_t>() >= 0 && n.meta.is_tensor() &&
               n.meta.tensor.static_numel().value_or(0) > 0;
      }, "static sizes, a triangle that is not empty"});
  // linspace between two numbers: `steps` points, computed in float as PyTorch does (from the
  // start for the first half, back from the end for the rest), a constant of the node's dtype.
  add({"aten.linspace.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const int64_t steps = a.i("steps");
    const float start = float(a.d("start")), end = float(a.d("end"));
    const float step = steps > 1 ? (end - start) / float(steps - 1) : 0.0f;
    std::vector<float> v(static_cast<size_t>(steps));
    for (int64_t i = 0; i < steps; ++i)
      v[size_t(i)] = steps == 1 || i < steps / 2 ? start + step * float(i) : end - step * float(steps - 1 - i);
    Tensor* values = ctx.constant(engine::Weights::copy_of(DataType::kFloat32, {steps}, v.data()), name + "/values");
    return impl::cast::to_dtype(ctx, target, kAten, name, values, node_dtype(ctx));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument steps = node_arg(n, "steps");
        return number_arg(node_arg(n, "start")) && number_arg(node_arg(n, "end")) && steps.is<int64_t>() &&
               steps.as<int64_t>() >= 1 && n.meta.is_tensor() &&
               ir::is_floating(n.meta.tensor.dtype);
      }, "numbers for start and end, static steps >= 1, a floating dtype"});

  // ---- dtype conversions: the node's metadata says the result dtype ----
  add({"aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten.to.device", "aten.to.other",
       "aten.type_as.default", "aten._to_dim_order_copy.default"}, KILN_CONVERTER {
    return impl::cast::to_dtype(ctx, target, kAten, name, args.at(0).tensor(), node_dtype(ctx));
  });

  // ---- tuples and symbolic ints ----
  add({"getitem", "_operator.getitem"}, KILN_CONVERTER {
    const Value::List& l = args.at(0).list();
    int64_t i = args.at(1).to_int();
    if (i < 0) i += static_cast<int64_t>(l.size());
    if (i < 0 || i >= static_cast<int64_t>(l.size()) || l[i].is_none())
      throw ConversionError("getitem " + std::to_string(args[1].to_int()) + " of a " + std::to_string(l.size()) +
                            "-tuple whose element was not produced");
    return l[i];
  }, {[](const ir::Node& n, const CompilationSettings& s) {
        // A tuple element is convertible when the op that made the tuple is.
        if (n.args.empty() || !n.args[0].is_node()) return false;
        const ir::Node* p = n.args[0].node();
        if (p->kind != ir::NodeKind::CallFunction) return true;
        return ConverterRegistry::global().lookup(*p, s).verdict == Verdict::kConvertible;
      }, "producer convertible"});
  add({"aten.sym_size.int"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    return x->shape().at(impl::normalize_axis(args.at(1).to_int(), x->rank()));
  });
  add({"aten.sym_numel.default"}, KILN_CONVERTER { return impl::shape::numel(args.at(0).tensor()); });
  add({"_operator.add"}, sym_binary([](const DimExpr& a, const DimExpr& b) { return a + b; }));
  add({"_operator.sub"}, sym_binary([](const DimExpr& a, const DimExpr& b) { return a - b; }));
  add({"_operator.mul"}, sym_binary([](const DimExpr& a, const DimExpr& b) { return a * b; }));
  add({"_operator.floordiv"}, sym_binary(&engine::floor_div));
  add({"_operator.mod"}, sym_binary(&engine::mod));
  add({"torch.sym_max"}, sym_binary(&engine::max));
  add({"torch.sym_min"}, sym_binary(&engine::min));
  add({"_operator.neg"}, KILN_CONVERTER { return DimExpr(int64_t{0}) - args.at(0).to_dim(); });
  add({"torch.sym_int", "math.trunc", "math.floor"}, KILN_CONVERTER {
    // Only integral values are modelled: a SymInt passes through.
    return args.at(0).to_dim();
  }, {[](const ir::Node& n, const CompilationSettings&) {
        return !n.args.empty() && (n.args[0].is<int64_t>() ||
                                   (n.args[0].is_node() && n.args[0].node()->meta.kind == ir::ValueMeta::Kind::SymInt));
      }, "integral argument"});
}

}  // namespace kiln::conversion::converters
