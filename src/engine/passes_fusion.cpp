// Fusion passes: matmul/conv epilogues (bias add, residual add, activation folded into the producing layer) and
// pointwise fusion (single-consumer DAGs of elementwise/unary/activation/cast/select layers of one
// output shape become one FusedPointwise layer running a register program).
#include <algorithm>
#include <map>
#include <set>

#include "engine/builder.h"
#include "engine/network_internal.h"

namespace kiln::engine::passes {

using detail::is_network_output;
using detail::is_pure_reshape;
using detail::is_single_pointwise;
using detail::sole_consumer;

using detail::same_shape;

namespace {

bool is_one(const DimExpr& d) { return d.constant() && *d.constant() == 1; }

// Whether `b` (right-aligned against `out`) varies only along `axis` of `out`, with that dim equal
// to out[axis]: the shape of a per-channel / per-column bias.
bool is_bias_along(const Shape& b, const Shape& out, size_t axis) {
  if (b.size() > out.size() || b.empty()) return false;
  size_t offset = out.size() - b.size();
  if (axis < offset) return false;
  for (size_t i = 0; i < b.size(); ++i) {
    size_t o = offset + i;
    if (o == axis) {
      if (!b[i].same_as(out[o])) return false;
    } else if (!is_one(b[i])) {
      return false;
    }
  }
  return true;
}

}  // namespace

size_t fuse_epilogues(Network& net) {
  size_t fused = 0;
  std::set<Layer*> removed;
  for (Layer* l : net.layers()) {
    if (removed.count(l)) continue;
    auto* mm = l->as<MatMulParams>();
    auto* conv = l->as<ConvolutionParams>();
    if (!mm && !conv) continue;
    bool has_bias = mm ? mm->has_bias : conv->has_bias;
    bool has_act = mm ? mm->activation.has_value() : conv->activation.has_value();
    const bool had_residual = mm ? mm->has_residual : conv->has_residual;
    if (has_act) continue;
    Tensor* cur = l->output();
    const Shape& out_shape = cur->shape();
    std::vector<Layer*> absorbed;
    Tensor* bias = nullptr;
    // A matmul's bias may sit behind a pure reshape that keeps its last dim (a 2-D mm viewed back
    // to [batch, h, w, features], ConvNeXt's MLP): the bias is still one per column; the reshape
    // moves after the fused layer.
    Layer* bias_reshape = nullptr;
    if (!has_bias) {
      Layer* add = sole_consumer(net, cur);
      Tensor* via = cur;
      if (mm && add && is_pure_reshape(add) && add->output()->rank() >= 1 &&
          add->output()->shape().back().same_as(out_shape.back())) {
        bias_reshape = add;
        via = add->output();
        add = sole_consumer(net, via);
      }
      const Shape& via_shape = via->shape();
      auto* ew = add ? add->as<ElementwiseParams>() : nullptr;
      if (ew && ew->op == BinaryOp::kAdd && add->inputs()[0] != add->inputs()[1]) {
        Tensor* other = add->inputs()[0] == via ? add->inputs()[1] : add->inputs()[0];
        size_t axis = mm ? via_shape.size() - 1 : 1;
        if (is_bias_along(other->shape(), via_shape, axis) && same_shape(add->output()->shape(), via_shape)) {
          bias = other;
          if (bias_reshape) absorbed.push_back(bias_reshape);
          absorbed.push_back(add);
          cur = add->output();
        }
      }
      if (!bias) bias_reshape = nullptr;
    }
    // A residual: an add of a tensor of exactly the output's shape (a skip connection), maybe
    // behind a pure reshape (GPT-2's addmm viewed back to [batch, seq, features]); the tensor is
    // reshaped to the layer's own output shape instead and the reshape moves after the fused layer.
    Tensor* residual = nullptr;
    Layer* residual_reshape = nullptr;
    if (!had_residual) {
      Layer* add = sole_consumer(net, cur);
      if (add && is_pure_reshape(add) && !bias_reshape) {
        residual_reshape = add;
        add = sole_consumer(net, add->output());
      }
      Tensor* via = residual_reshape ? residual_reshape->output() : cur;
      auto* ew = add ? add->as<ElementwiseParams>() : nullptr;
      if (ew && ew->op == BinaryOp::kAdd && add->inputs()[0] != add->inputs()[1]) {
        Tensor* other = add->inputs()[0] == via ? add->inputs()[1] : add->inputs()[0];
        if (other->dtype() == cur->dtype() && same_shape(other->shape(), via->shape()) &&
            same_shape(add->output()->shape(), via->shape())) {
          residual = other;
          if (residual_reshape) absorbed.push_back(residual_reshape);
          absorbed.push_back(add);
          cur = add->output();
        }
      }
      if (!residual) residual_reshape = nullptr;
    }
    std::optional<ActivationParams> act;
    // An activation commutes with a pure reshape, and converters put one between a 2-D matmul
    // (addmm) and the activation of a [batch, seq, features] model: look through it, and put the
    // reshape back after the fused layer.
    Layer* reshape = nullptr;
    if (Layer* s = sole_consumer(net, cur); s && is_pure_reshape(s) && !residual_reshape && !bias_reshape) {
      if (Layer* a = sole_consumer(net, s->output()); a && a->as<ActivationParams>()) reshape = s;
    }
    if (Layer* a = sole_consumer(net, reshape ? reshape->output() : cur); a && a->as<ActivationParams>()) {
      act = *a->as<ActivationParams>();
      if (reshape) absorbed.push_back(reshape);
      absorbed.push_back(a);
      cur = a->output();
    }
    if (absorbed.empty()) continue;

    const detail::OriginScope origin(net, l->origin());
    std::vector<Tensor*> inputs = l->inputs();
    if (bias) {
      // kernels take a 1-D bias: [N] for matmul, [C_out] for convolution
      Tensor* b1 = bias;
      if (bias->rank() != 1) {
        ShuffleParams sp;
        sp.reshape = Shape{out_shape[mm ? out_shape.size() - 1 : 1]};
        b1 = net.add_shuffle(bias->name() + "_flat", bias, sp)->output();
      }
      // the bias goes third: before a residual the layer already has (which stays last)
      inputs.insert(had_residual ? inputs.end() - 1 : inputs.end(), b1);
    }
    if (residual) {  // the last input, in the layer's own output shape
      Tensor* r = residual;
      if (residual_reshape || bias_reshape) {
        ShuffleParams sp;
        sp.reshape = out_shape;
        r = net.add_shuffle(residual->name() + "_as_" + l->name(), residual, sp)->output();
      }
      inputs.push_back(r);
    }
    LayerParams params = l->params();
    if (mm) {
      auto& p = std::get<MatMulParams>(params);
      p.has_bias = p.has_bias || bias;
      p.has_residual = p.has_residual || residual;
      p.activation = act;
    } else {
      auto& p = std::get<ConvolutionParams>(params);
      p.has_bias = p.has_bias || bias;
      p.has_residual = p.has_residual || residual;
      p.activation = act;
    }
    Layer* nl = net.add_layer(l->name(), inputs, params);
    Tensor* result = nl->output();
    if (bias_reshape)
      result = net.add_shuffle(bias_reshape->name(), result, *bias_reshape->as<ShuffleParams>())->output();
    if (residual_reshape)
      result = net.add_shuffle(residual_reshape->name(), result, *residual_reshape->as<ShuffleParams>())->output();
    if (reshape) result = net.add_shuffle(reshape->name(), result, *reshape->as<ShuffleParams>())->output();
    net.replace_all_uses(cur, result);
    std::string what = l->name();
    for (Layer* a : absorbed) what += " + " + a->name();
    for (auto it = absorbed.rbegin(); it != absorbed.rend(); ++it) {
      net.remove_layer(*it);
      removed.insert(*it);
    }
    net.remove_layer(l);
    removed.insert(l);
    detail::log_debug(std::string("fuse_epilogues: ") + what + (bias ? " [bias]" : "") + (residual ? " [residual]" : "") +
                      (act ? std::string(" [") + to_string(act->op) + "]" : ""));
    ++fused;
  }
  net.topological_sort();
  return fused;
}

namespace {

PointwiseInstr instr_for(const Layer* l) {
  PointwiseInstr ins{};
  ins.dtype = l->output()->dtype();
  if (auto* e = l->as<ElementwiseParams>()) {
    ins.kind = PointwiseInstr::Kind::kBinary;
    ins.binary = e->op;
  } else if (auto* u = l->as<UnaryParams>()) {
    ins.kind = PointwiseInstr::Kind::kUnary;
    ins.unary = u->op;
  } else if (auto* a = l->as<ActivationParams>()) {
    ins.kind = PointwiseInstr::Kind::kActivation;
    ins.activation = *a;
  } else if (l->as<CastParams>()) {
    ins.kind = PointwiseInstr::Kind::kCast;
  } else if (l->as<SelectParams>()) {
    ins.kind = PointwiseInstr::Kind::kSelect;
  } else {
    throw NetworkError("layer '" + l->name() + "' (" + l->kind() + ") is not a pointwise layer");
  }
  return ins;
}

// Builds the fused layer's inputs and program for `members` (in network order) producing `sink`.
// Scalar constants become kConstant instructions when `inline_scalars`.
void build_program(const std::vector<Layer*>& members, const Tensor* sink, bool inline_scalars,
                   std::vector<Tensor*>& inputs, FusedPointwiseParams& fp) {
  const detail::ProgramInputs ext = detail::program_inputs(members, inline_scalars);
  std::map<const Tensor*, int32_t> reg;
  for (Tensor* t : ext.tensors) {
    reg[t] = static_cast<int32_t>(inputs.size());
    inputs.push_back(t);
  }
  int32_t next = static_cast<int32_t>(inputs.size());
  for (const Tensor* s : ext.scalars) {
    fp.program.push_back(detail::scalar_instruction(s));
    reg[s] = next++;
  }
  for (Layer* m : members) {
    PointwiseInstr ins = instr_for(m);
    for (Tensor* t : m->inputs()) ins.operands.push_back(reg.at(t));
    fp.program.push_back(ins);
    reg[m->output()] = next++;
  }
  fp.outputs = {reg.at(sink)};
}

}  // namespace

size_t fuse_pointwise(Network& net) {
  size_t fused = 0;
  auto layers = net.layers();
  std::map<const Layer*, size_t> pos;
  for (size_t i = 0; i < layers.size(); ++i) pos[layers[i]] = i;
  std::set<const Layer*> taken;
  for (size_t i = layers.size(); i-- > 0;) {
    Layer* sink = layers[i];
    if (!is_single_pointwise(sink) || taken.count(sink)) continue;
    const Shape& shape = sink->output()->shape();
    std::set<Layer*> group{sink};
    // Grow backwards: absorb a pointwise producer when every use of its output is inside the
    // group (so the group stays convex) and it computes the group's shape (no recomputation of
    // a broadcast operand per output element).
    for (bool grew = true; grew;) {
      grew = false;
      for (Layer* m : std::vector<Layer*>(group.begin(), group.end())) {
        for (Tensor* t : m->inputs()) {
          Layer* p = t->producer();
          if (!p || group.count(p) || taken.count(p) || !is_single_pointwise(p)) continue;
          if (is_network_output(net, t) || !same_shape(t->shape(), shape)) continue;
          auto users = net.consumers(t);
          bool inside = std::all_of(users.begin(), users.end(), [&](Layer* u) { return group.count(u) > 0; });
          if (!inside) continue;
          group.insert(p);
          grew = true;
        }
      }
    }
    if (group.size() < 2) continue;
    std::vector<Layer*> members(group.begin(), group.end());
    std::sort(members.begin(), members.end(), [&](Layer* a, Layer* b) { return pos[a] < pos[b]; });

    // The fused output shape is the broadcast of the fused inputs; it must be the sink's shape.
    std::vector<Tensor*> inputs;
    FusedPointwiseParams fp;
    bool ok = false;
    for (bool inline_scalars : {true, false}) {
      inputs.clear();
      fp = {};
      build_program(members, sink->output(), inline_scalars, inputs, fp);
      if (inputs.empty()) continue;
      std::optional<Shape> b = inputs[0]->shape();
      for (size_t k = 1; k < inputs.size() && b; ++k) b = detail::broadcast(*b, inputs[k]->shape());
      if (b && same_shape(*b, shape)) {
        ok = true;
        break;
      }
    }
    if (!ok) continue;
    const detail::OriginScope origin(net, sink->origin());
    Layer* nl = net.add_layer("fused_" + sink->name(), inputs, fp);
    net.replace_all_uses(sink->output(), nl->output());
    std::string what;
    for (auto it = members.rbegin(); it != members.rend(); ++it) {
      what = (*it)->name() + (what.empty() ? "" : ", ") + what;
      net.remove_layer(*it);
      taken.insert(*it);
    }
    detail::log_debug("fuse_pointwise: [" + what + "] -> " + nl->name() + " (" + std::to_string(fp.program.size()) +
                      " instrs)");
    ++fused;
  }
  net.topological_sort();
  return fused;
}

}  // namespace kiln::engine::passes

