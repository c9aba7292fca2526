// Network definition: tensor/layer ownership, naming, add_* entry points, printing, verification,
// rewrites for builder passes, and the plugin registry. Per-kind checks and output inference live
// in shape_inference.cpp.
#include "engine/network.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "engine/network_internal.h"

namespace kiln::engine {

// ---- enums and small types ------------------------------------------------------------------

const char* to_string(DataType t) { return enum_name(t); }

size_t element_size(DataType t) {
  switch (t) {
    case DataType::kFloat32: case DataType::kInt32: return 4;
    case DataType::kFloat16: case DataType::kBFloat16: return 2;
    case DataType::kInt64: return 8;
    case DataType::kInt8: case DataType::kUInt8: case DataType::kBool: return 1;
  }
  return 1;
}

bool is_floating(DataType t) {
  return t == DataType::kFloat32 || t == DataType::kFloat16 || t == DataType::kBFloat16;
}

const char* to_string(BinaryOp op) { return enum_name(op); }
const char* to_string(UnaryOp op) { return enum_name(op); }
const char* to_string(ActivationOp op) { return enum_name(op); }

namespace detail {
const char* layer_kind_name_at(size_t index) {
  static const char* names[] = {
      "Constant", "Elementwise", "Unary", "Activation", "MatMul", "Convolution", "Pooling", "Reduce",
      "Softmax", "Normalization", "Shuffle", "Concat", "Slice", "Gather", "Scatter", "Select", "Cast",
      "Shape", "Fill", "Pad", "Resize", "CumSum", "TopK", "Identity", "NonZero", "Attention", "Plugin",
      "FusedPointwise"};
  static_assert(std::size(names) == kLayerKindCount, "one name per LayerParams alternative");
  return index < std::size(names) ? names[index] : "?";
}
}  // namespace detail

const char* layer_kind_name(const LayerParams& p) { return detail::layer_kind_name_at(p.index()); }

size_t Weights::nbytes() const { return static_cast<size_t>(numel()) * element_size(dtype); }
int64_t Weights::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}
Weights Weights::copy_of(DataType dtype, std::vector<int64_t> dims, const void* bytes) {
  Weights w;
  w.dtype = dtype;
  w.dims = std::move(dims);
  size_t n = w.nbytes();
  // 64-byte aligned so kernels may use aligned vector loads on weights
  auto* p = static_cast<uint8_t*>(::operator new(std::max<size_t>(n, 1), std::align_val_t(64)));
  if (n) std::memcpy(p, bytes, n);
  w.data = std::shared_ptr<const uint8_t>(p, [](const uint8_t* q) {
    ::operator delete(const_cast<uint8_t*>(q), std::align_val_t(64));
  });
  return w;
}

// ---- printing --------------------------------------------------------------------------------

std::string Tensor::str() const { return "%" + name_ + ": " + to_string(dtype_) + to_string(shape_); }

