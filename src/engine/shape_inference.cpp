// Per-kind input checks and output dtype/shape inference. Every refusal names the layer and its
// kind: "layer 'fc' (MatMul): input 1 has dtype i64, expected f32".
#include <algorithm>
#include <set>

#include "engine/index_expr.h"
#include "engine/network_internal.h"

namespace kiln::engine::detail {

DimExpr numel(const Shape& s) {
  DimExpr n(1);
  for (const DimExpr& d : s) n = n * d;
  return n;
}

std::optional<Shape> broadcast(const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    // right-aligned: missing leading dims act as 1
    std::optional<DimExpr> x, y;
    if (i + a.size() >= r) x = a[i + a.size() - r];
    if (i + b.size() >= r) y = b[i + b.size() - r];
    if (!x) { out[i] = *y; continue; }
    if (!y) { out[i] = *x; continue; }
    auto cx = x->constant(), cy = y->constant();
    if (x->same_as(*y) || (cy && *cy == 1)) out[i] = *x;
    else if (cx && *cx == 1) out[i] = *y;
    else if (cx && cy) return std::nullopt;
    else out[i] = (cy && !cx) ? *y : *x;  // prefer a constant, else the first; the runtime checks
  }
  return out;
}

namespace {

struct Checker {
  const std::string& name;
  const char* kind;
  const std::vector<Tensor*>& in;

  // The residual input (the last) must have the output's dtype and shape exactly.
  void residual(const DataType& dt, const Shape& out) const {
    const Tensor* r = in.back();
    if (r->dtype() != dt) fail(std::string("residual has dtype ") + to_string(r->dtype()) + ", expected " + to_string(dt));
    if (r->rank() != out.size()) fail("residual shape " + to_string(r->shape()) + " is not the output's " + to_string(out));
    for (size_t i = 0; i < out.size(); ++i) same_dim(r->shape()[i], out[i], "residual shape " + to_string(r->shape()) + " is not the output's " + to_string(out));
  }