namespace kiln::engine::detail {

bool same_shape(const Shape& a, const Shape& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!a[i].same_as(b[i])) return false;
  return true;
}

ProgramInputs program_inputs(const std::vector<Layer*>& members, bool inline_scalars, size_t max_scalar_rank) {
  std::set<const Tensor*> internal, seen;
  for (Layer* m : members)
    for (Tensor* t : m->outputs()) internal.insert(t);
  ProgramInputs r;
  for (Layer* m : members)
    for (Tensor* t : m->inputs()) {
      if (internal.count(t) || !seen.insert(t).second) continue;
      const auto* c = t->producer() ? t->producer()->as<ConstantParams>() : nullptr;
      if (inline_scalars && c && c->weights.numel() == 1 && t->rank() <= max_scalar_rank) r.scalars.push_back(t);
      else r.tensors.push_back(t);
    }
  return r;
}

PointwiseInstr scalar_instruction(const Tensor* scalar) {
  const Weights& w = scalar->producer()->as<ConstantParams>()->weights;
  PointwiseInstr ins{};
  ins.kind = PointwiseInstr::Kind::kConstant;
  ins.dtype = w.dtype;
  ins.constant = element_as_double(w.data.get(), w.dtype, 0);
  return ins;
}

FusedPointwiseParams pointwise_program(const Layer& layer) {
  if (auto* f = layer.as<FusedPointwiseParams>()) return *f;
  FusedPointwiseParams p;
  PointwiseInstr ins = passes::instr_for(&layer);
  const auto n = static_cast<int32_t>(layer.inputs().size());
  for (int32_t i = 0; i < n; ++i) ins.operands.push_back(i);
  p.program.push_back(ins);
  p.outputs.push_back(n);
  return p;
}

}  // namespace kiln::engine::detail