namespace {
std::string join_ints(const std::vector<int64_t>& v) {
  std::string r;
  for (size_t i = 0; i < v.size(); ++i) r += (i ? "," : "") + std::to_string(v[i]);
  return r;
}

// The bracketed attribute summary of a layer in printouts.
std::string describe(const LayerParams& params) {
  std::ostringstream o;
  std::visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConstantParams>) {
          o << to_string(p.weights.dtype) << "[" << join_ints(p.weights.dims) << "]";
        } else if constexpr (std::is_same_v<P, ElementwiseParams> || std::is_same_v<P, UnaryParams>) {
          o << to_string(p.op);
        } else if constexpr (std::is_same_v<P, ActivationParams>) {
          o << to_string(p.op);
          if (p.alpha != 0 || p.beta != 0) o << " alpha=" << p.alpha << " beta=" << p.beta;
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          o << (p.transpose_a ? "aT" : "a") << (p.transpose_b ? " bT" : " b");
          if (p.has_bias) o << " +bias";
          if (p.has_residual) o << " +residual";
          if (p.activation) o << " " << to_string(p.activation->op);
        } else if constexpr (std::is_same_v<P, ConvolutionParams>) {
          o << (p.transposed ? "transposed " : "") << "stride=" << join_ints(p.stride) << " pad="
            << join_ints(p.padding) << " dil=" << join_ints(p.dilation) << " groups=" << p.groups
            << (p.channels_last ? " NHWC" : "");
          if (p.has_bias) o << " +bias";
          if (p.has_residual) o << " +residual";
          if (p.activation) o << " " << to_string(p.activation->op);
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          o << (p.type == PoolType::kMax ? "max" : "avg");
          if (!p.adaptive_output.empty()) o << " adaptive=" << join_ints(p.adaptive_output);
          else o << " k=" << join_ints(p.kernel) << " s=" << join_ints(p.stride) << " p=" << join_ints(p.padding);
          if (p.ceil_mode) o << " ceil";
          if (p.channels_last) o << " NHWC";
        } else if constexpr (std::is_same_v<P, ReduceParams>) {
          o << enum_name(p.op) << " axes=" << join_ints(p.axes) << (p.keep_dims ? " keep" : "");
        } else if constexpr (std::is_same_v<P, SoftmaxParams>) {
          o << (p.log ? "log " : "") << "axis=" << p.axis;
        } else if constexpr (std::is_same_v<P, NormalizationParams>) {
          o << enum_name(p.kind) << " eps=" << p.epsilon;
        } else if constexpr (std::is_same_v<P, ShuffleParams>) {
          if (!p.first_perm.empty()) o << "perm=" << join_ints(p.first_perm) << " ";
          if (p.reshape) o << "reshape=" << to_string(*p.reshape) << " ";
          if (!p.second_perm.empty()) o << "perm2=" << join_ints(p.second_perm);
        } else if constexpr (std::is_same_v<P, ConcatParams> || std::is_same_v<P, CumSumParams>) {
          o << "axis=" << p.axis;
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          o << "start=" << to_string(p.start) << " size=" << to_string(p.size) << " stride=" << to_string(p.stride);
        } else if constexpr (std::is_same_v<P, GatherParams> || std::is_same_v<P, ScatterParams>) {
          o << (p.mode == GatherMode::kAxis ? "axis " : "elements ") << p.axis;
        } else if constexpr (std::is_same_v<P, CastParams>) {
          o << to_string(p.to);
        } else if constexpr (std::is_same_v<P, FillParams>) {
          o << (p.op == FillOp::kConstant ? "constant " : "arange ") << to_string(p.dtype) << to_string(p.dims);
        } else if constexpr (std::is_same_v<P, TopKParams>) {
          o << (p.k == TopKParams::kWholeAxis ? std::string("k=all") : "k=" + std::to_string(p.k)) << " axis=" << p.axis;
        } else if constexpr (std::is_same_v<P, NonZeroParams>) {
          o << p.count_symbol;
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          o << (p.causal ? "causal" : "") << (p.has_mask ? " mask" : "");
          for (size_t i = 0; i < p.views.size(); ++i)
            if (p.views[i]) o << " " << "qkv"[i] << "-view";
          if (!p.output_perm.empty()) o << " out-perm=" << join_ints(p.output_perm);
        } else if constexpr (std::is_same_v<P, PluginParams>) {
          o << p.plugin;
        } else if constexpr (std::is_same_v<P, FusedPointwiseParams>) {
          o << p.program.size() << " instrs";
          if (p.gather) o << ", gathered loads (" << p.gather->nodes.size() << " index nodes)";
          if (p.row_length) o << ", rows of " << p.row_length;
        } else if constexpr (std::is_same_v<P, PadParams>) {
          o << enum_name(p.mode) << " pre=" << join_ints(p.pre) << " post=" << join_ints(p.post);
          if (p.mode == PadMode::kConstant && p.value != 0) o << " value=" << p.value;
        } else if constexpr (std::is_same_v<P, ResizeParams>) {
          o << enum_name(p.mode) << " out=" << to_string(p.output_spatial) << (p.align_corners ? " align_corners" : "");
        } else if constexpr (std::is_same_v<P, SelectParams> || std::is_same_v<P, ShapeParams> ||
                             std::is_same_v<P, IdentityParams>) {
          // no parameters
        } else {
          static_assert(detail::kNoCaseFor<P>, "describe: a layer kind without a case");
        }
      },
      params);
  std::string r = o.str();  // the cases separate their parts with spaces: none at either end
  const size_t first = r.find_first_not_of(' '), last = r.find_last_not_of(' ');
  return first == std::string::npos ? "" : r.substr(first, last - first + 1);
}
}  // namespace