  [[noreturn]] void fail(const std::string& msg) const {
    throw NetworkError("layer '" + name + "' (" + kind + "): " + msg);
  }
  void count(size_t lo, size_t hi) const {
    if (in.size() < lo || in.size() > hi) {
      std::string want = lo == hi ? std::to_string(lo) : std::to_string(lo) + " to " + std::to_string(hi);
      fail("expects " + want + " inputs, got " + std::to_string(in.size()));
    }
  }
  void dtype(size_t i, DataType want) const {
    if (in[i]->dtype() != want)
      fail("input " + std::to_string(i) + " has dtype " + to_string(in[i]->dtype()) + ", expected " + to_string(want));
  }
  void floating(size_t i) const {
    if (!is_floating(in[i]->dtype()))
      fail("input " + std::to_string(i) + " has dtype " + to_string(in[i]->dtype()) + ", expected a float type");
  }
  void integer_index(size_t i) const {
    DataType t = in[i]->dtype();
    if (t != DataType::kInt64 && t != DataType::kInt32)
      fail("input " + std::to_string(i) + " (indices) has dtype " + to_string(t) + ", expected i64 or i32");
  }
  void numeric(size_t i) const {
    if (in[i]->dtype() == DataType::kBool)
      fail("input " + std::to_string(i) + " has dtype bool, expected a numeric type");
  }
  void rank_between(size_t i, size_t lo, size_t hi) const {
    size_t r = in[i]->rank();
    if (r < lo || r > hi) {
      std::string want = lo == hi ? std::to_string(lo) : std::to_string(lo) + " to " + std::to_string(hi);
      fail("input " + std::to_string(i) + " has rank " + std::to_string(r) + " (shape " + to_string(in[i]->shape()) +
           "), expected rank " + want);
    }
  }
  int64_t axis(int64_t a, size_t rank, const char* what = "axis") const {
    int64_t r = static_cast<int64_t>(rank);
    if (a < -r || a >= std::max<int64_t>(r, 1))
      fail(std::string(what) + " " + std::to_string(a) + " is out of range for rank " + std::to_string(rank));
    return a < 0 ? a + r : a;
  }
  // Unifies two dims that must be equal: constant mismatch is an error; symbolic ones are left to
  // the runtime's checks.
  DimExpr same_dim(const DimExpr& a, const DimExpr& b, const std::string& what) const {
    auto ca = a.constant(), cb = b.constant();
    if (ca && cb && *ca != *cb) fail(what + ": " + a.str() + " vs " + b.str());
    return ca ? a : b;
  }
  Shape bcast(const Shape& a, const Shape& b, const std::string& what) const {
    auto s = broadcast(a, b);
    if (!s) fail(what + " shapes " + to_string(a) + " and " + to_string(b) + " do not broadcast");
    return *s;
  }
  void same_dtype(size_t i, size_t j) const {
    if (in[i]->dtype() != in[j]->dtype())
      fail("input " + std::to_string(j) + " has dtype " + to_string(in[j]->dtype()) + ", expected " +
           to_string(in[i]->dtype()));
  }
};

using Out = std::vector<InferredOutput>;

bool is_comparison(BinaryOp op) {
  return op >= BinaryOp::kEqual && op <= BinaryOp::kGreaterEqual;
}
bool is_logical(BinaryOp op) { return op == BinaryOp::kAnd || op == BinaryOp::kOr || op == BinaryOp::kXor; }
bool is_bitwise(BinaryOp op) { return op >= BinaryOp::kBitAnd; }

void fill_default(std::vector<int64_t>& v, size_t n, int64_t value, const Checker& c, const char* what) {
  if (v.empty()) v.assign(n, value);
  else if (v.size() == 1 && n > 1) v.assign(n, v[0]);
  if (v.size() != n)
    c.fail(std::string(what) + " has " + std::to_string(v.size()) + " values, expected " + std::to_string(n));
}

Out infer_conv(const Checker& c, ConvolutionParams& p) {
  c.count(2 + p.has_bias + p.has_residual, 2 + p.has_bias + p.has_residual);
  c.rank_between(0, 3, 5);
  c.floating(0);
  c.same_dtype(0, 1);
  // channels_last: x [N, H, W, C] and w [K, kh, kw, C/g] are read as their NCHW / KCRS equivalents.
  auto as_nchw = [&](const Shape& s) { return s.size() == 4 ? Shape{s[0], s[3], s[1], s[2]} : s; };
  if (p.channels_last && (c.in[0]->rank() != 4 || p.transposed)) c.fail("channels_last needs a 2-d, non-transposed convolution");
  const Shape x = p.channels_last ? as_nchw(c.in[0]->shape()) : c.in[0]->shape();
  const Shape w = p.channels_last ? as_nchw(c.in[1]->shape()) : c.in[1]->shape();
  if (w.size() != x.size())
    c.fail("weight has rank " + std::to_string(w.size()) + ", expected " + std::to_string(x.size()));
  size_t nd = x.size() - 2;
  fill_default(p.stride, nd, 1, c, "stride");
  fill_default(p.padding, nd, 0, c, "padding");
  fill_default(p.dilation, nd, 1, c, "dilation");
  fill_default(p.output_padding, nd, 0, c, "output_padding");
  if (p.groups < 1) c.fail("groups must be >= 1, got " + std::to_string(p.groups));
  for (size_t i = 0; i < nd; ++i) {
    if (p.stride[i] < 1 || p.dilation[i] < 1 || p.padding[i] < 0)
      c.fail("stride and dilation must be >= 1 and padding >= 0");
  }
  DimExpr cout;
  if (!p.transposed) {
    c.same_dim(x[1], w[1] * p.groups, "input channels (" + x[1].str() + ") must equal weight dim 1 times groups");
    cout = w[0];
    if (auto co = cout.constant(); co && *co % p.groups) c.fail("output channels " + std::to_string(*co) + " not divisible by groups");
  } else {
    c.same_dim(x[1], w[0], "input channels must equal the transposed weight's dim 0");
    cout = w[1] * p.groups;
  }
  if (p.has_bias) {
    c.same_dtype(0, 2);
    if (c.in[2]->rank() != 1) c.fail("bias must be 1-D [C_out], got " + to_string(c.in[2]->shape()));
    c.same_dim(c.in[2]->shape()[0], cout, "bias length must equal output channels");
  }
  Shape out{x[0], cout};
  for (size_t i = 0; i < nd; ++i) {
    const DimExpr& in = x[2 + i];
    const DimExpr& k = w[2 + i];
    DimExpr o;
    if (!p.transposed) {
      o = floor_div(in + 2 * p.padding[i] - (k - 1) * p.dilation[i] - 1, p.stride[i]) + 1;
    } else {
      o = (in - 1) * p.stride[i] - 2 * p.padding[i] + (k - 1) * p.dilation[i] + p.output_padding[i] + 1;
    }
    if (auto co = o.constant(); co && *co < 0) c.fail("output spatial size would be " + std::to_string(*co));
    out.push_back(o);
  }
  if (p.channels_last) out = Shape{out[0], out[2], out[3], out[1]};
  if (p.has_residual) c.residual(c.in[0]->dtype(), out);
  return {{c.in[0]->dtype(), out}};
}

Out infer_pool(const Checker& c, PoolingParams& p) {
  c.count(1, 1);
  c.rank_between(0, 3, 5);
  c.numeric(0);
  if (p.channels_last && c.in[0]->rank() != 4) c.fail("channels_last needs a 2-d pooling");
  const Shape& given = c.in[0]->shape();
  const Shape x = p.channels_last ? Shape{given[0], given[3], given[1], given[2]} : given;
  auto laid_out = [&](const Shape& s) { return p.channels_last ? Shape{s[0], s[2], s[3], s[1]} : s; };
  size_t nd = x.size() - 2;
  Shape out{x[0], x[1]};
  if (!p.adaptive_output.empty()) {
    fill_default(p.adaptive_output, nd, 1, c, "adaptive output size");
    for (int64_t o : p.adaptive_output) {
      if (o < 1) c.fail("adaptive output size must be >= 1");
      out.push_back(o);
    }
    return {{c.in[0]->dtype(), laid_out(out)}};
  }
  if (p.kernel.empty()) c.fail("kernel size is missing");
  fill_default(p.kernel, nd, 1, c, "kernel");
  if (p.stride.empty()) p.stride = p.kernel;
  fill_default(p.stride, nd, 1, c, "stride");
  fill_default(p.padding, nd, 0, c, "padding");
  fill_default(p.dilation, nd, 1, c, "dilation");
  for (size_t i = 0; i < nd; ++i) {
    if (p.kernel[i] < 1 || p.stride[i] < 1 || p.dilation[i] < 1 || p.padding[i] < 0)
      c.fail("kernel, stride and dilation must be >= 1 and padding >= 0");
    if (p.padding[i] * 2 > p.kernel[i])
      c.fail("padding " + std::to_string(p.padding[i]) + " exceeds half the kernel " + std::to_string(p.kernel[i]));
    const DimExpr& in = x[2 + i];
    DimExpr span = in + 2 * p.padding[i] - p.dilation[i] * (p.kernel[i] - 1) - 1;
    DimExpr o;
    if (p.ceil_mode) {
      // PyTorch: ceil, but the last window must start inside the input or left padding:
      // (o-1)*s < in + pad  <=>  o <= ceildiv(in + pad, s)
      o = min(ceil_div(span, p.stride[i]) + 1, ceil_div(in + p.padding[i], p.stride[i]));
    } else {
      o = floor_div(span, p.stride[i]) + 1;
    }
    if (auto co = o.constant(); co && *co < 1) c.fail("output spatial size would be " + std::to_string(*co));
    out.push_back(o);
  }
  return {{c.in[0]->dtype(), laid_out(out)}};
}

Out infer_reduce(const Checker& c, ReduceParams& p) {
  c.count(1, 1);
  const Shape& x = c.in[0]->shape();
  std::set<int64_t> axes;
  for (int64_t a : p.axes) axes.insert(c.axis(a, x.size()));
  if (p.axes.empty())
    for (size_t i = 0; i < x.size(); ++i) axes.insert(static_cast<int64_t>(i));
  p.axes.assign(axes.begin(), axes.end());
  DataType dt = c.in[0]->dtype();
  switch (p.op) {
    case ReduceOp::kArgMax:
    case ReduceOp::kArgMin:
      if (p.axes.size() != 1 && !x.empty()) c.fail("argmax/argmin take exactly one axis");
      c.numeric(0);
      dt = DataType::kInt64;
      break;
    case ReduceOp::kAny:
    case ReduceOp::kAll:
      dt = DataType::kBool;
      break;
    case ReduceOp::kMean:
    case ReduceOp::kVar:
    case ReduceOp::kNorm2:
      c.floating(0);
      break;
    default:
      c.numeric(0);
  }
  Shape out;
  for (size_t i = 0; i < x.size(); ++i) {
    if (axes.count(static_cast<int64_t>(i))) {
      if (p.keep_dims) out.push_back(1);
    } else {
      out.push_back(x[i]);
    }
  }
  return {{dt, out}};
}

Out infer_normalization(const Checker& c, NormalizationParams& p) {
  size_t extra = (p.kind == NormKind::kBatch ? 2 : 0);
  size_t n = 1 + extra + p.has_scale + p.has_bias;
  c.count(n, n);
  c.floating(0);
  for (size_t i = 1; i < n; ++i) c.same_dtype(0, i);
  const Shape& x = c.in[0]->shape();
  if (p.epsilon < 0) c.fail("epsilon must be >= 0");
  if (p.kind == NormKind::kLayer) {
    c.rank_between(0, 1, 64);
    p.first_axis = c.axis(p.first_axis, x.size(), "first_axis");
    Shape norm(x.begin() + p.first_axis, x.end());
    for (size_t i = 1; i < n; ++i) {
      const Shape& s = c.in[i]->shape();
      if (s.size() != norm.size())
        c.fail("input " + std::to_string(i) + " has shape " + to_string(s) + ", expected " + to_string(norm));
      for (size_t d = 0; d < s.size(); ++d) c.same_dim(s[d], norm[d], "input " + std::to_string(i) + " shape");
    }
  } else {
    c.rank_between(0, 2, 64);
    if (p.kind == NormKind::kGroup) {
      if (p.groups < 1) c.fail("groups must be >= 1");
      if (auto ch = x[1].constant(); ch && *ch % p.groups)
        c.fail("channels " + std::to_string(*ch) + " are not divisible by " + std::to_string(p.groups) + " groups");
    }
    p.first_axis = 1;
    for (size_t i = 1; i < n; ++i) {
      const Shape& s = c.in[i]->shape();
      if (s.size() != 1) c.fail("input " + std::to_string(i) + " must be 1-D [C], got " + to_string(s));
      c.same_dim(s[0], x[1], "input " + std::to_string(i) + " length must equal the channels");
    }
  }
  return {{c.in[0]->dtype(), x}};
}

void check_perm(const Checker& c, const std::vector<int64_t>& perm, size_t rank, const char* what) {
  if (perm.empty()) return;
  std::vector<bool> seen(rank, false);
  bool ok = perm.size() == rank;
  for (int64_t v : perm) {
    if (!ok || v < 0 || v >= static_cast<int64_t>(rank) || seen[v]) { ok = false; break; }
    seen[v] = true;
  }
  if (!ok) c.fail(std::string(what) + " is not a permutation of " + std::to_string(rank) + " axes");
}

Shape permute(const Shape& s, const std::vector<int64_t>& perm) {
  if (perm.empty()) return s;
  Shape r;
  for (int64_t v : perm) r.push_back(s[v]);
  return r;
}

Out infer_shuffle(const Checker& c, ShuffleParams& p) {
  c.count(1, 1);
  Shape s = c.in[0]->shape();
  check_perm(c, p.first_perm, s.size(), "first_perm");
  s = permute(s, p.first_perm);
  if (p.reshape) {
    Shape r = *p.reshape;
    int infer_at = -1;
    DimExpr known(1);
    for (size_t i = 0; i < r.size(); ++i) {
      auto v = r[i].constant();
      if (v && *v == -1) {
        if (infer_at >= 0) c.fail("reshape " + to_string(r) + " has more than one -1");
        infer_at = static_cast<int>(i);
      } else {
        if (v && *v < 0) c.fail("reshape " + to_string(r) + " has a negative dim");
        known = known * r[i];
      }
    }
    DimExpr total = numel(s);
    if (infer_at >= 0) {
      auto q = try_exact_div(total, known);
      if (!q) {
        auto ct = total.constant(), ck = known.constant();
        if (ct && ck) c.fail("cannot reshape " + to_string(s) + " to " + to_string(r) + ": " + std::to_string(*ct) +
                             " elements are not divisible by " + std::to_string(*ck));
        q = floor_div(total, known);  // symbolic and not provably exact: the runtime checks sizes
      }
      r[infer_at] = *q;
    } else if (auto ct = total.constant(), cr = numel(r).constant(); ct && cr && *ct != *cr) {
      c.fail("cannot reshape " + to_string(s) + " (" + std::to_string(*ct) + " elements) to " + to_string(r));
    }
    p.reshape = r;
    s = r;
  }
  check_perm(c, p.second_perm, s.size(), "second_perm");
  s = permute(s, p.second_perm);
  return {{c.in[0]->dtype(), s}};
}

Out infer_concat(const Checker& c, ConcatParams& p) {
  if (c.in.empty()) c.fail("expects at least one input");
  const Shape& s0 = c.in[0]->shape();
  if (s0.empty()) c.fail("cannot concatenate rank-0 tensors");
  p.axis = c.axis(p.axis, s0.size());
  Shape out = s0;
  for (size_t i = 1; i < c.in.size(); ++i) {
    c.same_dtype(0, i);
    const Shape& s = c.in[i]->shape();
    if (s.size() != s0.size())
      c.fail("input " + std::to_string(i) + " has rank " + std::to_string(s.size()) + ", expected " +
             std::to_string(s0.size()));
    for (size_t d = 0; d < s.size(); ++d) {
      if (static_cast<int64_t>(d) == p.axis) out[d] = out[d] + s[d];
      else out[d] = c.same_dim(out[d], s[d], "input " + std::to_string(i) + " dim " + std::to_string(d));
    }
  }
  return {{c.in[0]->dtype(), out}};
}

Out infer_slice(const Checker& c, SliceParams& p) {
  c.count(1, 1);
  const Shape& x = c.in[0]->shape();
  if (p.stride.empty()) p.stride.assign(x.size(), DimExpr(1));
  if (p.start.size() != x.size() || p.size.size() != x.size() || p.stride.size() != x.size())
    c.fail("start/size/stride need one entry per dimension (" + std::to_string(x.size()) + ")");
  for (size_t d = 0; d < x.size(); ++d) {
    auto st = p.start[d].constant(), sz = p.size[d].constant(), sd = p.stride[d].constant(), n = x[d].constant();
    if (sd && *sd == 0) c.fail("stride of dim " + std::to_string(d) + " is 0");
    if (sz && *sz < 0) c.fail("size of dim " + std::to_string(d) + " is negative");
    if (st && sz && sd && n && *sz > 0) {
      int64_t last = *st + (*sz - 1) * *sd;
      if (*st < 0 || *st >= *n || last < 0 || last >= *n)
        c.fail("dim " + std::to_string(d) + ": start " + std::to_string(*st) + ", size " + std::to_string(*sz) +
               ", stride " + std::to_string(*sd) + " reads outside [0, " + std::to_string(*n) + ")");
    }
  }
  return {{c.in[0]->dtype(), p.size}};
}

Out infer_gather(const Checker& c, GatherParams& p) {
  c.count(2, 2);
  c.integer_index(1);
  const Shape& d = c.in[0]->shape();
  const Shape& idx = c.in[1]->shape();
  if (d.empty()) c.fail("data must have rank >= 1");
  p.axis = c.axis(p.axis, d.size());
  if (p.mode == GatherMode::kAxis) {
    Shape out(d.begin(), d.begin() + p.axis);
    out.insert(out.end(), idx.begin(), idx.end());
    out.insert(out.end(), d.begin() + p.axis + 1, d.end());
    return {{c.in[0]->dtype(), out}};
  }
  if (idx.size() != d.size())
    c.fail("indices have rank " + std::to_string(idx.size()) + ", expected the data's rank " + std::to_string(d.size()));
  return {{c.in[0]->dtype(), idx}};
}

Out infer_scatter(const Checker& c, ScatterParams& p) {
  c.count(3, 3);
  c.integer_index(1);
  c.same_dtype(0, 2);
  const Shape& d = c.in[0]->shape();
  const Shape& idx = c.in[1]->shape();
  const Shape& upd = c.in[2]->shape();
  if (d.empty()) c.fail("data must have rank >= 1");
  p.axis = c.axis(p.axis, d.size());
  if (p.mode == GatherMode::kElements) {
    if (idx.size() != d.size() || upd.size() != d.size())
      c.fail("indices and updates must have the data's rank " + std::to_string(d.size()));
  } else {
    if (idx.size() != 1) c.fail("indices must be 1-D in axis mode, got " + to_string(idx));
    if (upd.size() != d.size()) c.fail("updates must have the data's rank " + std::to_string(d.size()));
    for (size_t i = 0; i < d.size(); ++i) {
      const DimExpr& want = static_cast<int64_t>(i) == p.axis ? idx[0] : d[i];
      c.same_dim(upd[i], want, "updates dim " + std::to_string(i));
    }
  }
  return {{c.in[0]->dtype(), d}};
}

Out infer_attention(const Checker& c, AttentionParams& p) {
  size_t n = 3 + p.has_mask;
  c.count(n, n);
  c.floating(0);
  c.same_dtype(0, 1);
  c.same_dtype(0, 2);
  for (size_t i = 0; i < 3; ++i) c.rank_between(i, 2, 8);
  if (!p.views.empty() && p.views.size() != 3) c.fail("input views: expected one per q, k, v");
  Shape viewed[3];
  for (size_t i = 0; i < 3; ++i) {
    viewed[i] = c.in[i]->shape();
    if (p.views.empty() || !p.views[i]) continue;
    const StridedView& w = *p.views[i];
    if (w.dims.size() != w.strides.size() || w.dims.size() < 2 || w.strides.back() != 1)
      c.fail("input view " + std::to_string(i) + ": needs matching dims and strides, rank >= 2, last stride 1");
    if (!is_static(c.in[i]->shape())) c.fail("input view " + std::to_string(i) + " over a dynamic shape");
    int64_t lowest = w.offset, highest = w.offset, numel = 1;  // strides may be negative (flips)
    for (size_t d = 0; d < w.dims.size(); ++d) {
      if (w.dims[d] <= 0) continue;
      (w.strides[d] < 0 ? lowest : highest) += (w.dims[d] - 1) * w.strides[d];
    }
    for (int64_t d : evaluate(c.in[i]->shape(), {})) numel *= d;
    if (lowest < 0 || highest >= numel) c.fail("input view " + std::to_string(i) + " reaches outside its tensor");
    viewed[i].assign(w.dims.begin(), w.dims.end());
  }
  const Shape &q = viewed[0], &k = viewed[1], &v = viewed[2];
  size_t r = q.size();
  if (k.size() != r || v.size() != r) c.fail("q, k and v must have the same rank");
  c.same_dim(q[r - 1], k[r - 1], "q and k embedding dims");
  c.same_dim(k[r - 2], v[r - 2], "k and v sequence lengths");
  Shape batch_q(q.begin(), q.end() - 2), batch_k(k.begin(), k.end() - 2), batch_v(v.begin(), v.end() - 2);
  Shape batch = c.bcast(c.bcast(batch_q, batch_k, "q/k batch"), batch_v, "q/v batch");
  Shape out = batch;
  out.push_back(q[r - 2]);
  out.push_back(v[r - 1]);
  if (p.has_mask) {
    DataType mt = c.in[3]->dtype();
    if (mt != DataType::kBool && mt != c.in[0]->dtype())
      c.fail("mask has dtype " + std::string(to_string(mt)) + ", expected bool or " + to_string(c.in[0]->dtype()));
    Shape scores = batch;
    scores.push_back(q[r - 2]);
    scores.push_back(k[r - 2]);
    auto b = broadcast(c.in[3]->shape(), scores);
    if (!b || b->size() != scores.size())
      c.fail("mask shape " + to_string(c.in[3]->shape()) + " does not broadcast to the scores " + to_string(scores));
  }
  if (p.scale && !(*p.scale > 0 || *p.scale < 0)) c.fail("scale must be a non-zero number");
  if (!p.output_perm.empty()) {
    std::vector<int64_t> seen(out.size(), 0);
    bool ok = p.output_perm.size() == out.size() && p.output_perm.back() == int64_t(out.size()) - 1;
    for (int64_t d : p.output_perm) ok = ok && d >= 0 && d < int64_t(out.size()) && !seen[d]++;
    if (!ok) c.fail("output_perm must permute the output's dims and keep the last one last");
    Shape permuted;
    for (int64_t d : p.output_perm) permuted.push_back(out[d]);
    out = permuted;
  }
  return {{c.in[0]->dtype(), out}};
}

Out infer_fused(const Checker& c, FusedPointwiseParams& p) {
  if (c.in.empty()) c.fail("needs at least one input");
  std::vector<DataType> regs;
  Shape shape;
  if (p.gather) {  // registers read through index arithmetic (fold_movement): a static output shape
    std::vector<DataType> in_types;
    for (Tensor* t : c.in) in_types.push_back(t->dtype());
    if (std::string why = index_expr::check(*p.gather, in_types); !why.empty()) c.fail(why);
    for (size_t r = 0; r < p.gather->registers.size(); ++r)
      regs.push_back(index_expr::register_type(*p.gather, r, in_types));
    for (int64_t d : p.gather->out_dims) shape.push_back(DimExpr(d));
  } else {
    shape = c.in[0]->shape();
    for (size_t i = 1; i < c.in.size(); ++i) shape = c.bcast(shape, c.in[i]->shape(), "input");
    for (Tensor* t : c.in) regs.push_back(t->dtype());
  }
  std::vector<char> row;  // row programs: which registers hold one value per row
  if (p.row_length < 0) c.fail("row length must not be negative");
  if (p.row_length > 0) {
    if (p.gather) c.fail("a row program cannot have gathered loads");
    const auto last = shape.empty() ? std::nullopt : shape.back().constant();
    if (!last || *last != p.row_length)
      c.fail("row program over rows of " + std::to_string(p.row_length) + " but its inputs broadcast to " +
             to_string(shape));
    std::vector<char> in_row;
    for (Tensor* t : c.in) in_row.push_back(detail::is_row_shaped(t->shape()));
    row = detail::row_registers(p, in_row);
  }
  for (size_t i = 0; i < p.program.size(); ++i) {
    const PointwiseInstr& ins = p.program[i];
    size_t want = 0;
    switch (ins.kind) {
      case PointwiseInstr::Kind::kBinary: want = 2; break;
      case PointwiseInstr::Kind::kSelect: want = 3; break;
      case PointwiseInstr::Kind::kConstant: want = 0; break;
      default: want = 1;
    }
    if (ins.operands.size() != want) c.fail("instruction " + std::to_string(i) + " has the wrong number of operands");
    for (int32_t r : ins.operands)
      if (r < 0 || static_cast<size_t>(r) >= regs.size())
        c.fail("instruction " + std::to_string(i) + " reads register " + std::to_string(r) + " before it is written");
    if (ins.kind == PointwiseInstr::Kind::kRowReduce) {
      if (p.row_length == 0) c.fail("instruction " + std::to_string(i) + " reduces a row outside a row program");
      if (ins.reduce != ReduceOp::kSum && ins.reduce != ReduceOp::kMax && ins.reduce != ReduceOp::kMin)
        c.fail("instruction " + std::to_string(i) + ": a row reduction is a sum, max or min");
      if (!is_floating(regs[size_t(ins.operands[0])]) || !is_floating(ins.dtype))
        c.fail("instruction " + std::to_string(i) + ": a row reduction takes and gives a float register");
    }
    regs.push_back(ins.dtype);
  }
  if (p.outputs.empty()) c.fail("has no outputs");
  Out out;
  for (int32_t r : p.outputs) {
    if (r < 0 || static_cast<size_t>(r) >= regs.size()) c.fail("output register " + std::to_string(r) + " does not exist");
    Shape s = shape;
    if (!row.empty() && row[size_t(r)]) s.back() = DimExpr(1);
    out.push_back({regs[r], s});
  }
  return out;
}

Out infer_plugin(const Checker& c, PluginParams& p) {
  const PluginKernel* k = find_plugin(p.plugin);
  if (!k) c.fail("no plugin named '" + p.plugin + "' is registered");
  std::vector<const Tensor*> ins(c.in.begin(), c.in.end());
  std::vector<std::pair<DataType, Shape>> r;
  try {
    r = k->infer(ins, p.attributes);
  } catch (const NetworkError& e) {
    c.fail(e.what());
  } catch (const std::exception& e) {
    c.fail(std::string("plugin '") + p.plugin + "' refused its inputs: " + e.what());
  }
  if (r.empty()) c.fail("plugin '" + p.plugin + "' declared no outputs");
  Out out;
  for (auto& [dt, s] : r) out.push_back({dt, s});
  return out;
}

}  // namespace

