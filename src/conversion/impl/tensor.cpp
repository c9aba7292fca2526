// Shape manipulation, slicing, indexing, concatenation, creation, padding, resizing, attention.
#include <algorithm>
#include <cmath>
#include <limits>

#include "conversion/impl/impl.h"

namespace kiln::conversion::impl {

// ---- shape ----------------------------------------------------------------------------------------

namespace shape {
std::vector<DimExpr> dims(const Tensor* t) { return t->shape(); }
DimExpr numel(const Tensor* t) {
  DimExpr n(int64_t{1});
  for (const auto& d : t->shape()) n = n * d;
  return n;
}
}  // namespace shape

// ---- shuffle --------------------------------------------------------------------------------------

namespace shuffle {

Tensor* reshape(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input,
                const std::vector<DimExpr>& shape) {
  // Unchanged shape: no layer.
  if (shape.size() == input->rank()) {
    bool same = true;
    for (size_t i = 0; i < shape.size() && same; ++i) same = shape[i].same_as(input->shape()[i]);
    if (same) return input;
  }
  engine::ShuffleParams p;
  p.reshape = shape;
  return ctx.net.add_shuffle(ctx.layer_name(name), input, p)->output(0);
}

Tensor* permute(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input,
                std::vector<int64_t> perm) {
  if (perm.size() != input->rank())
    throw ConversionError("permute of " + input->str() + " by " + std::to_string(perm.size()) + " dims");
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) {
    perm[i] = normalize_axis(perm[i], input->rank());
    identity = identity && perm[i] == static_cast<int64_t>(i);
  }
  if (identity) return input;
  engine::ShuffleParams p;
  p.first_perm = perm;
  return ctx.net.add_shuffle(ctx.layer_name(name), input, p)->output(0);
}

Tensor* transpose(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  Tensor* input, int64_t dim0, int64_t dim1) {
  if (input->rank() < 2) return input;
  std::vector<int64_t> perm(input->rank());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(i);
  std::swap(perm[normalize_axis(dim0, input->rank())], perm[normalize_axis(dim1, input->rank())]);
  return permute(ctx, target, source_ir, name, input, perm);
}

Tensor* unsqueeze(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  Tensor* input, int64_t dim) {
  const int64_t d = normalize_axis(dim, input->rank() + 1);
  std::vector<DimExpr> s = input->shape();
  s.insert(s.begin() + d, DimExpr(int64_t{1}));
  return reshape(ctx, target, source_ir, name, input, s);
}

Tensor* squeeze(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, std::vector<int64_t> dims) {
  const size_t rank = input->rank();
  std::vector<bool> drop(rank, false);
  auto is_one = [&](size_t i) { return input->shape()[i].constant() == std::optional<int64_t>(1); };
  if (dims.empty()) {
    for (size_t i = 0; i < rank; ++i) drop[i] = is_one(i);
  } else {
    for (int64_t d : dims) {
      if (rank == 0) continue;
      const auto a = static_cast<size_t>(normalize_axis(d, rank));
      drop[a] = is_one(a);
    }
  }
  std::vector<DimExpr> s;
  for (size_t i = 0; i < rank; ++i)
    if (!drop[i]) s.push_back(input->shape()[i]);
  return reshape(ctx, target, source_ir, name, input, s);
}

Tensor* flatten(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, int64_t start_dim, int64_t end_dim) {
  if (input->rank() == 0) return reshape(ctx, target, source_ir, name, input, {DimExpr(int64_t{1})});
  const int64_t s = normalize_axis(start_dim, input->rank()), e = normalize_axis(end_dim, input->rank());
  std::vector<DimExpr> out;
  DimExpr merged(int64_t{1});
  for (int64_t i = 0; i < static_cast<int64_t>(input->rank()); ++i) {
    if (i < s || i > e) out.push_back(input->shape()[i]);
    else {
      merged = merged * input->shape()[i];
      if (i == e) out.push_back(merged);
    }
  }
  return reshape(ctx, target, source_ir, name, input, out);
}

Tensor* expand(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, const std::vector<DimExpr>& sizes) {
  if (sizes.size() < input->rank())
    throw ConversionError("expand of " + input->str() + " to " + std::to_string(sizes.size()) + " dims");
  Tensor* x = broadcast_rank(ctx, input, sizes.size(), name);
  std::vector<DimExpr> out;
  bool same = true;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const DimExpr& cur = x->shape()[i];
    DimExpr want = sizes[i].constant() == std::optional<int64_t>(-1) ? cur : sizes[i];
    same = same && want.same_as(cur);
    out.push_back(want);
  }
  if (same) return x;
  // The engine broadcasts elementwise operands: adding a zero tensor of the target shape expands
  // x exactly (x + 0 == x; for bool, x | false).
  Tensor* zeros = creation::full(ctx, target, source_ir, name + "/zeros", out, 0.0, x->dtype());
  const auto op = x->dtype() == DataType::kBool ? engine::BinaryOp::kOr : engine::BinaryOp::kAdd;
  return ctx.net.add_elementwise(ctx.layer_name(name), x, zeros, op)->output(0);
}

}  // namespace shuffle