std::string Layer::label() const {
  return "layer '" + name_ + "' (" + kind() + (origin_.empty() ? "" : ", from " + origin_) + ")";
}

std::string Layer::str() const {
  std::string r;
  for (size_t i = 0; i < outputs_.size(); ++i) r += (i ? ", " : "") + outputs_[i]->str();
  r += std::string(" = ") + kind();
  std::string attrs = describe(params_);
  if (!attrs.empty()) r += "[" + attrs + "]";
  r += "(";
  for (size_t i = 0; i < inputs_.size(); ++i) r += (i ? ", %" : "%") + inputs_[i]->name();
  r += ")  # " + name_;
  if (!origin_.empty()) r += "  (" + origin_ + ")";
  return r;
}

// ---- Network ---------------------------------------------------------------------------------

struct Network::Impl {
  std::vector<std::unique_ptr<Tensor>> tensors;    // every tensor ever made (removed ones stay owned)
  std::vector<std::unique_ptr<Layer>> layer_store;  // likewise for layers
  std::vector<Layer*> order;                        // live layers, topological
  std::set<std::string> layer_names, tensor_names;
  std::set<std::string> symbols;
  int next_tensor_id = 0, next_layer_id = 0;

  std::string unique(std::set<std::string>& taken, const std::string& base) {
    std::string b = base.empty() ? "layer" : base;
    std::string n = b;
    for (int i = 1; taken.count(n); ++i) n = b + "_" + std::to_string(i);
    taken.insert(n);
    return n;
  }
  std::string fresh_symbol(const std::string& prefix) {
    std::string n;
    for (int i = 0;; ++i) {
      n = prefix + std::to_string(i);
      if (!symbols.count(n)) break;
    }
    symbols.insert(n);
    return n;
  }
  bool owns(const Tensor* t) const {
    for (auto& p : tensors)
      if (p.get() == t) return true;
    return false;
  }
};

Network::Network() : impl_(std::make_unique<Impl>()) {}
Network::~Network() = default;
Network::Network(Network&&) noexcept = default;
Network& Network::operator=(Network&&) noexcept = default;

void Network::replace_output(const std::string& name, Tensor* t) {
  if (!t || !impl_->owns(t)) throw NetworkError("replace_output('" + name + "'): tensor is not part of this network");
  for (auto& [n, o] : outputs_)
    if (n == name) {
      o = t;
      return;
    }
  throw NetworkError("replace_output: no output named '" + name + "'");
}

Tensor* Network::add_input(const std::string& name, DataType dtype, Shape shape) {
  if (name.empty()) throw NetworkError("network input needs a name");
  if (impl_->tensor_names.count(name)) throw NetworkError("network input name '" + name + "' is already used");
  for (size_t i = 0; i < shape.size(); ++i) {
    if (auto c = shape[i].constant(); c && *c < 0)
      throw NetworkError("network input '" + name + "': dim " + std::to_string(i) + " is negative (" +
                         std::to_string(*c) + ")");
  }
  auto t = std::make_unique<Tensor>();
  t->id_ = impl_->next_tensor_id++;
  t->name_ = name;
  t->dtype_ = dtype;
  t->shape_ = std::move(shape);
  std::vector<std::string> syms;
  for (const DimExpr& d : t->shape_) d.collect_symbols(syms);
  impl_->symbols.insert(syms.begin(), syms.end());
  impl_->tensor_names.insert(name);
  Tensor* raw = t.get();
  impl_->tensors.push_back(std::move(t));
  inputs_.push_back(raw);
  return raw;
}