std::vector<InferredOutput> infer_outputs(const std::string& layer_name, const std::vector<Tensor*>& inputs,
                                          LayerParams& params,
                                          const std::function<std::string(const std::string&)>& fresh_symbol) {
  const Checker c{layer_name, layer_kind_name(params), inputs};
  auto one = [&](DataType dt, Shape s) { return Out{{dt, std::move(s)}}; };
  return std::visit(
      [&](auto& p) -> Out {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConstantParams>) {
          c.count(0, 0);
          for (int64_t d : p.weights.dims)
            if (d < 0) c.fail("weights have a negative dim");
          if (p.weights.numel() > 0 && !p.weights.data) c.fail("weights have no data");
          Shape s(p.weights.dims.begin(), p.weights.dims.end());
          return one(p.weights.dtype, s);
        } else if constexpr (std::is_same_v<P, ElementwiseParams>) {
          c.count(2, 2);
          c.same_dtype(0, 1);
          DataType dt = inputs[0]->dtype();
          if (is_logical(p.op) && dt != DataType::kBool)
            c.fail(std::string("input 0 has dtype ") + to_string(dt) + ", expected bool for logical " + to_string(p.op));
          if (is_bitwise(p.op) && is_floating(dt))
            c.fail(std::string("input 0 has dtype ") + to_string(dt) + ", expected an integer or bool type");
          if (!is_logical(p.op) && !is_bitwise(p.op) && !is_comparison(p.op) && dt == DataType::kBool &&
              p.op != BinaryOp::kMin && p.op != BinaryOp::kMax)
            c.fail(std::string("input 0 has dtype bool, expected a numeric type for ") + to_string(p.op));
          Shape s = c.bcast(inputs[0]->shape(), inputs[1]->shape(), "input");
          return one(is_comparison(p.op) || is_logical(p.op) ? DataType::kBool : dt, s);
        } else if constexpr (std::is_same_v<P, UnaryParams>) {
          c.count(1, 1);
          DataType dt = inputs[0]->dtype();
          switch (p.op) {
            case UnaryOp::kNot: c.dtype(0, DataType::kBool); break;
            case UnaryOp::kIsNan: case UnaryOp::kIsInf: return one(DataType::kBool, inputs[0]->shape());
            case UnaryOp::kBitNot:
              if (is_floating(dt)) c.fail(std::string("input 0 has dtype ") + to_string(dt) + ", expected an integer type");
              break;
            case UnaryOp::kAbs: case UnaryOp::kNeg: case UnaryOp::kSign: case UnaryOp::kFloor:
            case UnaryOp::kCeil: case UnaryOp::kRound: case UnaryOp::kTrunc:
              c.numeric(0);
              break;
            default: c.floating(0);
          }
          return one(dt, inputs[0]->shape());
        } else if constexpr (std::is_same_v<P, ActivationParams>) {
          c.count(1, 1);
          c.floating(0);
          return one(inputs[0]->dtype(), inputs[0]->shape());
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          c.count(2 + p.has_bias + p.has_residual, 2 + p.has_bias + p.has_residual);
          c.floating(0);
          c.same_dtype(0, 1);
          c.rank_between(0, 2, 16);
          c.rank_between(1, 2, 16);
          const Shape &a = inputs[0]->shape(), &b = inputs[1]->shape();
          size_t ra = a.size(), rb = b.size();
          DimExpr m = p.transpose_a ? a[ra - 1] : a[ra - 2];
          DimExpr ka = p.transpose_a ? a[ra - 2] : a[ra - 1];
          DimExpr kb = p.transpose_b ? b[rb - 1] : b[rb - 2];
          DimExpr n = p.transpose_b ? b[rb - 2] : b[rb - 1];
          c.same_dim(ka, kb, "inner dimensions differ (" + to_string(a) + " @ " + to_string(b) + ")");
          Shape out = c.bcast(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2), "batch");
          out.push_back(m);
          out.push_back(n);
          if (p.has_bias) {
            c.same_dtype(0, 2);
            auto bs = broadcast(inputs[2]->shape(), out);
            if (!bs || bs->size() != out.size())
              c.fail("bias shape " + to_string(inputs[2]->shape()) + " does not broadcast to " + to_string(out));
          }
          if (p.has_residual) c.residual(inputs[0]->dtype(), out);
          return one(inputs[0]->dtype(), out);
        } else if constexpr (std::is_same_v<P, ConvolutionParams>) {
          return infer_conv(c, p);
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          return infer_pool(c, p);
        } else if constexpr (std::is_same_v<P, ReduceParams>) {
          return infer_reduce(c, p);
        } else if constexpr (std::is_same_v<P, SoftmaxParams>) {
          c.count(1, 1);
          c.floating(0);
          p.axis = c.axis(p.axis, inputs[0]->rank());
          return one(inputs[0]->dtype(), inputs[0]->shape());
        } else if constexpr (std::is_same_v<P, NormalizationParams>) {
          return infer_normalization(c, p);
        } else if constexpr (std::is_same_v<P, ShuffleParams>) {
          return infer_shuffle(c, p);
        } else if constexpr (std::is_same_v<P, ConcatParams>) {
          return infer_concat(c, p);
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          return infer_slice(c, p);
        } else if constexpr (std::is_same_v<P, GatherParams>) {
          return infer_gather(c, p);
        } else if constexpr (std::is_same_v<P, ScatterParams>) {
          return infer_scatter(c, p);
        } else if constexpr (std::is_same_v<P, SelectParams>) {
          c.count(3, 3);
          c.dtype(0, DataType::kBool);
          c.same_dtype(1, 2);
          Shape s = c.bcast(c.bcast(inputs[0]->shape(), inputs[1]->shape(), "condition/then"), inputs[2]->shape(),
                            "else");
          return one(inputs[1]->dtype(), s);
        } else if constexpr (std::is_same_v<P, CastParams>) {
          c.count(1, 1);
          return one(p.to, inputs[0]->shape());
        } else if constexpr (std::is_same_v<P, ShapeParams>) {
          c.count(1, 1);
          return one(DataType::kInt64, Shape{DimExpr(static_cast<int64_t>(inputs[0]->rank()))});
        } else if constexpr (std::is_same_v<P, FillParams>) {
          c.count(0, 0);
          if (p.op == FillOp::kArange && p.dims.size() != 1) c.fail("arange needs 1-D dims, got " + to_string(p.dims));
          if (p.op == FillOp::kArange && p.step == 0) c.fail("arange step is 0");
          for (const DimExpr& d : p.dims)
            if (auto v = d.constant(); v && *v < 0) c.fail("negative dim in " + to_string(p.dims));
          return one(p.dtype, p.dims);
        } else if constexpr (std::is_same_v<P, PadParams>) {
          c.count(1, 1);
          const Shape& x = inputs[0]->shape();
          if (p.pre.empty()) p.pre.assign(x.size(), 0);
          if (p.post.empty()) p.post.assign(x.size(), 0);
          if (p.pre.size() != x.size() || p.post.size() != x.size())
            c.fail("pre/post need one entry per dimension (" + std::to_string(x.size()) + ")");
          Shape out;
          for (size_t d = 0; d < x.size(); ++d) {
            DimExpr o = x[d] + p.pre[d] + p.post[d];
            if (auto v = o.constant(); v && *v < 0) c.fail("dim " + std::to_string(d) + " would become negative");
            if (p.mode == PadMode::kReflect) {
              if (auto n = x[d].constant(); n && (p.pre[d] >= *n || p.post[d] >= *n))
                c.fail("reflect padding must be smaller than the dim (" + std::to_string(*n) + ")");
            }
            out.push_back(o);
          }
          return one(inputs[0]->dtype(), out);
        } else if constexpr (std::is_same_v<P, ResizeParams>) {
          c.count(1, 1);
          c.rank_between(0, 3, 5);
          if (p.mode == ResizeMode::kLinear) c.floating(0);
          const Shape& x = inputs[0]->shape();
          if (p.output_spatial.size() != x.size() - 2)
            c.fail("output size has " + std::to_string(p.output_spatial.size()) + " dims, expected " +
                   std::to_string(x.size() - 2));
          if (!p.scales.empty() && p.scales.size() != x.size() - 2) c.fail("scales need one entry per spatial dim");
          Shape out{x[0], x[1]};
          out.insert(out.end(), p.output_spatial.begin(), p.output_spatial.end());
          return one(inputs[0]->dtype(), out);
        } else if constexpr (std::is_same_v<P, CumSumParams>) {
          c.count(1, 1);
          c.numeric(0);
          p.axis = c.axis(p.axis, inputs[0]->rank());
          return one(inputs[0]->dtype(), inputs[0]->shape());
        } else if constexpr (std::is_same_v<P, TopKParams>) {
          c.count(1, 1);
          c.numeric(0);
          Shape s = inputs[0]->shape();
          p.axis = c.axis(p.axis, s.size());
          if (p.k < 0 && p.k != TopKParams::kWholeAxis) c.fail("k is negative");
          if (!s.empty() && p.k != TopKParams::kWholeAxis) {
            if (auto n = s[p.axis].constant(); n && p.k > *n)
              c.fail("k = " + std::to_string(p.k) + " exceeds the axis size " + std::to_string(*n));
            s[p.axis] = p.k;
          }
          return Out{{inputs[0]->dtype(), s}, {DataType::kInt64, s}};
        } else if constexpr (std::is_same_v<P, IdentityParams>) {
          c.count(1, 1);
          return one(inputs[0]->dtype(), inputs[0]->shape());
        } else if constexpr (std::is_same_v<P, NonZeroParams>) {
          c.count(1, 1);
          if (p.count_symbol.empty()) p.count_symbol = fresh_symbol("nz");
          return one(DataType::kInt64, Shape{DimExpr::symbol(p.count_symbol),
                                             static_cast<int64_t>(inputs[0]->rank())});
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          return infer_attention(c, p);
        } else if constexpr (std::is_same_v<P, PluginParams>) {
          return infer_plugin(c, p);
        } else if constexpr (std::is_same_v<P, FusedPointwiseParams>) {
          return infer_fused(c, p);
        } else {
          static_assert(detail::kNoCaseFor<P>, "infer_outputs: a layer kind without a case");
        }
      },
      params);
}

}  // namespace kiln::engine::detail
