// How a node becomes a dispatcher call: the op's c10 schema (not kiln's table) decides, argument
// by argument, what IValue each IR argument becomes; missing arguments take the schema defaults.
// The same code runs against Debian's libtorch 1.13 and PyTorch 2.x: only APIs both have are used.
#include "torch_bridge/torch_bridge.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>

namespace kiln::torch_bridge {

using program::HostTensor;
using program::RtValue;

namespace {

c10::ScalarType to_c10(ir::ScalarType t) {
  using S = ir::ScalarType;
  switch (t) {
    case S::Byte: return c10::ScalarType::Byte;
    case S::Char: return c10::ScalarType::Char;
    case S::Short: return c10::ScalarType::Short;
    case S::Int: return c10::ScalarType::Int;
    case S::Long: return c10::ScalarType::Long;
    case S::Half: return c10::ScalarType::Half;
    case S::Float: return c10::ScalarType::Float;
    case S::Double: return c10::ScalarType::Double;
    case S::ComplexHalf: return c10::ScalarType::ComplexHalf;
    case S::ComplexFloat: return c10::ScalarType::ComplexFloat;
    case S::ComplexDouble: return c10::ScalarType::ComplexDouble;
    case S::Bool: return c10::ScalarType::Bool;
    case S::BFloat16: return c10::ScalarType::BFloat16;
    default: throw std::runtime_error(std::string("dtype ") + ir::to_string(t) + " is not supported by the libtorch bridge");
  }
}

ir::ScalarType from_c10(c10::ScalarType t) {
  using S = ir::ScalarType;
  switch (t) {
    case c10::ScalarType::Byte: return S::Byte;
    case c10::ScalarType::Char: return S::Char;
    case c10::ScalarType::Short: return S::Short;
    case c10::ScalarType::Int: return S::Int;
    case c10::ScalarType::Long: return S::Long;
    case c10::ScalarType::Half: return S::Half;
    case c10::ScalarType::Float: return S::Float;
    case c10::ScalarType::Double: return S::Double;
    case c10::ScalarType::Bool: return S::Bool;
    case c10::ScalarType::BFloat16: return S::BFloat16;
    default: throw std::runtime_error(std::string("PyTorch returned dtype ") + c10::toString(t) + ", which kiln does not handle");
  }
}

int64_t layout_to_c10(ir::Layout l) {
  switch (l) {
    case ir::Layout::Strided: return static_cast<int64_t>(c10::Layout::Strided);
    case ir::Layout::Sparse: return static_cast<int64_t>(c10::Layout::Sparse);
    case ir::Layout::SparseCsr: return static_cast<int64_t>(c10::Layout::SparseCsr);
    case ir::Layout::SparseCsc: return static_cast<int64_t>(c10::Layout::SparseCsc);
    case ir::Layout::SparseBsr: return static_cast<int64_t>(c10::Layout::SparseBsr);
    case ir::Layout::SparseBsc: return static_cast<int64_t>(c10::Layout::SparseBsc);
    case ir::Layout::Mkldnn: return static_cast<int64_t>(c10::Layout::Mkldnn);
  }
  return 0;
}

int64_t memory_format_to_c10(ir::MemoryFormat f) {
  switch (f) {
    case ir::MemoryFormat::Contiguous: return static_cast<int64_t>(c10::MemoryFormat::Contiguous);
    case ir::MemoryFormat::ChannelsLast: return static_cast<int64_t>(c10::MemoryFormat::ChannelsLast);
    case ir::MemoryFormat::ChannelsLast3d: return static_cast<int64_t>(c10::MemoryFormat::ChannelsLast3d);
    case ir::MemoryFormat::Preserve: return static_cast<int64_t>(c10::MemoryFormat::Preserve);
  }
  return 0;
}

c10::DeviceType device_type(engine::DeviceKind d) { return d == engine::DeviceKind::kCUDA ? at::kCUDA : at::kCPU; }

// A kiln tensor -> at::Tensor on `target`: no copy where it already is (the at::Tensor keeps its
// bytes alive; a CUDA pointer's device is read from the pointer), else copied there.
at::Tensor to_at(const HostTensor& t, c10::DeviceType target) {
  const auto opts = at::TensorOptions().dtype(to_c10(t.dtype)).device(device_type(t.device));
  at::Tensor a;
  if (t.numel() == 0) {
    a = at::empty(t.dims, opts);
  } else {
    std::shared_ptr<void> owner = t.owner;
    a = at::from_blob(t.data, t.dims, [owner](void*) mutable { owner.reset(); }, opts);
  }
  return a.device().type() == target ? a : a.to(target);
}

// at::Tensor -> kiln tensor on `target`, dense; no copy when it already is.
HostTensor from_at(at::Tensor t, c10::DeviceType target) {
  if (t.device().type() != target) t = t.to(target);
  t = t.contiguous();
  std::vector<int64_t> dims(t.sizes().begin(), t.sizes().end());
  auto holder = std::make_shared<at::Tensor>(t);
  HostTensor r = HostTensor::view(from_c10(t.scalar_type()), std::move(dims), t.data_ptr(), holder);
  r.device = target == at::kCUDA ? engine::DeviceKind::kCUDA : engine::DeviceKind::kCPU;
  return r;
}

RtValue from_ivalue(const c10::IValue& v, c10::DeviceType target) {
  if (v.isTensor()) return from_at(v.toTensor(), target);
  if (v.isNone()) return RtValue();
  if (v.isBool()) return v.toBool();
  if (v.isInt()) return v.toInt();
  if (v.isDouble()) return v.toDouble();
  if (v.isTensorList()) {
    RtValue::List l;
    for (const at::Tensor& t : v.toTensorVector()) l.push_back(from_at(t, target));
    return l;
  }
  if (v.isTuple()) {
    RtValue::List l;
    for (const auto& e : v.toTupleRef().elements()) l.push_back(from_ivalue(e, target));
    return l;
  }
  if (v.isList()) {
    RtValue::List l;
    for (const c10::IValue& e : v.toListRef()) l.push_back(from_ivalue(e, target));
    return l;
  }
  throw std::runtime_error("PyTorch returned a " + v.tagKind() + ", which kiln does not handle");
}

// Builds the stack for one node. `resolve` gives the run-time value of an argument node.
class StackBuilder {
 public:
  StackBuilder(const ir::Node& node, const std::vector<RtValue>& inputs, c10::DeviceType device)
      : node_(node), inputs_(inputs), refs_(node.inputs()), device_(device) {}

