// fold_movement: data movement (permutes, reshapes, slices, constant pads, concatenations, and
// what they compose: rolls, window partitions, shifted windows) becomes index arithmetic in the
// loads of the pointwise kernel that consumes it, instead of one copy per op.
//
// For each input register of a pointwise layer, the pass walks back from the tensor it reads
// through the movement layers that made it, turning the output coordinate into the coordinate of
// each layer's input (index_expr.h keeps the arithmetic simplified). A pad or concatenation splits
// the register into pieces, each valid where its bounds hold; a pad's outside is a constant piece.
// Where the walk stops (a layer that computes, a symbolic shape, too many pieces) the register
// reads that tensor. A chain of two or more copies that ends in a layer that cannot take gathered
// loads (a matmul, a network output) becomes one gathering copy. Layers left without users go.
//
// Static shapes only: the expressions are numbers baked into the generated kernel.
#include <algorithm>
#include <map>
#include <set>

#include "engine/builder.h"
#include "engine/index_expr.h"
#include "engine/network_internal.h"

namespace kiln::engine::passes {

using detail::static_dims;
using index_expr::Builder;
using index_expr::Linear;

namespace {

constexpr size_t kMaxPieces = 16;  // per register
constexpr size_t kMaxLeaves = 16;  // tensors one gathering layer reads (the CUDA kernel's limit)

bool all_static(const Layer* l) {
  for (const Tensor* t : l->inputs())
    if (!static_dims(t)) return false;
  for (const Tensor* t : l->outputs())
    if (!static_dims(t)) return false;
  return true;
}

// A run of a constant index: out[start + i] = first + step * i for i < length.
struct IndexRun {
  int64_t start, length, first, step;
};
constexpr size_t kMaxRuns = 8;

// The index of a Gather along one axis by a constant 1-D index (what PyTorch's decompositions make
// of roll, flip and index_select by constants) as arithmetic runs; nullopt when it is not that
// or has too many runs.
std::optional<std::vector<IndexRun>> constant_index_runs(const Layer* l) {
  auto* g = l->as<GatherParams>();
  if (!g || g->mode != GatherMode::kAxis || l->inputs().size() != 2) return std::nullopt;
  const Tensor* idx = l->inputs()[1];
  if (!detail::is_constant(idx) || idx->rank() != 1) return std::nullopt;
  const Weights& w = detail::weights_of(idx);
  if (w.dtype != DataType::kInt64 && w.dtype != DataType::kInt32) return std::nullopt;
  const int64_t n = (*static_dims(l->inputs()[0]))[static_cast<size_t>(g->axis)];
  std::vector<IndexRun> runs;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const auto v = static_cast<int64_t>(detail::element_as_double(w.data.get(), w.dtype, i));
    if (v < 0 || v >= n) return std::nullopt;
    if (!runs.empty()) {
      IndexRun& r = runs.back();
      if (r.length == 1) r.step = v - r.first;
      if (v == r.first + r.step * r.length) {
        ++r.length;
        continue;
      }
    }
    if (runs.size() == kMaxRuns) return std::nullopt;
    runs.push_back({i, 1, v, 0});
  }
  return runs;
}

// x + zeros (x | false for bool): how the converters expand a tensor to a larger shape.
const Tensor* expanded_operand(const Layer* l) {
  auto* e = l->as<ElementwiseParams>();
  if (!e || (e->op != BinaryOp::kAdd && e->op != BinaryOp::kOr)) return nullptr;
  auto zeros = [](const Tensor* t) {
    const Layer* f = t->producer();
    if (const auto* fill = f ? f->as<FillParams>() : nullptr) return fill->op == FillOp::kConstant && fill->value == 0;
    if (!detail::is_constant(t)) return false;  // folded small fills: all bytes zero
    const Weights& w = detail::weights_of(t);
    const auto* bytes = static_cast<const unsigned char*>(w.data.get());
    return std::all_of(bytes, bytes + w.nbytes(), [](unsigned char b) { return b == 0; });
  };
  for (int k : {0, 1}) {
    const Tensor* other = l->inputs()[1 - k];
    if (zeros(l->inputs()[k]) && other->dtype() == l->output()->dtype() &&
        static_dims(l->inputs()[k]) == static_dims(l->output()))
      return other;
  }
  return nullptr;
}

// A layer whose output element is one element of an input (or a pad constant) at an index the
// pass can compose.
bool foldable(const Layer* l) {
  if (!l || !all_static(l)) return false;
  if (l->as<ShuffleParams>() || l->as<ConcatParams>() || l->as<IdentityParams>()) return true;
  if (auto* s = l->as<SliceParams>()) return is_static(s->start) && is_static(s->stride);
  if (auto* p = l->as<PadParams>()) return p->mode == PadMode::kConstant;
  if (l->as<GatherParams>()) return constant_index_runs(l).has_value();
  return expanded_operand(l) != nullptr;
}
// The kernels a foldable layer costs when it runs alone: none for a reshape (a view), two for an
// expansion (the zeros are written, then read).
size_t copies(const Layer* l) {
  if (detail::is_pure_reshape(l) || l->as<IdentityParams>()) return 0;
  return expanded_operand(l) ? 2 : 1;
}

std::vector<int64_t> row_strides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size(), 1);
  for (size_t d = dims.size(); d-- > 1;) s[d - 1] = s[d] * dims[d];
  return s;
}

