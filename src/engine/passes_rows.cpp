// fuse_rows: the row-wise reductions of transformers and ConvNeXt-style networks (layer norm, RMS
// norm written out as pow/mean/rsqrt, softmax) become one row program together with the pointwise
// layers around them that compute on the same rows (residual adds before a norm, its weight
// multiply and dtype casts after it, a scale before a softmax). Each such layer otherwise reads and
// writes the whole tensor once: an RMS norm as three kernels moves ~7 tensor sizes, as one ~2.
//
// A group grows from a seed reduction over the last axis of a domain D (static last dim R): it
// absorbs pointwise producers, and consumers that are
// pointwise layers or further row reductions over D, as long as every layer computes on D or on
// D's rows ([..., 1]) and no path leaves the group and comes back (which would make the fused
// layer depend on itself). Tensors used outside the group become the program's outputs.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "engine/builder.h"
#include "engine/network_internal.h"

namespace kiln::engine::detail {

bool is_row_shaped(const Shape& s) {
  if (s.empty()) return true;
  const auto last = s.back().constant();
  return last && *last == 1;
}

std::vector<char> row_registers(const FusedPointwiseParams& p, const std::vector<char>& input_is_row) {
  std::vector<char> row(input_is_row);
  for (const PointwiseInstr& ins : p.program) {
    bool r = true;
    if (ins.kind != PointwiseInstr::Kind::kRowReduce && ins.kind != PointwiseInstr::Kind::kConstant)
      for (int32_t o : ins.operands) r = r && o >= 0 && size_t(o) < row.size() && row[size_t(o)];
    row.push_back(r);
  }
  return row;
}

}  // namespace kiln::engine::detail

namespace kiln::engine::passes {
namespace {

using detail::is_network_output;
using detail::same_shape;

// Rows longer than this stay with the unfused kernels: a row lives in the registers of one block.
constexpr int64_t kMaxRowLength = 8192;
constexpr size_t kMaxInputs = 16, kMaxOutputs = 8;  // the CUDA kernels' argument block

Shape rows_of(const Shape& d) {
  Shape r = d;
  r.back() = DimExpr(1);
  return r;
}

bool last_axis(int64_t axis, size_t rank) { return axis == -1 || axis == int64_t(rank) - 1; }

// Whether `l` reduces its first input over the last axis of the domain `d` (the seed kinds).
bool is_row_reduction(const Layer* l, const Shape& d) {
  const Tensor* x = l->inputs().empty() ? nullptr : l->inputs()[0];
  if (!x || !is_floating(x->dtype()) || !same_shape(x->shape(), d)) return false;
  const size_t rank = d.size();
  if (auto* r = l->as<ReduceParams>()) {
    const bool op = r->op == ReduceOp::kSum || r->op == ReduceOp::kMean || r->op == ReduceOp::kMax ||
                    r->op == ReduceOp::kMin;
    return op && r->keep_dims && r->axes.size() == 1 && last_axis(r->axes[0], rank);
  }
  if (auto* s = l->as<SoftmaxParams>()) return last_axis(s->axis, rank);
  if (auto* n = l->as<NormalizationParams>()) {
    if (n->kind != NormKind::kLayer || !last_axis(n->first_axis, rank)) return false;
    for (size_t i = 1; i < l->inputs().size(); ++i) {  // scale, bias: one value per position of the row
      const Tensor* t = l->inputs()[i];
      if (!is_floating(t->dtype()) || !detail::broadcast(t->shape(), d) ||
          !same_shape(*detail::broadcast(t->shape(), d), d))
        return false;
    }
    return true;
  }
  return false;
}

// Whether `l` can join a group over domain `d`: a row reduction over it, or a pointwise layer
// computing on it or on its rows.
bool joins(const Layer* l, const Shape& d) {
  if (l->outputs().size() != 1) return false;
  if (is_row_reduction(l, d)) return true;
  if (!detail::is_pointwise(l)) return false;
  if (auto* f = l->as<FusedPointwiseParams>(); f && (f->gather || f->row_length)) return false;
  const Shape& out = l->output()->shape();
  if (same_shape(out, d)) return true;
  if (!same_shape(out, rows_of(d))) return false;
  for (const Tensor* t : l->inputs())  // a per-row result from per-row values only
    if (!detail::is_row_shaped(t->shape())) return false;
  return true;
}

struct Builder {
  std::vector<Tensor*> inputs;
  FusedPointwiseParams prog;
  std::map<const Tensor*, int32_t> reg;
  std::vector<PointwiseInstr> pending;  // instructions, registers numbered after the inputs