// ---- slice ----------------------------------------------------------------------------------------

namespace slice {

namespace {
constexpr int64_t kHuge = std::numeric_limits<int64_t>::max() / 2;

// PyTorch's clamping of a slice bound into [0, size].
DimExpr clamp_bound(const Value& v, const DimExpr& size, bool is_end) {
  if (v.is_none()) return is_end ? size : DimExpr(int64_t{0});
  if (v.is<DimExpr>() && !std::get<DimExpr>(v.v).is_constant()) return std::get<DimExpr>(v.v);
  int64_t b = v.to_int();
  auto n = size.constant();
  if (b < 0) {
    if (n) return DimExpr(std::max<int64_t>(0, *n + b));
    return max(size + DimExpr(b), DimExpr(int64_t{0}));
  }
  if (n) return DimExpr(std::min(b, *n));
  if (b >= kHuge) return size;
  return min(DimExpr(b), size);
}

Tensor* slice_dims(ConversionContext& ctx, const std::string& name, Tensor* input, int64_t axis, const DimExpr& start,
                   const DimExpr& size, int64_t step) {
  engine::SliceParams p;
  for (size_t i = 0; i < input->rank(); ++i) {
    const bool at = static_cast<int64_t>(i) == axis;
    p.start.push_back(at ? start : DimExpr(int64_t{0}));
    p.size.push_back(at ? size : input->shape()[i]);
    p.stride.push_back(at ? DimExpr(step) : DimExpr(int64_t{1}));
  }
  return ctx.net.add_slice(ctx.layer_name(name), input, p)->output(0);
}
}  // namespace

Tensor* slice_op(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input, int64_t dim,
                 const Value& start, const Value& end, int64_t step) {
  if (step <= 0) throw ConversionError("slice step must be positive, got " + std::to_string(step));
  const int64_t axis = normalize_axis(dim, input->rank());
  const DimExpr& n = input->shape()[axis];
  DimExpr s = clamp_bound(start, n, false), e = clamp_bound(end, n, true);
  DimExpr size = max(ceil_div(e - s, DimExpr(step)), DimExpr(int64_t{0}));
  if (s.constant() == std::optional<int64_t>(0) && step == 1 && size.same_as(n)) return input;  // full slice
  return slice_dims(ctx, name, input, axis, s, size, step);
}

std::vector<Tensor*> split(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input,
                           const std::vector<int64_t>& sizes, int64_t dim) {
  const int64_t axis = normalize_axis(dim, input->rank());
  std::vector<Tensor*> out;
  int64_t offset = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    out.push_back(slice_dims(ctx, name + "/" + std::to_string(i), input, axis, DimExpr(offset), DimExpr(sizes[i]), 1));
    offset += sizes[i];
  }
  return out;
}

std::vector<Tensor*> chunk(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                           Tensor* input, int64_t chunks, int64_t dim) {
  const int64_t axis = normalize_axis(dim, input->rank());
  auto n = input->shape()[axis].constant();
  if (!n) throw ConversionError("chunk of a symbolic dim in " + input->str());
  const int64_t each = (*n + chunks - 1) / chunks;
  std::vector<int64_t> sizes;
  for (int64_t off = 0; off < *n; off += each) sizes.push_back(std::min(each, *n - off));
  if (sizes.empty()) sizes.push_back(0);
  return split(ctx, target, source_ir, name, input, sizes, axis);
}

}  // namespace slice

// ---- select / index / gather / where / scatter ------------------------------------------------------