void Network::mark_output(Tensor* t, const std::string& name) {
  if (!t || !impl_->owns(t)) throw NetworkError("mark_output('" + name + "'): tensor is not part of this network");
  for (auto& [n, _] : outputs_)
    if (n == name) throw NetworkError("network output name '" + name + "' is already used");
  outputs_.emplace_back(name, t);
}

Layer* Network::add_layer(const std::string& name, std::vector<Tensor*> inputs, LayerParams params) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i] || !impl_->owns(inputs[i]))
      throw NetworkError("layer '" + name + "' (" + layer_kind_name(params) + "): input " + std::to_string(i) +
                         (inputs[i] ? " is not a tensor of this network" : " is null"));
  }
  auto outs = detail::infer_outputs(name, inputs, params,
                                    [this](const std::string& p) { return impl_->fresh_symbol(p); });
  for (auto& o : outs) {  // data-dependent symbols named explicitly (a loaded plan) stay reserved
    std::vector<std::string> syms;
    for (const DimExpr& d : o.shape) d.collect_symbols(syms);
    impl_->symbols.insert(syms.begin(), syms.end());
  }
  auto layer = std::make_unique<Layer>();
  layer->id_ = impl_->next_layer_id++;
  layer->name_ = impl_->unique(impl_->layer_names, name);
  layer->origin_ = new_layer_origin_;
  layer->requires_fp32_ = new_layers_fp32_;
  layer->inputs_ = std::move(inputs);
  layer->params_ = std::move(params);
  for (size_t i = 0; i < outs.size(); ++i) {
    auto t = std::make_unique<Tensor>();
    t->id_ = impl_->next_tensor_id++;
    std::string base = outs.size() == 1 ? layer->name_ : layer->name_ + ":" + std::to_string(i);
    t->name_ = impl_->unique(impl_->tensor_names, base);
    t->dtype_ = outs[i].dtype;
    t->shape_ = std::move(outs[i].shape);
    t->producer_ = layer.get();
    layer->outputs_.push_back(t.get());
    impl_->tensors.push_back(std::move(t));
  }
  Layer* raw = layer.get();
  impl_->layer_store.push_back(std::move(layer));
  raw->position_ = impl_->order.size();
  impl_->order.push_back(raw);
  for (Tensor* t : raw->inputs_) add_user(t, raw);
  return raw;
}

void Network::set_layer_params(Layer* l, LayerParams params) {
  std::vector<Tensor*> ins = l->inputs_;
  auto outs = detail::infer_outputs(l->name_, ins, params,
                                    [this](const std::string& p) { return impl_->fresh_symbol(p); });
  if (outs.size() != l->outputs_.size())
    throw NetworkError("layer '" + l->name_ + "': new parameters change the number of outputs");
  l->params_ = std::move(params);
  for (size_t i = 0; i < outs.size(); ++i) {
    l->outputs_[i]->dtype_ = outs[i].dtype;
    l->outputs_[i]->shape_ = std::move(outs[i].shape);
  }
}

