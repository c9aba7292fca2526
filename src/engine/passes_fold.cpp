// Constant folding (layers whose inputs are all constants are evaluated once, by the CPU kernels,
// into new constants) and dead-layer elimination.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "engine/builder.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/network_internal.h"

namespace kiln::engine::passes {

using detail::is_constant;
using detail::is_network_output;
using detail::weights_of;
using detail::sole_consumer;

namespace {

constexpr size_t kMaxFoldedBytes = size_t{64} << 20;  // don't bloat plans with huge broadcasts
constexpr int64_t kMaxFoldedFillElements = 1 << 16;   // a large fill is cheaper to run than to store


// Evaluates `l` on its constant inputs; nullopt when a kernel refuses.
std::optional<std::vector<Weights>> evaluate_on_cpu(const Layer& l) {
  std::vector<TensorView> ins;
  for (const Tensor* t : l.inputs()) {
    const Weights& w = weights_of(t);
    TensorView v;
    v.data = const_cast<uint8_t*>(w.data.get());
    v.dtype = w.dtype;
    v.dims = w.dims;
    ins.push_back(v);
  }
  std::vector<Weights> results;
  std::vector<TensorView> outs;
  for (const Tensor* t : l.outputs()) {
    std::vector<int64_t> dims = evaluate(t->shape(), {});
    std::vector<uint8_t> zeros(1);
    Weights w;
    w.dtype = t->dtype();
    w.dims = dims;
    // allocate through copy_of so the storage is aligned and owned
    std::vector<uint8_t> tmp(std::max<size_t>(w.nbytes(), 1));
    w = Weights::copy_of(t->dtype(), dims, tmp.data());
    TensorView v;
    v.data = const_cast<uint8_t*>(w.data.get());
    v.dtype = w.dtype;
    v.dims = w.dims;
    outs.push_back(v);
    results.push_back(std::move(w));
  }
  OutputAllocator no_alloc = [&](size_t, const std::vector<int64_t>&) -> TensorView {
    throw NetworkError("constant folding cannot allocate data-dependent outputs");
  };
  size_t ws_bytes = cpu::workspace_bytes(l, ins);
  std::vector<uint8_t> ws(ws_bytes);
  SymbolValues none;
  LayerCall call{l, ins, outs, no_alloc, ws.data(), ws_bytes, &none};
  try {
    cpu::execute(call);
  } catch (const std::exception& e) {
    detail::log_debug("fold_constants: left '" + l.name() + "' unfolded: " + e.what());
    return std::nullopt;
  }
  return results;
}

}  // namespace

size_t fold_constants(Network& net) {
  size_t changes = 0;
  for (Layer* l : net.layers()) {
    if (l->as<ConstantParams>() || l->as<NonZeroParams>() || l->as<PluginParams>()) continue;
    bool static_out = true;
    size_t out_bytes = 0;
    for (const Tensor* t : l->outputs()) {
      if (!is_static(t->shape())) {
        static_out = false;
        break;
      }
      out_bytes += static_cast<size_t>(detail::numel(t->shape()).constant().value_or(0)) * element_size(t->dtype());
    }
    if (!static_out || out_bytes > kMaxFoldedBytes) continue;

    std::vector<Weights> folded;
    if (l->as<ShapeParams>()) {
      // The shape of a statically shaped tensor is known whatever its values.
      const Shape& s = l->inputs()[0]->shape();
      if (!is_static(s)) continue;
      std::vector<int64_t> dims = evaluate(s, {});
      folded.push_back(Weights::copy_of(DataType::kInt64, {static_cast<int64_t>(dims.size())}, dims.data()));
    } else {
      if (l->inputs().empty() && !l->as<FillParams>()) continue;
      if (auto* f = l->as<FillParams>(); f && detail::numel(f->dims).constant().value_or(0) > kMaxFoldedFillElements)
        continue;
      bool all_const = true;
      for (const Tensor* t : l->inputs()) all_const = all_const && is_constant(t);
      if (!all_const) continue;
      auto r = evaluate_on_cpu(*l);
      if (!r) continue;
      folded = std::move(*r);
    }
    for (size_t i = 0; i < folded.size(); ++i) {
      Layer* c = net.add_constant(l->name(), std::move(folded[i]));
      net.replace_all_uses(l->outputs()[i], c->output());
    }
    detail::log_debug("fold_constants: " + l->name() + " (" + l->kind() + ") -> constant");
    net.remove_layer(l);
    ++changes;
  }
  net.topological_sort();
  return changes;
}

size_t eliminate_dead_layers(Network& net) {
  std::map<const Tensor*, int> uses;
  auto layers = net.layers();
  for (Layer* l : layers)
    for (Tensor* t : l->inputs()) ++uses[t];
  for (auto& [n, t] : net.outputs()) ++uses[t];
  size_t removed = 0;
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    Layer* l = *it;
    bool used = false;
    for (Tensor* t : l->outputs()) used = used || uses[t] > 0;
    if (used) continue;
    for (Tensor* t : l->inputs()) --uses[t];
    detail::log_debug("eliminate_dead_layers: " + l->name() + " (" + l->kind() + ")");
    net.remove_layer(l);
    ++removed;
  }
  return removed;
}

}  // namespace kiln::engine::passes