namespace select {

Tensor* select(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, int64_t dim, const Value& index) {
  const int64_t axis = normalize_axis(dim, input->rank());
  Value start = index;
  if (!index.is<DimExpr>() || std::get<DimExpr>(index.v).is_constant()) {
    int64_t i = index.to_int();
    if (i < 0) {
      auto n = input->shape()[axis].constant();
      if (n) start = *n + i;
      else start = input->shape()[axis] + DimExpr(i);
    }
  }
  engine::SliceParams p;
  for (size_t d = 0; d < input->rank(); ++d) {
    const bool at = static_cast<int64_t>(d) == axis;
    p.start.push_back(at ? start.to_dim() : DimExpr(int64_t{0}));
    p.size.push_back(at ? DimExpr(int64_t{1}) : input->shape()[d]);
    p.stride.push_back(DimExpr(int64_t{1}));
  }
  Tensor* s = ctx.net.add_slice(ctx.layer_name(name + "/slice"), input, p)->output(0);
  std::vector<DimExpr> shp = input->shape();
  shp.erase(shp.begin() + axis);
  return shuffle::reshape(ctx, target, source_ir, name, s, shp);
}

Tensor* index_select(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input,
                     int64_t dim, Tensor* index) {
  return ctx.net.add_gather(ctx.layer_name(name), input, index, engine::GatherMode::kAxis,
                            normalize_axis(dim, input->rank()))->output(0);
}

Tensor* true_positions(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                       Tensor* flat_mask) {
  Tensor* rows = ctx.net.add_nonzero(ctx.layer_name(name + "/where"), flat_mask)->output(0);  // [count, 1]
  return shuffle::reshape(ctx, target, source_ir, name, rows, {rows->shape()[0]});
}

Tensor* gather(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input, int64_t dim,
               Tensor* index) {
  return ctx.net.add_gather(ctx.layer_name(name), input, index, engine::GatherMode::kElements,
                            normalize_axis(dim, input->rank()))->output(0);
}

Tensor* index(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
              Tensor* input, const std::vector<Tensor*>& indices) {
  namespace ew = elementwise;
  const size_t rank = input->rank();
  if (indices.size() > rank)
    throw ConversionError("index of " + input->str() + " with " + std::to_string(indices.size()) + " indices");
  std::vector<int64_t> dims;  // the indexed dims, ascending
  for (size_t i = 0; i < indices.size(); ++i)
    if (indices[i]) dims.push_back(static_cast<int64_t>(i));
  if (dims.empty()) return input;  // x[:, :]
  if (dims.size() == 1) return index_select(ctx, target, source_ir, name, input, dims[0], indices[dims[0]]);

  // One linear index into the indexed dims (row-major over them): sum_k wrap(i_k) * stride_k.
  // A component out of its own range could still land inside the merged dim, so every component
  // is checked and a bad one turns the linear index into one the gather rejects, as PyTorch would.
  Tensor* linear = nullptr;
  Tensor* valid = nullptr;
  for (size_t k = 0; k < dims.size(); ++k) {
    const std::string nk = name + "/i" + std::to_string(k);
    const DimExpr& n = input->shape()[static_cast<size_t>(dims[k])];
    const Value len = n.is_constant() ? Value(*n.constant()) : Value(n);
    Tensor* j = cast::to_dtype(ctx, target, source_ir, nk + "/i64", indices[static_cast<size_t>(dims[k])],
                               DataType::kInt64);
    Tensor* neg = ew::lt(ctx, target, source_ir, nk + "/neg", j, int64_t{0});
    Tensor* in_range = ew::logical_and(ctx, target, source_ir, nk + "/in_range",
                                       ew::lt(ctx, target, source_ir, nk + "/below", j, len),
                                       ew::ge(ctx, target, source_ir, nk + "/above",
                                              ew::add(ctx, target, source_ir, nk + "/plus_len", j, len), int64_t{0}));
    Tensor* wrapped = where(ctx, target, source_ir, nk + "/wrap", neg,
                            ew::add(ctx, target, source_ir, nk + "/from_end", j, len), j);
    linear = linear ? ew::add(ctx, target, source_ir, nk + "/linear", ew::mul(ctx, target, source_ir, nk + "/stride",
                                                                              linear, len), wrapped)
                    : wrapped;
    valid = valid ? ew::logical_and(ctx, target, source_ir, nk + "/valid", valid, in_range) : in_range;
  }
  // Far below -(any dim size): the gather's own wrap of negatives cannot bring it into range.
  constexpr double kOutOfRange = -4611686018427387904.0;  // -2^62, exact in a double
  Tensor* bad = ctx.constant(scalar_weights(kOutOfRange, DataType::kInt64), name + "/out_of_range");
  linear = where(ctx, target, source_ir, name + "/checked", valid, linear, bad);

  const auto& s = input->shape();
  DimExpr merged(int64_t{1});
  for (int64_t d : dims) merged = merged * s[static_cast<size_t>(d)];
  const bool adjacent = dims.back() - dims.front() + 1 == static_cast<int64_t>(dims.size());
  if (adjacent) {
    // x[:, i, j] keeps the indexed dims' place: [*before, *broadcast(i, j), *after].
    std::vector<DimExpr> shape(s.begin(), s.begin() + dims.front());
    shape.push_back(merged);
    shape.insert(shape.end(), s.begin() + dims.back() + 1, s.end());
    Tensor* flat = shuffle::reshape(ctx, target, source_ir, name + "/merge", input, shape);
    return index_select(ctx, target, source_ir, name, flat, dims.front(), linear);
  }
  // Indexed dims apart (x[i, :, j]): PyTorch puts the broadcast dims first, then the rest in order.
  std::vector<int64_t> perm = dims;
  std::vector<DimExpr> shape{merged};
  for (size_t d = 0; d < rank; ++d)
    if (std::find(dims.begin(), dims.end(), static_cast<int64_t>(d)) == dims.end()) {
      perm.push_back(static_cast<int64_t>(d));
      shape.push_back(s[d]);
    }
  Tensor* moved = shuffle::permute(ctx, target, source_ir, name + "/front", input, perm);
  Tensor* flat = shuffle::reshape(ctx, target, source_ir, name + "/merge", moved, shape);
  return index_select(ctx, target, source_ir, name, flat, 0, linear);
}

Tensor* where(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
              Tensor* condition, const Value& x, const Value& y) {
  DataType dt;
  if (x.is_tensor() && y.is_tensor()) dt = promote(x.tensor()->dtype(), y.tensor()->dtype());
  else if (x.is_tensor()) dt = promote_with_scalar(x.tensor()->dtype(), y);
  else if (y.is_tensor()) dt = promote_with_scalar(y.tensor()->dtype(), x);
  else dt = (x.is<double>() || y.is<double>()) ? DataType::kFloat32 : DataType::kInt64;
  size_t rank = condition->rank();
  for (const Value* v : {&x, &y})
    if (v->is_tensor()) rank = std::max(rank, v->tensor()->rank());
  Tensor* c = broadcast_rank(ctx, cast::to_dtype(ctx, target, source_ir, name + "/cond", condition, DataType::kBool),
                             rank, name + "/cond");
  Tensor* a = get_tensor(ctx, x, dt, rank, name + "/x");
  Tensor* b = get_tensor(ctx, y, dt, rank, name + "/y");
  return ctx.net.add_select(ctx.layer_name(name), c, a, b)->output(0);
}

Tensor* scatter(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, int64_t dim, Tensor* index, const Value& src, engine::ScatterReduce reduce) {
  Tensor* updates;
  if (src.is_tensor()) {
    updates = cast::to_dtype(ctx, target, source_ir, name + "/cast_src", src.tensor(), input->dtype());
  } else {
    updates = creation::full(ctx, target, source_ir, name + "/src", index->shape(), src.to_double(), input->dtype());
  }
  engine::ScatterParams p;
  p.mode = engine::GatherMode::kElements;
  p.axis = normalize_axis(dim, input->rank());
  p.reduce = reduce;
  return ctx.net.add_scatter(ctx.layer_name(name), input, index, updates, p)->output(0);
}

}  // namespace select

