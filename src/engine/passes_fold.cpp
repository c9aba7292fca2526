// Constant folding (layers whose inputs are all constants are evaluated once, by the CPU kernels,
// into new constants) and dead-layer elimination.
#include <map>
#include <set>

#include "engine/builder.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/network_internal.h"

namespace kiln::engine::passes {

namespace {

constexpr size_t kMaxFoldedBytes = size_t{64} << 20;  // don't bloat plans with huge broadcasts
constexpr int64_t kMaxFoldedFillElements = 1 << 16;   // a large fill is cheaper to run than to store

bool is_constant(const Tensor* t) { return t->producer() && t->producer()->as<ConstantParams>(); }

const Weights& weights_of(const Tensor* t) { return t->producer()->as<ConstantParams>()->weights; }

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