struct Bound {
  Linear expr;
  int64_t lo, hi;
};
// A register's value on part of the output: an element of `tensor` at `coords` (one per dim), or
// `value` when tensor is null.
struct Piece {
  Tensor* tensor = nullptr;
  std::vector<Linear> coords;
  std::vector<Bound> bounds;
  double value = 0;
};

class Walker {
 public:
  explicit Walker(Builder& b) : b_(b) {}
  size_t undone_copies = 0;

  // Adds lo <= x < hi to p; false when it can never hold.
  bool bound(Piece& p, const Linear& x, int64_t lo, int64_t hi) {
    const index_expr::Range r = b_.range(x);
    if (r.lo >= lo && r.hi < hi) return true;
    if (r.hi < lo || r.lo >= hi) return false;
    p.bounds.push_back({x, lo, hi});
    return true;
  }

  // p's value in terms of the inputs of the layer that made p.tensor; false if it cannot say.
  bool undo(const Layer* l, const Piece& p, std::vector<Piece>& out) {
    const std::vector<int64_t> in0 = *static_dims(l->inputs()[0]);
    if (l->as<IdentityParams>()) {
      out.push_back(p);
      out.back().tensor = l->inputs()[0];
      return true;
    }
    if (auto* s = l->as<ShuffleParams>()) {
      std::vector<Linear> e = p.coords;
      const std::vector<int64_t> dims = *static_dims(l->output());
      std::vector<int64_t> before_second = dims;
      if (!s->second_perm.empty()) {
        std::vector<Linear> y(e.size());
        for (size_t i = 0; i < s->second_perm.size(); ++i) {
          y.at(s->second_perm[i]) = e[i];
          before_second.at(s->second_perm[i]) = dims[i];
        }
        e = std::move(y);
      }
      std::vector<int64_t> permuted = in0;
      for (size_t i = 0; i < s->first_perm.size(); ++i) permuted[i] = in0.at(s->first_perm[i]);
      if (permuted != before_second) e = reshape_back(e, before_second, permuted);
      if (!s->first_perm.empty()) {
        std::vector<Linear> x(e.size());
        for (size_t i = 0; i < s->first_perm.size(); ++i) x.at(s->first_perm[i]) = e[i];
        e = std::move(x);
      }
      out.push_back({l->inputs()[0], std::move(e), p.bounds, 0});
      return true;
    }
    if (auto* s = l->as<SliceParams>()) {
      Piece q = p;
      q.tensor = l->inputs()[0];
      for (size_t d = 0; d < q.coords.size(); ++d) {
        const int64_t start = *s->start[d].constant(), stride = *s->stride[d].constant();
        q.coords[d] = Builder::add(Builder::constant(start), Builder::scale(p.coords[d], stride));
      }
      out.push_back(std::move(q));
      return true;
    }
    if (auto* pad = l->as<PadParams>()) {
      Piece q = p;
      q.tensor = l->inputs()[0];
      const size_t before = q.bounds.size();
      for (size_t d = 0; d < q.coords.size(); ++d) {
        if (pad->pre[d] == 0 && pad->post[d] == 0) continue;
        q.coords[d] = Builder::add(p.coords[d], Builder::constant(-pad->pre[d]));
        if (!bound(q, q.coords[d], 0, in0[d])) {  // all padding: a constant
          out.push_back({nullptr, {}, p.bounds, pad->value});
          return true;
        }
      }
      out.push_back(std::move(q));
      if (out.back().bounds.size() > before) out.push_back({nullptr, {}, p.bounds, pad->value});
      return true;
    }
    if (auto* g = l->as<GatherParams>()) {
      const std::vector<IndexRun> runs = *constant_index_runs(l);
      const auto axis = static_cast<size_t>(g->axis);
      for (size_t k = 0; k < runs.size(); ++k) {
        const IndexRun& r = runs[k];
        Piece q = p;
        q.tensor = l->inputs()[0];
        q.coords[axis] = Builder::add(Builder::constant(r.first - r.step * r.start), Builder::scale(p.coords[axis], r.step));
        if (k + 1 == runs.size()) {
          if (b_.range(p.coords[axis]).hi >= r.start) out.push_back(std::move(q));
        } else if (bound(q, p.coords[axis], r.start, r.start + r.length)) {
          out.push_back(std::move(q));
        }
      }
      return !out.empty();
    }
    if (const Tensor* x = expanded_operand(l)) {
      const std::vector<int64_t> dims = *static_dims(x);
      Piece q;
      q.tensor = const_cast<Tensor*>(x);
      q.bounds = p.bounds;
      const size_t offset = p.coords.size() - dims.size();
      const std::vector<int64_t> out_dims = *static_dims(l->output());
      for (size_t i = 0; i < dims.size(); ++i)
        q.coords.push_back(dims[i] == 1 && out_dims[offset + i] != 1 ? Linear{} : p.coords[offset + i]);
      out.push_back(std::move(q));
      return true;
    }
    if (auto* c = l->as<ConcatParams>()) {
      const auto axis = static_cast<size_t>(c->axis);
      std::vector<const Tensor*> parts;
      for (const Tensor* t : l->inputs())
        if ((*static_dims(t))[axis] > 0) parts.push_back(t);
      int64_t offset = 0;
      for (size_t k = 0; k < l->inputs().size(); ++k) {
        Tensor* t = l->inputs()[k];
        const int64_t n = (*static_dims(t))[axis];
        if (n == 0) continue;
        Piece q = p;
        q.tensor = t;
        q.coords[axis] = Builder::add(p.coords[axis], Builder::constant(-offset));
        const bool last = t == parts.back();
        // The last part takes what the others did not (no bound of its own).
        if (last || bound(q, p.coords[axis], offset, offset + n)) {
          if (!last || b_.range(p.coords[axis]).hi >= offset) out.push_back(std::move(q));
        }
        offset += n;
      }
      return !out.empty();
    }
    return false;
  }