  int32_t emit(PointwiseInstr ins) {
    pending.push_back(std::move(ins));
    return -int32_t(pending.size());  // provisional: renumbered once the inputs are known
  }
};

}  // namespace

size_t fuse_rows(Network& net) {
  size_t fused = 0;
  auto layers = net.layers();
  std::map<const Layer*, size_t> pos;
  for (size_t i = 0; i < layers.size(); ++i) pos[layers[i]] = i;
  std::set<const Layer*> taken;
  for (Layer* seed : layers) {
    if (taken.count(seed) || seed->inputs().empty()) continue;
    const Shape d = seed->inputs()[0]->shape();
    if (d.empty() || !is_row_reduction(seed, d)) continue;
    const auto r_const = d.back().constant();
    if (!r_const || *r_const < 2 || *r_const > kMaxRowLength) continue;
    const int64_t R = *r_const;

    std::set<Layer*> group{seed};
    size_t max_pos = pos[seed];
    // Whether adding `c` lets a path leave the group and re-enter it through a layer outside.
    auto cycles_with = [&](Layer* c) {
      std::set<Layer*> g = group;
      g.insert(c);
      const size_t hi = std::max(max_pos, pos[c]);
      std::vector<Layer*> frontier;
      std::set<Layer*> seen;
      for (Layer* m : g)
        for (Tensor* t : m->outputs())
          for (Layer* u : net.consumers(t))
            if (!g.count(u) && pos[u] < hi && seen.insert(u).second) frontier.push_back(u);
      while (!frontier.empty()) {
        Layer* u = frontier.back();
        frontier.pop_back();
        for (Tensor* t : u->outputs())
          for (Layer* v : net.consumers(t)) {
            if (g.count(v)) return true;
            if (pos[v] < hi && seen.insert(v).second) frontier.push_back(v);
          }
      }
      return false;
    };
    for (bool grew = true; grew;) {
      grew = false;
      for (Layer* m : std::vector<Layer*>(group.begin(), group.end())) {
        for (Tensor* t : m->inputs()) {
          Layer* p = t->producer();
          // (Its output may have uses outside: it becomes one of the group's outputs, as a
          // residual sum feeding a pre-norm and the next residual does.)
          if (!p || group.count(p) || taken.count(p) || !joins(p, d) || cycles_with(p)) continue;
          group.insert(p);
          grew = true;
        }
        for (Tensor* t : m->outputs())
          for (Layer* c : net.consumers(t)) {
            if (group.count(c) || taken.count(c) || !joins(c, d) || cycles_with(c)) continue;
            group.insert(c);
            max_pos = std::max(max_pos, pos[c]);
            grew = true;
          }
      }
    }
    if (group.size() < 2) continue;
    std::vector<Layer*> members(group.begin(), group.end());
    std::sort(members.begin(), members.end(), [&](Layer* a, Layer* b) { return pos[a] < pos[b]; });

    // The group's outputs: tensors used outside it or returned by the network.
    std::vector<Tensor*> outs;
    for (Layer* m : members)
      for (Tensor* t : m->outputs()) {
        auto users = net.consumers(t);
        const bool outside = is_network_output(net, t) ||
                             std::any_of(users.begin(), users.end(), [&](Layer* u) { return !group.count(u); });
        if (outside) outs.push_back(t);
      }
    if (outs.empty() || outs.size() > kMaxOutputs) continue;

    // External inputs (scalar constants become instructions), then each member's instructions.
    Builder b;
    const detail::ProgramInputs ext = detail::program_inputs(members, true, d.size());
    for (Tensor* t : ext.tensors) {
      b.reg[t] = int32_t(b.inputs.size());
      b.inputs.push_back(t);
    }
    if (b.inputs.size() > kMaxInputs) continue;
    const int32_t n_in = int32_t(b.inputs.size());
    // Provisional register -k (k >= 1) is pending instruction k - 1: n_in + k - 1 once final.
    auto final_reg = [&](int32_t r) { return r >= 0 ? r : n_in - r - 1; };
    // An instruction of `kind` over registers `ops`; `set` fills in its op.
    auto emit = [&](PointwiseInstr::Kind kind, DataType dt, std::vector<int32_t> ops, auto&& set) {
      PointwiseInstr i{};
      i.kind = kind;
      i.dtype = dt;
      set(i);
      for (int32_t& o : ops) o = final_reg(o);
      i.operands = std::move(ops);
      return b.emit(i);
    };
    auto none = [](PointwiseInstr&) {};
    auto instr = [&](PointwiseInstr::Kind kind, DataType dt, std::vector<int32_t> ops) { return emit(kind, dt, ops, none); };
    auto constant = [&](double v, DataType dt) {
      return emit(PointwiseInstr::Kind::kConstant, dt, {}, [v](PointwiseInstr& i) { i.constant = v; });
    };
    auto binary = [&](BinaryOp op, int32_t x, int32_t y, DataType dt) {
      return emit(PointwiseInstr::Kind::kBinary, dt, {x, y}, [op](PointwiseInstr& i) { i.binary = op; });
    };
    auto unary = [&](UnaryOp op, int32_t x, DataType dt) {
      return emit(PointwiseInstr::Kind::kUnary, dt, {x}, [op](PointwiseInstr& i) { i.unary = op; });
    };
    auto row_reduce = [&](ReduceOp op, int32_t x, DataType dt) {
      return emit(PointwiseInstr::Kind::kRowReduce, dt, {x}, [op](PointwiseInstr& i) { i.reduce = op; });
    };
    const DataType f32 = DataType::kFloat32;
    auto as_f32 = [&](int32_t x, DataType from) {
      return from == f32 ? x : instr(PointwiseInstr::Kind::kCast, f32, {x});
    };
    auto mean_of = [&](int32_t x32) {
      return binary(BinaryOp::kMul, row_reduce(ReduceOp::kSum, x32, f32), constant(1.0 / double(R), f32), f32);
    };
    for (const Tensor* s : ext.scalars) b.reg[s] = b.emit(detail::scalar_instruction(s));
    for (Layer* m : members) {
      auto in = [&](size_t k) { return b.reg.at(m->inputs()[k]); };
      const DataType out_dt = m->output()->dtype(), in_dt = m->inputs()[0]->dtype();
      int32_t result = 0;
      if (auto* r = m->as<ReduceParams>()) {
        if (r->op == ReduceOp::kMax || r->op == ReduceOp::kMin) {
          result = row_reduce(r->op, in(0), out_dt);
        } else {
          const int32_t x = as_f32(in(0), in_dt);
          result = r->op == ReduceOp::kMean ? mean_of(x) : row_reduce(ReduceOp::kSum, x, f32);
          if (out_dt != f32) result = instr(PointwiseInstr::Kind::kCast, out_dt, {result});
        }
      } else if (auto* s = m->as<SoftmaxParams>()) {
        const int32_t x = as_f32(in(0), in_dt);
        const int32_t shifted = binary(BinaryOp::kSub, x, row_reduce(ReduceOp::kMax, x, f32), f32);
        const int32_t e = unary(UnaryOp::kExp, shifted, f32);
        const int32_t sum = row_reduce(ReduceOp::kSum, e, f32);
        result = s->log ? binary(BinaryOp::kSub, shifted, unary(UnaryOp::kLog, sum, f32), f32)
                        : binary(BinaryOp::kDiv, e, sum, f32);
        if (out_dt != f32) result = instr(PointwiseInstr::Kind::kCast, out_dt, {result});
      } else if (auto* n = m->as<NormalizationParams>()) {
        const int32_t x = as_f32(in(0), in_dt);
        const int32_t centered = binary(BinaryOp::kSub, x, mean_of(x), f32);
        const int32_t var = mean_of(binary(BinaryOp::kMul, centered, centered, f32));
        const int32_t inv = unary(UnaryOp::kRsqrt, binary(BinaryOp::kAdd, var, constant(n->epsilon, f32), f32), f32);
        result = binary(BinaryOp::kMul, centered, inv, f32);
        size_t k = 1;
        if (n->has_scale) result = binary(BinaryOp::kMul, result, as_f32(in(k), m->inputs()[k]->dtype()), f32), ++k;
        if (n->has_bias) result = binary(BinaryOp::kAdd, result, as_f32(in(k), m->inputs()[k]->dtype()), f32);
        if (out_dt != f32) result = instr(PointwiseInstr::Kind::kCast, out_dt, {result});
      } else {  // a pointwise layer: its program, its input registers renamed
        const FusedPointwiseParams sub = detail::pointwise_program(*m);
        const int32_t sub_in = int32_t(m->inputs().size());
        std::vector<int32_t> map;
        for (int32_t k = 0; k < sub_in; ++k) map.push_back(in(size_t(k)));
        for (PointwiseInstr ins : sub.program) {
          for (int32_t& o : ins.operands) o = final_reg(map.at(size_t(o)));
          map.push_back(b.emit(ins));
        }
        result = map.at(size_t(sub.outputs.at(0)));
      }
      b.reg[m->output()] = result;
    }
    b.prog.program = std::move(b.pending);
    for (Tensor* t : outs) b.prog.outputs.push_back(final_reg(b.reg.at(t)));
    b.prog.row_length = R;

    // The fused layer's outputs must have the group's tensors' shapes and dtypes.
    Layer* nl = nullptr;
    const detail::OriginScope origin(net, seed->origin());
    try {
      nl = net.add_layer("rows_" + seed->name(), b.inputs, b.prog);
    } catch (const NetworkError& e) {
      detail::log_debug(std::string("fuse_rows: ") + seed->name() + " left unfused: " + e.what());
      continue;
    }
    bool agree = nl->outputs().size() == outs.size();
    for (size_t k = 0; agree && k < outs.size(); ++k)
      agree = nl->output(k)->dtype() == outs[k]->dtype() && same_shape(nl->output(k)->shape(), outs[k]->shape());
    if (!agree) {
      net.remove_layer(nl);
      detail::log_debug("fuse_rows: " + seed->name() + " left unfused: outputs would change shape or dtype");
      continue;
    }
    for (size_t k = 0; k < outs.size(); ++k) net.replace_all_uses(outs[k], nl->output(k));
    std::string what;
    for (auto it = members.rbegin(); it != members.rend(); ++it) {
      what = (*it)->name() + (what.empty() ? "" : ", ") + what;
      net.remove_layer(*it);
      taken.insert(*it);
    }
    detail::log_debug("fuse_rows: [" + what + "] -> " + nl->name() + " (" + std::to_string(b.prog.program.size()) +
                      " instrs, rows of " + std::to_string(R) + ")");
    ++fused;
  }
  net.topological_sort();
  return fused;
}

}  // namespace kiln::engine::passes