Layer* Network::add_constant(const std::string& name, Weights w) {
  return add_layer(name, {}, ConstantParams{std::move(w)});
}
Layer* Network::add_elementwise(const std::string& name, Tensor* a, Tensor* b, BinaryOp op) {
  return add_layer(name, {a, b}, ElementwiseParams{op});
}
Layer* Network::add_unary(const std::string& name, Tensor* x, UnaryOp op) { return add_layer(name, {x}, UnaryParams{op}); }
Layer* Network::add_activation(const std::string& name, Tensor* x, ActivationOp op, double alpha, double beta) {
  return add_layer(name, {x}, ActivationParams{op, alpha, beta});
}
Layer* Network::add_matmul(const std::string& name, Tensor* a, Tensor* b, bool ta, bool tb) {
  MatMulParams p;
  p.transpose_a = ta;
  p.transpose_b = tb;
  return add_layer(name, {a, b}, p);
}
Layer* Network::add_convolution(const std::string& name, Tensor* x, Tensor* weight, Tensor* bias, ConvolutionParams p) {
  std::vector<Tensor*> ins{x, weight};
  p.has_bias = bias != nullptr;
  if (bias) ins.push_back(bias);
  return add_layer(name, ins, std::move(p));
}
Layer* Network::add_pooling(const std::string& name, Tensor* x, PoolingParams p) { return add_layer(name, {x}, std::move(p)); }
Layer* Network::add_reduce(const std::string& name, Tensor* x, ReduceParams p) { return add_layer(name, {x}, std::move(p)); }
Layer* Network::add_softmax(const std::string& name, Tensor* x, int64_t axis, bool log) {
  return add_layer(name, {x}, SoftmaxParams{axis, log});
}
Layer* Network::add_normalization(const std::string& name, const std::vector<Tensor*>& inputs, NormalizationParams p) {
  return add_layer(name, inputs, p);
}
Layer* Network::add_shuffle(const std::string& name, Tensor* x, ShuffleParams p) { return add_layer(name, {x}, std::move(p)); }
Layer* Network::add_concat(const std::string& name, const std::vector<Tensor*>& xs, int64_t axis) {
  return add_layer(name, xs, ConcatParams{axis});
}
Layer* Network::add_slice(const std::string& name, Tensor* x, SliceParams p) { return add_layer(name, {x}, std::move(p)); }
Layer* Network::add_gather(const std::string& name, Tensor* data, Tensor* indices, GatherMode mode, int64_t axis) {
  return add_layer(name, {data, indices}, GatherParams{mode, axis});
}
Layer* Network::add_scatter(const std::string& name, Tensor* data, Tensor* indices, Tensor* updates, ScatterParams p) {
  return add_layer(name, {data, indices, updates}, p);
}
Layer* Network::add_select(const std::string& name, Tensor* c, Tensor* t, Tensor* e) {
  return add_layer(name, {c, t, e}, SelectParams{});
}
Layer* Network::add_cast(const std::string& name, Tensor* x, DataType to) { return add_layer(name, {x}, CastParams{to}); }
Layer* Network::add_shape(const std::string& name, Tensor* x) { return add_layer(name, {x}, ShapeParams{}); }
Layer* Network::add_fill(const std::string& name, FillParams p) { return add_layer(name, {}, std::move(p)); }
Layer* Network::add_pad(const std::string& name, Tensor* x, PadParams p) { return add_layer(name, {x}, std::move(p)); }
Layer* Network::add_resize(const std::string& name, Tensor* x, ResizeParams p) { return add_layer(name, {x}, std::move(p)); }
Layer* Network::add_cumsum(const std::string& name, Tensor* x, CumSumParams p) { return add_layer(name, {x}, p); }
Layer* Network::add_topk(const std::string& name, Tensor* x, TopKParams p) { return add_layer(name, {x}, p); }
Layer* Network::add_identity(const std::string& name, Tensor* x) { return add_layer(name, {x}, IdentityParams{}); }
Layer* Network::add_nonzero(const std::string& name, Tensor* x) { return add_layer(name, {x}, NonZeroParams{}); }
Layer* Network::add_attention(const std::string& name, Tensor* q, Tensor* k, Tensor* v, Tensor* mask, AttentionParams p) {
  std::vector<Tensor*> ins{q, k, v};
  p.has_mask = mask != nullptr;
  if (mask) ins.push_back(mask);
  return add_layer(name, ins, p);
}
Layer* Network::add_plugin(const std::string& name, const std::vector<Tensor*>& inputs, PluginParams p) {
  return add_layer(name, inputs, std::move(p));
}

std::vector<Layer*> Network::layers() const { return impl_->order; }

std::vector<Tensor*> Network::tensors() const {
  std::vector<Tensor*> r(inputs_.begin(), inputs_.end());
  for (Layer* l : impl_->order) r.insert(r.end(), l->outputs().begin(), l->outputs().end());
  return r;
}

std::vector<std::string> Network::input_symbols() const {
  std::vector<std::string> r;
  for (Tensor* t : inputs_)
    for (const DimExpr& d : t->shape()) d.collect_symbols(r);
  return r;
}