  // Coordinates of a `to`-shaped tensor whose row-major reshape to `from` has coordinates `e`.
  std::vector<Linear> reshape_back(const std::vector<Linear>& e, const std::vector<int64_t>& from,
                                   const std::vector<int64_t>& to) {
    Linear linear;
    const std::vector<int64_t> fs = row_strides(from), ts = row_strides(to);
    for (size_t d = 0; d < e.size(); ++d) linear = Builder::add(linear, Builder::scale(e[d], fs[d]));
    std::vector<Linear> x(to.size());
    for (size_t k = 0; k < to.size(); ++k) {
      Linear q = b_.floordiv(linear, ts[k]);
      x[k] = k == 0 ? q : b_.mod(q, to[k]);  // the outermost dim needs no wrap
    }
    return x;
  }

 private:
  Builder& b_;
};

// A register reading `t` as it is, broadcast (right-aligned) to the builder's output dims.
std::optional<Piece> read_broadcast(Builder& b, Tensor* t) {
  const std::vector<int64_t>& out = b.out_dims();
  const std::vector<int64_t> dims = *static_dims(t);
  if (dims.size() > out.size()) return std::nullopt;
  Piece p;
  p.tensor = t;
  for (size_t i = 0; i < dims.size(); ++i)
    p.coords.push_back(dims[i] == 1 ? Linear{} : b.coord(out.size() - dims.size() + i));
  return p;
}

// The pieces of a register reading `t` (broadcast to the builder's output dims), walked back
// through foldable producers; nullopt when that leads nowhere useful or too far.
std::optional<std::vector<Piece>> walk(Builder& b, Tensor* t, size_t& undone_copies) {
  std::optional<Piece> start = read_broadcast(b, t);
  if (!start) return std::nullopt;
  std::vector<Piece> pieces{*start};
  Walker w(b);
  undone_copies = 0;
  for (bool changed = true; changed;) {
    changed = false;
    std::vector<Piece> next;
    for (const Piece& p : pieces) {
      const Layer* l = p.tensor ? p.tensor->producer() : nullptr;
      std::vector<Piece> undone;
      if (foldable(l) && w.undo(l, p, undone)) {
        next.insert(next.end(), undone.begin(), undone.end());
        undone_copies += copies(l);
        changed = true;
      } else {
        next.push_back(p);
      }
    }
    if (next.size() > kMaxPieces) return std::nullopt;
    pieces = std::move(next);
  }
  return pieces;
}