  c10::IValue arg(const ir::Argument& a, const c10::TypePtr& type) const {
    const c10::TypeKind k = type->kind();
    if (k == c10::TypeKind::OptionalType) {
      if (a.is_none()) return c10::IValue();
      if (a.is_node() && value(a.node()).is_none()) return c10::IValue();
      return arg(a, type->castRaw<c10::OptionalType>()->getElementType());
    }
    if (k == c10::TypeKind::ListType) return list(a, type->castRaw<c10::ListType>()->getElementType());
    if (a.is_node()) return runtime(value(a.node()), type);
    if (a.is_none()) return c10::IValue();
    switch (k) {
      case c10::TypeKind::IntType:
      case c10::TypeKind::SymIntType:
        if (a.is<ir::ScalarType>()) return static_cast<int64_t>(to_c10(a.as<ir::ScalarType>()));
        if (a.is<ir::Layout>()) return layout_to_c10(a.as<ir::Layout>());
        if (a.is<ir::MemoryFormat>()) return memory_format_to_c10(a.as<ir::MemoryFormat>());
        if (a.is<bool>()) return static_cast<int64_t>(a.as<bool>());
        return a.as<int64_t>();
      case c10::TypeKind::FloatType:
        return a.is<double>() ? a.as<double>() : static_cast<double>(a.as<int64_t>());
      case c10::TypeKind::BoolType:
        return a.is<bool>() ? a.as<bool>() : a.as<int64_t>() != 0;
      case c10::TypeKind::StringType:
        return a.as<std::string>();
      case c10::TypeKind::DeviceObjType:
        return c10::Device(device_);  // where this run keeps its values, whatever the export said
      case c10::TypeKind::NumberType:
      case c10::TypeKind::AnyType:
        if (a.is<double>()) return a.as<double>();
        if (a.is<bool>()) return a.as<bool>();
        if (a.is<int64_t>()) return a.as<int64_t>();
        if (a.is<std::string>()) return a.as<std::string>();
        break;
      case c10::TypeKind::TensorType:
        // A number where the schema wants a Tensor (torch.export writes `mul.Tensor(x, 0.1)`):
        // PyTorch's own Python binding passes it as a 0-dim "wrapped number" tensor, which type
        // promotion treats like a Python scalar (x stays float16, an int stays int).
        if (a.is<double>() || a.is<int64_t>() || a.is<bool>()) {
          at::Tensor t = a.is<double>()    ? at::scalar_tensor(a.as<double>(), at::kDouble)
                         : a.is<int64_t>() ? at::scalar_tensor(a.as<int64_t>(), at::kLong)
                                           : at::scalar_tensor(a.as<bool>(), at::kBool);
          t.unsafeGetTensorImpl()->set_wrapped_number(true);
          return t;
        }
        break;
      case c10::TypeKind::GeneratorType:
        return c10::IValue();
      default:
        if (a.is<ir::ScalarType>()) return static_cast<int64_t>(to_c10(a.as<ir::ScalarType>()));
        if (a.is<ir::Layout>()) return layout_to_c10(a.as<ir::Layout>());
        if (a.is<ir::MemoryFormat>()) return memory_format_to_c10(a.as<ir::MemoryFormat>());
        break;
    }
    throw std::runtime_error("cannot pass " + a.str() + " as " + type->str());
  }