bool Network::input_bound(const Shape& s) const {
  std::vector<std::string> syms;
  for (const DimExpr& d : s) d.collect_symbols(syms);
  if (syms.empty()) return true;
  const std::vector<std::string> known = input_symbols();
  return std::all_of(syms.begin(), syms.end(),
                     [&](const std::string& x) { return std::find(known.begin(), known.end(), x) != known.end(); });
}

bool Network::input_bound(const DimExpr& d) const { return input_bound(Shape{d}); }

int Network::tensor_id_bound() const { return impl_->next_tensor_id; }

void Network::verify() const {
  std::set<const Tensor*> defined(inputs_.begin(), inputs_.end());
  std::set<std::string> names;
  for (Layer* l : impl_->order) {
    if (!names.insert(l->name()).second) throw NetworkError("verify: two layers named '" + l->name() + "'");
    for (size_t i = 0; i < l->inputs().size(); ++i) {
      if (!defined.count(l->inputs()[i]))
        throw NetworkError("verify: layer '" + l->name() + "' input " + std::to_string(i) + " (%" +
                           l->inputs()[i]->name() + ") is not defined before it");
    }
    for (Tensor* t : l->outputs()) {
      if (t->producer() != l || !defined.insert(t).second)
        throw NetworkError("verify: tensor %" + t->name() + " is produced more than once");
    }
  }
  if (outputs_.empty()) throw NetworkError("verify: the network has no marked outputs");
  for (auto& [n, t] : outputs_) {
    if (!defined.count(t)) throw NetworkError("verify: output '" + n + "' is not produced by the network");
  }
}

std::string Network::str() const {
  std::string r;
  for (Tensor* t : inputs_) r += "input " + t->str() + "\n";
  for (Layer* l : impl_->order) r += l->str() + "\n";
  for (auto& [n, t] : outputs_) r += "output " + n + " = %" + t->name() + "\n";
  return r;
}

void Network::add_user(Tensor* t, Layer* l) {
  if (std::find(t->users_.begin(), t->users_.end(), l) == t->users_.end()) t->users_.push_back(l);
}

void Network::drop_user(Tensor* t, Layer* l) {
  t->users_.erase(std::remove(t->users_.begin(), t->users_.end(), l), t->users_.end());
}

void Network::replace_all_uses(Tensor* from, Tensor* to) {
  if (from == to) return;
  // The producer of `to` may itself consume `from` (a cast inserted after `from`); it keeps it.
  const std::vector<Layer*> users = from->users_;
  for (Layer* l : users) {
    if (l == to->producer()) continue;
    for (Tensor*& t : l->inputs_)
      if (t == from) t = to;
    drop_user(from, l);
    add_user(to, l);
  }
  for (auto& [n, t] : outputs_)
    if (t == from) t = to;
  // A layer made to stand in for another (a fusion, a layout change, a cast after it) is where
  // that one's work happens now: profiles and errors name the op it came from.
  if (to->producer_ && from->producer_ && to->producer_->origin_.empty())
    to->producer_->origin_ = from->producer_->origin_;
}

void Network::replace_input(Layer* l, size_t i, Tensor* t) {
  if (i >= l->inputs_.size() || !t || !impl_->owns(t))
    throw NetworkError("replace_input('" + l->name() + "', " + std::to_string(i) + "): no such input or not a tensor of this network");
  Tensor* old = l->inputs_[i];
  if (old == t) return;
  l->inputs_[i] = t;
  if (std::find(l->inputs_.begin(), l->inputs_.end(), old) == l->inputs_.end()) drop_user(old, l);
  add_user(t, l);
}

void Network::remove_layer(Layer* l) {
  for (Tensor* t : l->outputs()) {
    if (!consumers(t).empty())
      throw NetworkError("remove_layer('" + l->name() + "'): output %" + t->name() + " is still used");
    for (auto& [n, o] : outputs_)
      if (o == t) throw NetworkError("remove_layer('" + l->name() + "'): output %" + t->name() + " is a network output");
  }
  auto& order = impl_->order;
  if (l->position_ >= order.size() || order[l->position_] != l)
    throw NetworkError("remove_layer: layer is not part of this network");
  order.erase(order.begin() + static_cast<std::ptrdiff_t>(l->position_));
  for (size_t i = l->position_; i < order.size(); ++i) order[i]->position_ = i;
  for (Tensor* t : l->inputs_) drop_user(t, l);
  impl_->layer_names.erase(l->name());
}

