// to_channels_last: cuDNN's fast fp16/bf16 convolution kernels work on [N, H, W, C] data; fed
// NCHW they transpose internally or fall back to slower kernels. Each 2-d convolution becomes a
// channels-last one between two transposes (NCHW -> NHWC before, back after); then transposes
// are moved down through pointwise layers (bias, residual add, activation all work in either
// layout) and concatenations, and cancelled where an NHWC->NCHW meets the next NCHW->NHWC; 2-d
// pooling runs in NHWC and reductions reduce the NHWC data over the matching axes. What remains
// are the copies at the network's edges and around layers that need NCHW (reshapes, for one).
#include <cstring>

#include "engine/builder.h"
#include "engine/network_internal.h"

namespace kiln::engine::passes {

using detail::add_permute;
using detail::is_constant;
using detail::is_pointwise;
using detail::kToNchw;
using detail::kToNhwc;
using detail::pure_permutation;
using detail::static_dims;
using detail::weights_of;

namespace {

// KCRS weights rearranged to KRSC.
Weights to_krsc(const Weights& w) {
  const size_t es = element_size(w.dtype);
  const int64_t K = w.dims[0], C = w.dims[1], R = w.dims[2], S = w.dims[3];
  std::vector<uint8_t> out(w.nbytes());
  const uint8_t* src = w.data.get();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s)
          std::memcpy(out.data() + size_t(((k * R + r) * S + s) * C + c) * es,
                      src + size_t(((k * C + c) * R + r) * S + s) * es, es);
  return Weights::copy_of(w.dtype, {K, R, S, C}, out.data());
}

size_t convert_convolutions(Network& net, bool for_cpu) {
  size_t n = 0;
  for (Layer* l : net.layers()) {
    auto* cp = l->as<ConvolutionParams>();
    if (!cp || cp->channels_last || cp->transposed || l->inputs()[0]->rank() != 4) continue;
    const DataType dt = l->inputs()[0]->dtype();
    // CUDA: fp16/bf16 (fp32 stays on cuDNN's exact FMA path, NCHW); the CPU: fp32 and bf16, what
    // oneDNN runs.
    const bool takes = for_cpu ? dt == DataType::kFloat32 || dt == DataType::kBFloat16
                               : dt == DataType::kFloat16 || dt == DataType::kBFloat16;
    if (!takes) continue;
    if (!is_constant(l->inputs()[1])) continue;
    const Weights& w = weights_of(l->inputs()[1]);
    if (w.dims.size() != 4) continue;
    const detail::OriginScope origin(net, l->origin());
    std::vector<Tensor*> inputs = l->inputs();
    inputs[0] = add_permute(net, l->name() + "_nhwc", inputs[0], kToNhwc);
    inputs[1] = net.add_constant(l->name() + "_krsc", to_krsc(w))->output();
    if (cp->has_residual) inputs.back() = add_permute(net, l->name() + "_residual_nhwc", inputs.back(), kToNhwc);
    ConvolutionParams p = *cp;
    p.channels_last = true;
    Layer* nl = net.add_layer(l->name(), inputs, p);
    net.replace_all_uses(l->output(), add_permute(net, l->name() + "_nchw", nl->output(), kToNchw));
    net.remove_layer(l);
    ++n;
  }
  return n;
}

bool is_single_element(const Tensor* t) { return detail::numel(t->shape()).constant() == std::optional<int64_t>(1); }

// A 2-d pooling of NHWC data brought back to NCHW pools it in place, channels last, and the
// transpose moves to its output.
bool sink_through_pooling(Network& net, Layer* l) {
  const auto* pp = l->as<PoolingParams>();
  if (!pp || pp->channels_last || l->inputs()[0]->rank() != 4) return false;
  const auto* perm = pure_permutation(l->inputs()[0]->producer());
  if (!perm || *perm != kToNchw) return false;
  PoolingParams p = *pp;
  p.channels_last = true;
  const detail::OriginScope origin(net, l->origin());
  Layer* nl = net.add_pooling(l->name(), l->inputs()[0]->producer()->inputs()[0], p);
  net.replace_all_uses(l->output(), add_permute(net, l->name() + "_nchw", nl->output(), kToNchw));
  net.remove_layer(l);
  return true;
}

// A reduction of permuted data reduces the data itself over the matching axes; what is left of
// the permutation (often nothing: NHWC averaged over H, W gives [N, C] directly) follows it.
bool sink_through_reduce(Network& net, Layer* l) {
  const auto* rp = l->as<ReduceParams>();
  if (!rp) return false;
  const auto* perm_p = pure_permutation(l->inputs()[0]->producer());
  if (!perm_p) return false;
  const std::vector<int64_t> perm = *perm_p;
  Tensor* source = l->inputs()[0]->producer()->inputs()[0];
  ReduceParams p = *rp;
  std::vector<bool> reduced(perm.size(), false);  // by source dim
  p.axes.clear();
  for (int64_t a : rp->axes) reduced.at(size_t(perm.at(size_t(a)))) = true;
  for (size_t d = 0; d < perm.size(); ++d)
    if (reduced[d]) p.axes.push_back(int64_t(d));
  // The output's dims in terms of the new reduction's output: kept dims keep their places; without
  // keep_dims, a kept source dim's place is its rank among the source dims that survive.
  std::vector<int64_t> rest;
  if (p.keep_dims) {
    rest = perm;
  } else {
    std::vector<int64_t> place(perm.size(), -1);
    int64_t next = 0;
    for (size_t d = 0; d < perm.size(); ++d)
      if (!reduced[d]) place[d] = next++;
    for (int64_t x : perm)
      if (!reduced[size_t(x)]) rest.push_back(place[size_t(x)]);
  }
  const detail::OriginScope origin(net, l->origin());
  Layer* nl = net.add_layer(l->name(), {source}, p);
  bool identity = true;
  for (size_t i = 0; i < rest.size(); ++i) identity = identity && rest[i] == int64_t(i);
  net.replace_all_uses(l->output(), identity ? nl->output() : add_permute(net, l->name() + "_out", nl->output(), rest));
  net.remove_layer(l);
  return true;
}

// A concatenation of tensors that all arrive through the same permutation concatenates their
// sources along the matching axis, and the permutation follows it: the channels of inception and
// fire modules and of dense blocks are concatenated channels last, not transposed back and forth
// around each convolution.
bool sink_through_concat(Network& net, Layer* l) {
  const auto* cp = l->as<ConcatParams>();
  if (!cp || l->inputs().empty()) return false;
  const std::vector<int64_t>* perm = nullptr;
  for (const Tensor* t : l->inputs()) {
    const auto* p = pure_permutation(t->producer());
    if (!p || (perm && *p != *perm)) return false;
    perm = p;
  }
  const std::vector<int64_t> forward = *perm;  // output dim d is source dim forward[d]
  std::vector<Tensor*> sources;
  for (Tensor* t : l->inputs()) sources.push_back(t->producer()->inputs()[0]);
  const detail::OriginScope origin(net, l->origin());
  Layer* nl = net.add_concat(l->name(), sources, forward.at(size_t(cp->axis)));
  net.replace_all_uses(l->output(), add_permute(net, l->name() + "_out", nl->output(), forward));
  net.remove_layer(l);
  return true;
}

// One step: a shuffle of a shuffle becomes one (or nothing), a pooling, reduction or
// concatenation moves before a transpose, a pointwise layer whose rank-4 operands all arrive
// through the same permutation runs before it instead. True if it changed.
bool sink_and_cancel(Network& net) {
  for (Layer* l : net.layers()) {
    if (detail::merge_permute_pair(net, l) || sink_through_pooling(net, l) || sink_through_reduce(net, l) ||
        sink_through_concat(net, l))
      return true;
    if (!is_pointwise(l) || l->outputs().size() != 1 || l->output()->rank() != 4) continue;
    // Each operand: arrives through the permutation, or is a scalar, or a rank-4 constant (re-laid
    // below; constant folding does the work). Operands through the permutation may broadcast
    // (squeeze-and-excite's [N, C, 1, 1] scale times [N, C, H, W]): permuting every rank-4 operand
    // the same way permutes the broadcast result the same way.
    const std::vector<int64_t>* perm = nullptr;
    std::vector<bool> through(l->inputs().size(), false);
    bool ok = true;
    for (size_t i = 0; i < l->inputs().size() && ok; ++i) {
      const Tensor* t = l->inputs()[i];
      const auto* p = pure_permutation(t->producer());
      through[i] = p && t->rank() == 4 && (!perm || *p == *perm);
      if (through[i]) perm = p;
      else ok = is_single_element(t) || (t->rank() == 4 && is_constant(t));
    }
    if (!ok || !perm) continue;
    const std::vector<int64_t> forward = *perm;
    std::vector<int64_t> inverse(4);
    for (size_t d = 0; d < 4; ++d) inverse[forward[d]] = int64_t(d);
    const detail::OriginScope origin(net, l->origin());
    std::vector<Tensor*> inputs;
    for (size_t i = 0; i < l->inputs().size(); ++i) {
      Tensor* t = l->inputs()[i];
      if (through[i]) inputs.push_back(t->producer()->inputs()[0]);
      else if (t->rank() == 4) inputs.push_back(add_permute(net, t->name() + "_relaid", t, inverse));
      else inputs.push_back(t);
    }
    Layer* nl = net.add_layer(l->name(), inputs, l->params());
    net.replace_all_uses(l->output(), add_permute(net, l->name() + "_out", nl->output(), forward));
    net.remove_layer(l);
    return true;
  }
  return false;
}

}  // namespace

size_t to_channels_last(Network& net, bool for_cpu) {
  size_t changes = convert_convolutions(net, for_cpu);
  if (!changes) return 0;
  for (size_t guard = 0; guard < 100000 && sink_and_cancel(net); ++guard) ++changes;
  net.topological_sort();
  detail::log_debug("to_channels_last: " + std::to_string(changes) + " rewrites");
  return changes;
}

}  // namespace kiln::engine::passes