 private:
  const RtValue& value(const ir::Node* n) const {
    auto it = std::find(refs_.begin(), refs_.end(), n);
    if (it == refs_.end() || static_cast<size_t>(it - refs_.begin()) >= inputs_.size())
      throw std::runtime_error("no value given for %" + n->name);
    return inputs_[it - refs_.begin()];
  }

  c10::IValue runtime(const RtValue& v, const c10::TypePtr& type) const {
    const c10::TypeKind k = type->kind();
    if (v.is_none()) return c10::IValue();
    if (v.is_tensor()) {
      if (k == c10::TypeKind::TensorType || k == c10::TypeKind::AnyType) return to_at(v.tensor(), device_);
      // A 0-d tensor where a number is expected (Scalar from a tensor value).
      return to_at(v.tensor(), at::kCPU).item().toDouble();
    }
    if (v.is_list()) {
      if (k == c10::TypeKind::ListType) return list_of(v.list(), type->castRaw<c10::ListType>()->getElementType());
      throw std::runtime_error("a list was given where " + type->str() + " is expected");
    }
    if (k == c10::TypeKind::TensorType) {
      // A number computed at run time where the schema wants a Tensor (`mul.Tensor(x, sym_size)` with
      // a data-dependent size): a wrapped-number tensor, as for a constant number (see arg()).
      at::Tensor t = std::holds_alternative<double>(v.v) ? at::scalar_tensor(v.to_double(), at::kDouble)
                     : std::holds_alternative<bool>(v.v) ? at::scalar_tensor(std::get<bool>(v.v), at::kBool)
                                                         : at::scalar_tensor(v.to_int(), at::kLong);
      t.unsafeGetTensorImpl()->set_wrapped_number(true);
      return t;
    }
    if (k == c10::TypeKind::FloatType) return v.to_double();
    if (k == c10::TypeKind::BoolType) return v.to_int() != 0;
    if (std::holds_alternative<double>(v.v)) return v.to_double();
    if (std::holds_alternative<bool>(v.v) && k != c10::TypeKind::IntType && k != c10::TypeKind::SymIntType)
      return std::get<bool>(v.v);
    return v.to_int();
  }

  c10::IValue list_of(const RtValue::List& l, const c10::TypePtr& elem) const {
    return build_list(l.size(), elem, [&](size_t i, const c10::TypePtr& t) { return runtime(l[i], t); });
  }

  c10::IValue list(const ir::Argument& a, const c10::TypePtr& elem) const {
    if (a.is_node()) {  // a list-valued node (split's result) or a single tensor for Tensor[]
      const RtValue& v = value(a.node());
      if (v.is_list()) return list_of(v.list(), elem);
      return list_of({v}, elem);
    }
    if (!a.is_list()) {  // int[1] given as one int
      ir::Argument::List one{a};
      return list(ir::Argument(one), elem);
    }
    const auto& items = a.list();
    return build_list(items.size(), elem, [&](size_t i, const c10::TypePtr& t) { return arg(items[i], t); });
  }

  template <class F>
  static c10::IValue build_list(size_t n, const c10::TypePtr& elem, F&& get) {
    const c10::TypeKind k = elem->kind();
    if (k == c10::TypeKind::IntType || k == c10::TypeKind::SymIntType) {
      c10::List<int64_t> l;
      for (size_t i = 0; i < n; ++i) l.push_back(get(i, c10::IntType::get()).toInt());
      return l;
    }
    if (k == c10::TypeKind::FloatType) {
      c10::List<double> l;
      for (size_t i = 0; i < n; ++i) l.push_back(get(i, c10::FloatType::get()).toDouble());
      return l;
    }
    if (k == c10::TypeKind::BoolType) {
      c10::List<bool> l;
      for (size_t i = 0; i < n; ++i) l.push_back(get(i, c10::BoolType::get()).toBool());
      return l;
    }
    if (k == c10::TypeKind::TensorType) {
      c10::List<at::Tensor> l;
      for (size_t i = 0; i < n; ++i) l.push_back(get(i, c10::TensorType::get()).toTensor());
      return l;
    }
    if (k == c10::TypeKind::OptionalType &&
        elem->castRaw<c10::OptionalType>()->getElementType()->kind() == c10::TypeKind::TensorType) {
      c10::List<c10::optional<at::Tensor>> l;
      for (size_t i = 0; i < n; ++i) {
        c10::IValue v = get(i, elem);
        l.push_back(v.isNone() ? c10::optional<at::Tensor>() : c10::optional<at::Tensor>(v.toTensor()));
      }
      return l;
    }
    throw std::runtime_error("lists of " + elem->str() + " are not supported");
  }