namespace kiln::engine::passes {

// Inference batch norm after a convolution is an affine map per output channel, so it folds into
// the convolution's weights and bias: s = gamma / sqrt(var + eps), W' = W * s[c], b' = (b - mean) * s
// + beta. Runs before precision lowering (the arithmetic is done in double on fp32 constants) and
// before epilogue fusion, which can then fuse the activation that follows into the convolution.
size_t fold_batch_norms(Network& net) {
  size_t folded = 0;
  for (Layer* bn : net.layers()) {
    auto* np = bn->as<NormalizationParams>();
    if (!np || np->kind != NormKind::kBatch) continue;
    Tensor* x = bn->inputs()[0];
    Layer* conv = x->producer();
    auto* cp = conv ? conv->as<ConvolutionParams>() : nullptr;
    if (!cp || cp->transposed || cp->activation || sole_consumer(net, x) != bn) continue;
    bool all_f32_constants = true;
    for (size_t i = 1; i < conv->inputs().size(); ++i)
      all_f32_constants = all_f32_constants && is_constant(conv->inputs()[i]);
    for (size_t i = 1; i < bn->inputs().size(); ++i)
      all_f32_constants = all_f32_constants && is_constant(bn->inputs()[i]);
    if (!all_f32_constants) continue;
    std::vector<const Weights*> ws;
    for (size_t i = 1; i < conv->inputs().size(); ++i) ws.push_back(&weights_of(conv->inputs()[i]));
    for (size_t i = 1; i < bn->inputs().size(); ++i) ws.push_back(&weights_of(bn->inputs()[i]));
    if (std::any_of(ws.begin(), ws.end(), [](const Weights* w) { return w->dtype != DataType::kFloat32; })) continue;

    const Weights& w = weights_of(conv->inputs()[1]);
    const int64_t channels = w.dims.at(0), per_channel = channels ? w.numel() / channels : 0;
    size_t next = 1;
    const Weights& mean = weights_of(bn->inputs()[next++]);
    const Weights& var = weights_of(bn->inputs()[next++]);
    const Weights* gamma = np->has_scale ? &weights_of(bn->inputs()[next++]) : nullptr;
    const Weights* beta = np->has_bias ? &weights_of(bn->inputs()[next++]) : nullptr;
    const Weights* bias = cp->has_bias ? &weights_of(conv->inputs()[2]) : nullptr;
    auto per_channel_ok = [&](const Weights* v) { return !v || v->numel() == channels; };
    if (!per_channel_ok(&mean) || !per_channel_ok(&var) || !per_channel_ok(gamma) || !per_channel_ok(beta) ||
        !per_channel_ok(bias))
      continue;

    std::vector<float> new_w(static_cast<size_t>(w.numel())), new_b(static_cast<size_t>(channels));
    for (int64_t c = 0; c < channels; ++c) {
      const double s = (gamma ? gamma->as<float>()[c] : 1.0) / std::sqrt(double(var.as<float>()[c]) + np->epsilon);
      for (int64_t i = 0; i < per_channel; ++i)
        new_w[c * per_channel + i] = static_cast<float>(w.as<float>()[c * per_channel + i] * s);
      new_b[c] = static_cast<float>(((bias ? bias->as<float>()[c] : 0.0) - mean.as<float>()[c]) * s +
                                    (beta ? beta->as<float>()[c] : 0.0));
    }
    Tensor* wt = net.add_constant(conv->name() + "_w_bn", Weights::copy_of(DataType::kFloat32, w.dims, new_w.data()))
                     ->output();
    Tensor* bt = net.add_constant(conv->name() + "_b_bn", Weights::copy_of(DataType::kFloat32, {channels}, new_b.data()))
                     ->output();
    ConvolutionParams p = *cp;
    p.has_bias = true;
    Layer* merged = net.add_convolution(conv->name(), conv->inputs()[0], wt, bt, p);
    net.replace_all_uses(bn->output(), merged->output());
    detail::log_debug("fold_batch_norms: " + bn->name() + " into " + conv->name());
    net.remove_layer(bn);
    net.remove_layer(conv);
    ++folded;
  }
  net.topological_sort();
  return folded;
}

}  // namespace kiln::engine::passes