// Turns walked pieces into a register of `g`, adding the tensors they read to `leaves`.
std::vector<LoadPiece> emit(Builder& b, const std::vector<Piece>& pieces, std::vector<Tensor*>& leaves) {
  std::vector<LoadPiece> out;
  for (const Piece& p : pieces) {
    LoadPiece lp;
    lp.value = p.value;
    for (const Bound& bd : p.bounds) lp.bounds.push_back({b.node(bd.expr), bd.lo, bd.hi});
    if (p.tensor) {
      auto it = std::find(leaves.begin(), leaves.end(), p.tensor);
      if (it == leaves.end()) it = leaves.insert(leaves.end(), p.tensor);
      lp.input = static_cast<int32_t>(it - leaves.begin());
      const std::vector<int64_t> st = row_strides(*static_dims(p.tensor));
      Linear off;
      for (size_t d = 0; d < p.coords.size(); ++d) off = Builder::add(off, Builder::scale(p.coords[d], st[d]));
      lp.offset = b.node(off);
    }
    out.push_back(std::move(lp));
    if (p.bounds.empty()) break;  // always taken: later pieces are unreachable
  }
  return out;
}

// Replaces `l` (a pointwise layer, or with `as_copy` a movement layer read as a one-register copy)
// by a gathering FusedPointwise when its registers undo at least `min_copies` copies. True if it did.
bool gather_into(Network& net, Layer* l, size_t min_copies, bool as_copy) {
  auto out_dims = static_dims(l->output());
  if (!out_dims || out_dims->empty() || out_dims->size() > 8 || !all_static(l)) return false;
  const bool pointwise = !as_copy;
  FusedPointwiseParams prog;
  std::vector<Tensor*> reads;  // what each register reads before the walk
  if (pointwise) {
    prog = detail::pointwise_program(*l);
    if (prog.gather) return false;
    reads = l->inputs();
  } else {
    prog.outputs = {0};
    reads = {l->output()};
  }
  Builder b(*out_dims);
  GatherLoads g;
  g.out_dims = *out_dims;
  std::vector<Tensor*> leaves;
  size_t undone = 0;
  for (Tensor* t : reads) {
    size_t n = 0;
    std::optional<std::vector<Piece>> pieces = walk(b, t, n);
    std::vector<Tensor*> trial = leaves;
    std::vector<LoadPiece> reg;
    if (pieces) reg = emit(b, *pieces, trial);
    const bool reads_a_tensor = std::any_of(reg.begin(), reg.end(), [](const LoadPiece& p) { return p.input >= 0; });
    if (!pieces || !reads_a_tensor || trial.size() > kMaxLeaves) {  // read t as it is
      trial = leaves;
      std::optional<Piece> as_is = read_broadcast(b, t);
      if (!as_is) return false;
      reg = emit(b, {*as_is}, trial);
      n = 0;
      if (trial.size() > kMaxLeaves) return false;
    }
    leaves = std::move(trial);
    undone += n;
    g.registers.push_back(std::move(reg));
  }
  if (undone < min_copies) return false;
  g.nodes = b.take_nodes();
  prog.gather = std::move(g);
  const detail::OriginScope origin(net, l->origin());
  Layer* nl = net.add_layer("gather_" + l->name(), leaves, std::move(prog));
  net.replace_all_uses(l->output(), nl->output());
  detail::log_debug("fold_movement: " + l->name() + " -> " + nl->name() + " (" + std::to_string(undone) +
                    " copies folded, " + std::to_string(leaves.size()) + " inputs)");
  return true;
}

}  // namespace

size_t fold_movement(Network& net) {
  size_t changes = 0;
  // Pointwise layers first: they take the movement before them into their loads.
  // (An expansion, x + zeros, is left to its readers or to the second loop, which drop the zeros.)
  for (Layer* l : net.layers())
    if (detail::is_pointwise(l) && !foldable(l) && l->outputs().size() == 1 && gather_into(net, l, 1, false)) ++changes;
  if (changes) eliminate_dead_layers(net);
  // Chains of copies still needed elsewhere: one gathering copy at the end of each, latest first
  // so a chain folds whole. A layer all of whose users were replaced (or are unused) is dead.
  std::vector<Layer*> layers = net.layers();
  std::set<const Layer*> dead;
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    Layer* l = *it;
    bool live = false;
    for (const Tensor* t : l->outputs()) {
      live = live || detail::is_network_output(net, t);
      for (const Layer* u : net.consumers(t)) live = live || !dead.count(u);
    }
    if (!live) {
      dead.insert(l);
      continue;
    }
    if (!foldable(l) || copies(l) == 0 || l->outputs().size() != 1) continue;
    if (gather_into(net, l, 2, true)) {
      ++changes;
      dead.insert(l);
    }
  }
  eliminate_dead_layers(net);
  net.topological_sort();
  return changes;
}

}  // namespace kiln::engine::passes
