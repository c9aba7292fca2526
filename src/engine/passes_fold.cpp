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


// Evaluates `l` on the given values of its inputs; nullopt when a kernel refuses.
std::optional<std::vector<Weights>> evaluate_on_cpu(const Layer& l, const std::vector<const Weights*>& inputs) {
  std::vector<TensorView> ins;
  for (const Weights* in : inputs) {
    const Weights& w = *in;
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
      std::vector<const Weights*> values;
      for (const Tensor* t : l->inputs()) values.push_back(&weights_of(t));
      auto r = evaluate_on_cpu(*l, values);
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

namespace {
std::optional<Weights> evaluate_rec(const Tensor* t, size_t& budget, std::map<const Tensor*, Weights>& memo) {
  if (auto it = memo.find(t); it != memo.end()) return it->second;
  if (is_constant(t)) return weights_of(t);
  const Layer* l = t->producer();
  if (!l || l->as<NonZeroParams>() || l->as<PluginParams>() || l->as<ShapeParams>()) return std::nullopt;
  for (const Tensor* o : l->outputs()) {
    const auto n = detail::numel(o->shape()).constant();
    if (!n || size_t(*n) * element_size(o->dtype()) > budget) return std::nullopt;
    budget -= size_t(*n) * element_size(o->dtype());
  }
  std::vector<Weights> ins;
  for (const Tensor* in : l->inputs()) {
    auto v = evaluate_rec(in, budget, memo);
    if (!v) return std::nullopt;
    ins.push_back(std::move(*v));
  }
  std::vector<const Weights*> ptrs;
  for (const Weights& w : ins) ptrs.push_back(&w);
  auto r = evaluate_on_cpu(*l, ptrs);
  if (!r) return std::nullopt;
  for (size_t i = 0; i < r->size(); ++i) memo[l->output(i)] = (*r)[i];
  return memo.at(t);
}
}  // namespace

std::optional<Weights> evaluate_at_build_time(const Tensor* t, size_t max_bytes) {
  std::map<const Tensor*, Weights> memo;
  size_t budget = max_bytes;
  return evaluate_rec(t, budget, memo);
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

namespace {

// An inference batch norm's per-channel affine map, y = x * scale[c] + shift[c] with scale =
// gamma / sqrt(var + eps) and shift = beta - mean * scale, computed in double whatever the
// statistics' dtype (a model cast to fp16 keeps fp16 statistics). Nullopt unless the statistics and
// parameters are constant floats of `channels` values each.
struct Affine {
  std::vector<double> scale, shift;
};
std::optional<Affine> batch_norm_affine(const Layer& bn, int64_t channels) {
  const auto* np = bn.as<NormalizationParams>();
  for (size_t i = 1; i < bn.inputs().size(); ++i) {
    const Tensor* t = bn.inputs()[i];
    if (!is_constant(t) || !is_floating(weights_of(t).dtype) || weights_of(t).numel() != channels) return std::nullopt;
  }
  size_t next = 1;
  const Weights& mean = weights_of(bn.inputs()[next++]);
  const Weights& var = weights_of(bn.inputs()[next++]);
  const Weights* gamma = np->has_scale ? &weights_of(bn.inputs()[next++]) : nullptr;
  const Weights* beta = np->has_bias ? &weights_of(bn.inputs()[next++]) : nullptr;
  auto at = [](const Weights* v, int64_t i, double absent) {
    return v ? detail::element_as_double(v->data.get(), v->dtype, i) : absent;
  };
  Affine a;
  for (int64_t c = 0; c < channels; ++c) {
    const double s = at(gamma, c, 1.0) / std::sqrt(at(&var, c, 0) + np->epsilon);
    a.scale.push_back(s);
    a.shift.push_back(at(beta, c, 0) - at(&mean, c, 0) * s);
  }
  return a;
}

// Whether every value fits the dtype and the build's precision (a tiny variance scales past fp16's
// range: inf, then NaN); bf16 has fp32's range.
bool in_range(const std::vector<double>& v, DataType t, Precision precision) {
  const bool half = t == DataType::kFloat16 || precision == Precision::kFP16;
  const double limit = half ? 65504.0 : 3.38e38;
  return std::all_of(v.begin(), v.end(), [&](double x) { return std::abs(x) <= limit; });
}

// Values as constant weights of dtype `t`.
Weights weights_as(DataType t, std::vector<int64_t> dims, const std::vector<double>& v) {
  const std::vector<float> f(v.begin(), v.end());
  std::vector<uint8_t> bytes(v.size() * element_size(t));
  detail::convert_elements(f.data(), DataType::kFloat32, bytes.data(), t, int64_t(v.size()));
  return Weights::copy_of(t, std::move(dims), bytes.data());
}

// An inference batch norm that follows no convolution (DenseNet's and pre-activation ResNets'
// BN -> ReLU -> convolution) is still a per-channel affine map: x * scale + shift with [1, C, 1...]
// constants. As two pointwise layers it fuses with the activation after it into one pass, and the
// channels-last rewrite moves it across transposes like any pointwise layer (a normalization layer
// sent the data back to NCHW for itself).
size_t batch_norms_as_scale_shift(Network& net, Precision precision) {
  size_t rewritten = 0;
  for (Layer* bn : net.layers()) {
    auto* np = bn->as<NormalizationParams>();
    if (!np || np->kind != NormKind::kBatch) continue;
    Tensor* x = bn->inputs()[0];
    const Shape& shape = x->shape();
    const std::optional<int64_t> channels = shape.size() >= 2 ? shape[1].constant() : std::nullopt;
    if (!channels || !is_floating(x->dtype())) continue;
    const std::optional<Affine> a = batch_norm_affine(*bn, *channels);
    if (!a || !in_range(a->scale, x->dtype(), precision) || !in_range(a->shift, x->dtype(), precision))
      continue;  // the norm computes it, in fp32
    std::vector<int64_t> dims(shape.size(), 1);
    dims[1] = *channels;
    const detail::OriginScope origin(net, bn->origin());
    Tensor* s = net.add_constant(bn->name() + "_s", weights_as(x->dtype(), dims, a->scale))->output();
    Tensor* t = net.add_constant(bn->name() + "_t", weights_as(x->dtype(), dims, a->shift))->output();
    Tensor* scaled = net.add_elementwise(bn->name() + "_scale", x, s, BinaryOp::kMul)->output();
    Layer* shifted = net.add_elementwise(bn->name() + "_shift", scaled, t, BinaryOp::kAdd);
    net.replace_all_uses(bn->output(), shifted->output());
    net.remove_layer(bn);
    ++rewritten;
  }
  return rewritten;
}

}  // namespace

// Inference batch norm after a convolution is an affine map per output channel, so it folds into
// the convolution's weights and bias: W' = W * scale[c], b' = b * scale + shift (batch_norm_affine).
// Runs before precision lowering (the arithmetic is done in double, whatever the weights' dtype) and
// before epilogue fusion, which can then fuse the activation that follows into the convolution.
// The batch norms left (no convolution before them, or its output read elsewhere) become a scale
// and shift.
size_t fold_batch_norms(Network& net, Precision precision) {
  size_t folded = 0;
  for (Layer* bn : net.layers()) {
    auto* np = bn->as<NormalizationParams>();
    if (!np || np->kind != NormKind::kBatch) continue;
    Tensor* x = bn->inputs()[0];
    Layer* conv = x->producer();
    auto* cp = conv ? conv->as<ConvolutionParams>() : nullptr;
    if (!cp || cp->transposed || cp->activation || sole_consumer(net, x) != bn) continue;
    bool float_constants = true;
    for (size_t i = 1; i < conv->inputs().size(); ++i)
      float_constants = float_constants && is_constant(conv->inputs()[i]) && is_floating(weights_of(conv->inputs()[i]).dtype);
    if (!float_constants) continue;
    const Weights& w = weights_of(conv->inputs()[1]);
    const int64_t channels = w.dims.at(0), per_channel = channels ? w.numel() / channels : 0;
    const Weights* bias = cp->has_bias ? &weights_of(conv->inputs()[2]) : nullptr;
    if (bias && bias->numel() != channels) continue;
    const std::optional<Affine> a = batch_norm_affine(*bn, channels);
    if (!a) continue;
    // The folded weights keep the convolution weight's dtype.
    std::vector<double> new_w(static_cast<size_t>(w.numel())), new_b(static_cast<size_t>(channels));
    for (int64_t c = 0; c < channels; ++c) {
      const double s = a->scale[size_t(c)];
      for (int64_t i = 0; i < per_channel; ++i)
        new_w[size_t(c * per_channel + i)] = detail::element_as_double(w.data.get(), w.dtype, c * per_channel + i) * s;
      new_b[size_t(c)] = (bias ? detail::element_as_double(bias->data.get(), bias->dtype, c) : 0.0) * s + a->shift[size_t(c)];
    }
    if (!in_range(new_w, w.dtype, precision) || !in_range(new_b, w.dtype, precision)) {
      detail::log_debug("fold_batch_norms: " + bn->name() + " left: folded weights would overflow " + to_string(w.dtype));
      continue;
    }
    const detail::OriginScope origin(net, conv->origin());  // the convolution's work, not the norm's
    Tensor* wt = net.add_constant(conv->name() + "_w_bn", weights_as(w.dtype, w.dims, new_w))->output();
    Tensor* bt = net.add_constant(conv->name() + "_b_bn", weights_as(w.dtype, {channels}, new_b))->output();
    ConvolutionParams p = *cp;
    p.has_bias = true;
    Layer* merged = net.add_convolution(conv->name(), conv->inputs()[0], wt, bt, p);
    net.replace_all_uses(bn->output(), merged->output());
    detail::log_debug("fold_batch_norms: " + bn->name() + " into " + conv->name());
    net.remove_layer(bn);
    net.remove_layer(conv);
    ++folded;
  }
  folded += batch_norms_as_scale_shift(net, precision);
  net.topological_sort();
  return folded;
}

}  // namespace kiln::engine::passes