std::vector<Layer*> Network::consumers(const Tensor* t) const {
  std::vector<Layer*> r = t->users_;
  std::sort(r.begin(), r.end(), [](const Layer* a, const Layer* b) { return a->position_ < b->position_; });
  return r;
}

void Network::topological_sort() {
  // Stable Kahn's algorithm: among ready layers, the earliest in the current order goes first, so
  // an already-ordered network is unchanged. A layer also depends on the layer that binds a
  // data-dependent size its outputs have (NonZero's count): a Fill of [count] has no tensor
  // input, yet cannot run before the count is known.
  const auto& order = impl_->order;
  std::map<const Tensor*, size_t> producer_pos;
  std::map<std::string, size_t> symbol_binder;
  for (size_t i = 0; i < order.size(); ++i) {
    for (Tensor* t : order[i]->outputs()) producer_pos[t] = i;
    if (const auto* nz = std::get_if<NonZeroParams>(&order[i]->params())) symbol_binder[nz->count_symbol] = i;
  }
  std::vector<int> pending(order.size(), 0);
  std::vector<std::vector<size_t>> users(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    std::set<size_t> deps;
    for (Tensor* t : order[i]->inputs()) {
      auto it = producer_pos.find(t);
      if (it != producer_pos.end()) deps.insert(it->second);
    }
    if (!symbol_binder.empty()) {
      std::vector<std::string> syms;
      for (Tensor* t : order[i]->outputs())
        for (const DimExpr& d : t->shape()) d.collect_symbols(syms);
      for (const std::string& sym : syms)
        if (auto it = symbol_binder.find(sym); it != symbol_binder.end() && it->second != i) deps.insert(it->second);
    }
    pending[i] = static_cast<int>(deps.size());
    for (size_t d : deps) users[d].push_back(i);
  }
  std::set<size_t> ready;
  for (size_t i = 0; i < order.size(); ++i)
    if (pending[i] == 0) ready.insert(i);
  std::vector<Layer*> sorted;
  while (!ready.empty()) {
    size_t i = *ready.begin();
    ready.erase(ready.begin());
    sorted.push_back(order[i]);
    for (size_t u : users[i])
      if (--pending[u] == 0) ready.insert(u);
  }
  if (sorted.size() != order.size()) throw NetworkError("the network has a cycle");
  impl_->order = std::move(sorted);
  for (size_t i = 0; i < impl_->order.size(); ++i) impl_->order[i]->position_ = i;
}

// ---- plugin registry ---------------------------------------------------------------------------

namespace {
std::mutex& plugin_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, std::unique_ptr<PluginKernel>>& plugin_map() {
  static std::map<std::string, std::unique_ptr<PluginKernel>> m;
  return m;
}
}  // namespace

void register_plugin(const std::string& name, PluginKernel kernel) {
  if (name.empty()) throw NetworkError("register_plugin: empty name");
  if (!kernel.infer) throw NetworkError("register_plugin('" + name + "'): the plugin needs an infer function");
  std::lock_guard<std::mutex> lock(plugin_mutex());
  // Registered kernels are never freed: layers and contexts hold pointers to them. Re-registering
  // a name keeps the old object alive and points the name at the new one.
  static std::vector<std::unique_ptr<PluginKernel>> retired;
  auto& m = plugin_map();
  auto it = m.find(name);
  if (it != m.end()) retired.push_back(std::move(it->second));
  m[name] = std::make_unique<PluginKernel>(std::move(kernel));
}

const PluginKernel* find_plugin(const std::string& name) {
  std::lock_guard<std::mutex> lock(plugin_mutex());
  auto it = plugin_map().find(name);
  return it == plugin_map().end() ? nullptr : it->second.get();
}

}  // namespace kiln::engine