  const ir::Node& node_;
  const std::vector<RtValue>& inputs_;
  std::vector<ir::Node*> refs_;
  c10::DeviceType device_;
};

// "aten.add.Tensor" -> {"aten::add", "Tensor"}; ".default" is the empty overload.
c10::OperatorName op_name(const std::string& target) {
  const auto first = target.find('.');
  const auto last = target.rfind('.');
  if (first == std::string::npos || first == last) throw std::runtime_error("'" + target + "' is not an op overload");
  std::string overload = target.substr(last + 1);
  if (overload == "default") overload.clear();
  return c10::OperatorName(target.substr(0, first) + "::" + target.substr(first + 1, last - first - 1), overload);
}

RtValue run(const ir::Node& node, const std::vector<RtValue>& inputs, c10::DeviceType device) {
  auto handle = c10::Dispatcher::singleton().findSchema(op_name(node.target));
  if (!handle) throw std::runtime_error("libtorch " + torch_version() + " has no op " + node.target);
  const c10::FunctionSchema& schema = handle->schema();
  StackBuilder builder(node, inputs, device);
  torch::jit::Stack stack;
  size_t positional = 0;
  for (const c10::Argument& a : schema.arguments()) {
    const ir::Argument* given = nullptr;
    if (!a.kwarg_only() && positional < node.args.size()) given = &node.args[positional];
    if (!a.kwarg_only()) ++positional;
    if (!given) given = node.kwarg(a.name());
    try {
      if (given) stack.push_back(builder.arg(*given, a.type()));
      else if (a.default_value()) stack.push_back(*a.default_value());
      else if (a.type()->kind() == c10::TypeKind::OptionalType) stack.emplace_back();
      else throw std::runtime_error("missing (no default in the schema)");
    } catch (const std::exception& e) {
      throw std::runtime_error("argument '" + a.name() + "' of " + node.target + ": " + e.what());
    }
  }
  if (positional < node.args.size())
    throw std::runtime_error(std::to_string(node.args.size()) + " positional arguments given, the schema takes " +
                             std::to_string(positional));
  c10::InferenceMode guard;
  handle->callBoxed(&stack);
  RtValue result;
  if (stack.size() == 1) {
    result = from_ivalue(stack[0], device);
  } else {
    RtValue::List out;
    for (const auto& v : stack) out.push_back(from_ivalue(v, device));
    result = std::move(out);
  }
  // PyTorch queued the work on its current stream; kiln's next step runs on its own.
  if (device == at::kCUDA) torch::cuda::synchronize();
  return result;
}

class TorchExecutor final : public program::FallbackExecutor {
 public:
  std::string name() const override { return "libtorch " + torch_version(); }
  bool has_op(const std::string& target) const override {
    try {
      return c10::Dispatcher::singleton().findSchema(op_name(target)).has_value();
    } catch (const std::exception&) {
      return false;
    }
  }
  bool runs_on(engine::DeviceKind device) const override {
    return device == engine::DeviceKind::kCPU || at::globalContext().hasCUDA();
  }
  RtValue run(const ir::Node& node, const std::vector<RtValue>& inputs, engine::DeviceKind device) override {
    if (!runs_on(device)) throw std::runtime_error("libtorch " + torch_version() + " cannot run ops on the GPU here");
    try {
      return torch_bridge::run(node, inputs, device_type(device));
    } catch (const c10::Error& e) {  // PyTorch's own message without its C++ backtrace
      throw std::runtime_error(e.msg());
    }
  }
};

}  // namespace

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

std::shared_ptr<program::FallbackExecutor> make_executor() { return std::make_shared<TorchExecutor>(); }

void install() {
  static std::once_flag once;
  std::call_once(once, [] { program::set_fallback_executor(make_executor()); });
}

std::vector<HostTensor> run_node(const ir::Node& node, const std::vector<RtValue>& inputs) {
  TorchExecutor exec;
  RtValue v = exec.run(node, inputs, engine::DeviceKind::kCPU);
  std::vector<HostTensor> out;
  if (v.is_tensor()) out.push_back(v.tensor());
  else if (v.is_list())
    for (const auto& e : v.list())
      if (e.is_tensor()) out.push_back(e.tensor());
  return out;
}

}  // namespace kiln::torch_bridge