// ---- cat ------------------------------------------------------------------------------------------

namespace cat {

Tensor* cat(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
            std::vector<Tensor*> inputs, int64_t dim) {
  // PyTorch skips legacy empty 1-D tensors ([0]) next to higher-rank ones.
  size_t rank = 0;
  for (Tensor* t : inputs) rank = std::max(rank, t->rank());
  std::vector<Tensor*> kept;
  for (Tensor* t : inputs)
    if (!(rank > 1 && t->rank() == 1 && t->shape()[0].constant() == std::optional<int64_t>(0))) kept.push_back(t);
  if (kept.empty()) throw ConversionError("cat of no tensors");
  DataType dt = kept[0]->dtype();
  for (Tensor* t : kept) dt = promote(dt, t->dtype());
  for (size_t i = 0; i < kept.size(); ++i)
    kept[i] = cast::to_dtype(ctx, target, source_ir, name + "/cast" + std::to_string(i), kept[i], dt);
  if (kept.size() == 1) return kept[0];
  return ctx.net.add_concat(ctx.layer_name(name), kept, normalize_axis(dim, rank))->output(0);
}

Tensor* stack(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
              std::vector<Tensor*> inputs, int64_t dim) {
  if (inputs.empty()) throw ConversionError("stack of no tensors");
  const int64_t d = normalize_axis(dim, inputs[0]->rank() + 1);
  for (size_t i = 0; i < inputs.size(); ++i)
    inputs[i] = shuffle::unsqueeze(ctx, target, source_ir, name + "/unsqueeze" + std::to_string(i), inputs[i], d);
  if (inputs.size() == 1) return inputs[0];
  return cat(ctx, target, source_ir, name, inputs, d);
}

}  // namespace cat

namespace embedding {
Tensor* embedding(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* indices,
                  Tensor* weight) {
  return ctx.net.add_gather(ctx.layer_name(name), weight, indices, engine::GatherMode::kAxis, 0)->output(0);
}
}  // namespace embedding

// ---- creation -------------------------------------------------------------------------------------

namespace creation {

Tensor* full(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, const std::vector<DimExpr>& size,
             double value, DataType dtype) {
  engine::FillParams p;
  p.op = engine::FillOp::kConstant;
  p.dims = size;
  p.dtype = dtype;
  p.value = value;
  return ctx.net.add_fill(ctx.layer_name(name), p)->output(0);
}

Tensor* arange(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, const Value& start,
               const Value& end, const Value& step, DataType dtype) {
  const bool symbolic = (start.is<DimExpr>() && !std::get<DimExpr>(start.v).is_constant()) ||
                        (end.is<DimExpr>() && !std::get<DimExpr>(end.v).is_constant());
  engine::FillParams p;
  p.op = engine::FillOp::kArange;
  p.dtype = dtype;
  if (symbolic) {
    // Symbolic bounds are integers; the step must be a positive int.
    const int64_t st = step.to_int();
    if (st <= 0) throw ConversionError("arange with symbolic bounds needs a positive step");
    DimExpr s = start.to_dim(), e = end.to_dim();
    p.dims = {max(ceil_div(e - s, DimExpr(st)), DimExpr(int64_t{0}))};
    if (!s.is_constant()) throw ConversionError("arange with a symbolic start");
    p.start = static_cast<double>(*s.constant());
    p.step = static_cast<double>(st);
  } else {
    const double s = start.to_double(), e = end.to_double(), st = step.to_double();
    if (st == 0) throw ConversionError("arange step must be nonzero");
    const double n = std::ceil((e - s) / st);
    p.dims = {DimExpr(static_cast<int64_t>(std::max(0.0, n)))};
    p.start = s;
    p.step = st;
  }
  return ctx.net.add_fill(ctx.layer_name(name), p)->output(0);
}

}  // namespace creation

// ---- pad / resize / attention -------------------------------------------------------------------------

namespace pad {
Tensor* pad(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input,
            const std::vector<int64_t>& pad, engine::PadMode mode, double value) {
  const size_t rank = input->rank();
  if (pad.size() % 2 || pad.size() / 2 > rank)
    throw ConversionError("pad of " + std::to_string(pad.size()) + " values for " + input->str());
  engine::PadParams p;
  p.pre.assign(rank, 0);
  p.post.assign(rank, 0);
  for (size_t i = 0; i < pad.size() / 2; ++i) {
    p.pre[rank - 1 - i] = pad[2 * i];
    p.post[rank - 1 - i] = pad[2 * i + 1];
  }
  p.mode = mode;
  p.value = value;
  return ctx.net.add_pad(ctx.layer_name(name), input, p)->output(0);
}
}  // namespace pad

namespace upsample {
Tensor* resize(ConversionContext& ctx, const Target&, SourceIR, const std::string& name, Tensor* input,
               const std::vector<DimExpr>& output_spatial, const std::vector<double>& scales, engine::ResizeMode mode,
               bool align_corners) {
  engine::ResizeParams p;
  p.mode = mode;
  p.output_spatial = output_spatial;
  p.scales = scales;
  p.align_corners = align_corners;
  return ctx.net.add_resize(ctx.layer_name(name), input, p)->output(0);
}
}  // namespace upsample

namespace attention {
Tensor* scaled_dot_product_attention(ConversionContext& ctx, const Target& target, SourceIR source_ir,
                                     const std::string& name, Tensor* q, Tensor* k, Tensor* v, Tensor* mask,
                                     bool is_causal, std::optional<double> scale) {
  engine::AttentionParams p;
  p.causal = is_causal;
  p.scale = scale;
  p.has_mask = mask != nullptr;
  if (mask && mask->dtype() != DataType::kBool)
    mask = cast::to_dtype(ctx, target, source_ir, name + "/cast_mask", mask, q->dtype());
  return ctx.net.add_attention(ctx.layer_name(name), q, k, v, mask, p)->output(0);
}
}  // namespace attention

}  // namespace kiln::conversion::impl
