// The converter registry and the Value type converters exchange.
#include "conversion/registry.h"

#include <algorithm>
#include <sstream>

#include "ir/schema.h"

namespace kiln::conversion {

// ---- Value ---------------------------------------------------------------------------------------

namespace {
const char* alternative_name(const Value& v) {
  static const char* names[] = {"None",   "bool",   "int",          "float",    "str",  "dtype",
                                "device", "memory_format", "layout", "Tensor", "SymInt", "list"};
  return names[v.v.index()];
}
[[noreturn]] void wrong(const Value& v, const char* wanted) {
  throw ConversionError(std::string("expected ") + wanted + ", got " + alternative_name(v) + " (" + v.debug() + ")");
}
}  // namespace

engine::Tensor* Value::tensor() const {
  if (auto* t = std::get_if<engine::Tensor*>(&v)) return *t;
  wrong(*this, "a tensor");
}

int64_t Value::to_int() const {
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* b = std::get_if<bool>(&v)) return *b ? 1 : 0;
  if (auto* d = std::get_if<engine::DimExpr>(&v)) {
    if (auto c = d->constant()) return *c;
    wrong(*this, "a constant int");
  }
  wrong(*this, "an int");
}

double Value::to_double() const {
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  if (auto* b = std::get_if<bool>(&v)) return *b ? 1.0 : 0.0;
  if (auto* d = std::get_if<engine::DimExpr>(&v))
    if (auto c = d->constant()) return static_cast<double>(*c);
  wrong(*this, "a number");
}

engine::DimExpr Value::to_dim() const {
  if (auto* d = std::get_if<engine::DimExpr>(&v)) return *d;
  if (auto* i = std::get_if<int64_t>(&v)) return engine::DimExpr(*i);
  if (auto* b = std::get_if<bool>(&v)) return engine::DimExpr(int64_t{*b});
  wrong(*this, "an int or SymInt");
}

bool Value::to_bool() const {
  if (auto* b = std::get_if<bool>(&v)) return *b;
  if (auto* i = std::get_if<int64_t>(&v)) return *i != 0;
  wrong(*this, "a bool");
}

const std::string& Value::str() const {
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  wrong(*this, "a str");
}

const Value::List& Value::list() const {
  if (auto* l = std::get_if<List>(&v)) return *l;
  wrong(*this, "a list");
}

std::vector<int64_t> Value::to_ints() const {
  if (!is_list()) return {to_int()};
  std::vector<int64_t> out;
  for (const Value& e : list()) out.push_back(e.to_int());
  return out;
}

std::vector<engine::DimExpr> Value::to_dims() const {
  if (!is_list()) return {to_dim()};
  std::vector<engine::DimExpr> out;
  for (const Value& e : list()) out.push_back(e.to_dim());
  return out;
}

std::string Value::debug() const {
  std::ostringstream os;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) os << "None";
        else if constexpr (std::is_same_v<T, bool>) os << (x ? "True" : "False");
        else if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double>) os << x;
        else if constexpr (std::is_same_v<T, std::string>) os << '\'' << x << '\'';
        else if constexpr (std::is_same_v<T, ir::ScalarType>) os << ir::to_string(x);
        else if constexpr (std::is_same_v<T, ir::Device>) os << x.str();
        else if constexpr (std::is_same_v<T, ir::MemoryFormat> || std::is_same_v<T, ir::Layout>) os << ir::to_string(x);
        else if constexpr (std::is_same_v<T, engine::Tensor*>) os << (x ? x->str() : std::string("<null tensor>"));
        else if constexpr (std::is_same_v<T, engine::DimExpr>) os << x.str();
        else {
          os << '[';
          for (size_t i = 0; i < x.size(); ++i) os << (i ? ", " : "") << x[i].debug();
          os << ']';
        }
      },
      v);
  return os.str();
}

// ---- enums ---------------------------------------------------------------------------------------

const char* to_string(ConverterPriority p) { return p == ConverterPriority::HIGH ? "HIGH" : "STANDARD"; }

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::kConvertible: return "convertible";
    case Verdict::kNoConverter: return "no converter";
    case Verdict::kValidatorRejected: return "validator rejected";
    case Verdict::kDynamicShape: return "dynamic shape unsupported";
    case Verdict::kTorchExecuted: return "torch_executed_ops";
    case Verdict::kNotAnOp: return "not an op";
  }
  return "?";
}

// ---- registry ------------------------------------------------------------------------------------

ConverterRegistry& ConverterRegistry::global() {
  static ConverterRegistry registry;
  return registry;
}

void ConverterRegistry::add(ConverterSpec spec) {
  if (spec.target.empty()) throw ConversionError("converter registered without a target");
  if (!spec.fn) throw ConversionError("converter for " + spec.target + " has no function");
  std::lock_guard<std::mutex> lock(mutex_);
  auto& list = by_target_[spec.target];
  auto p = std::make_unique<ConverterSpec>(std::move(spec));
  // The seed's rule: HIGH goes before every existing candidate (so the newest HIGH wins),
  // STANDARD after all of them.
  if (p->priority == ConverterPriority::HIGH) list.insert(list.begin(), std::move(p));
  else list.push_back(std::move(p));
}

std::vector<const ConverterSpec*> ConverterRegistry::candidates(const std::string& target) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<const ConverterSpec*> out;
  auto it = by_target_.find(target);
  if (it != by_target_.end())
    for (const auto& c : it->second) out.push_back(c.get());
  return out;
}

std::vector<std::string> ConverterRegistry::targets() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [t, list] : by_target_)
    if (!list.empty()) out.push_back(t);
  return out;
}

size_t ConverterRegistry::remove_by_origin(const std::string& origin_prefix) {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (auto& [t, list] : by_target_) {
    auto it = std::remove_if(list.begin(), list.end(), [&](const std::unique_ptr<ConverterSpec>& c) {
      return c->origin.rfind(origin_prefix, 0) == 0;
    });
    n += static_cast<size_t>(list.end() - it);
    list.erase(it, list.end());
  }
  return n;
}

namespace {
bool meta_has_symbol(const ir::TensorMeta& m) {
  for (const auto& s : m.sizes)
    if (!s.is_constant()) return true;
  return false;
}
bool value_meta_dynamic(const ir::ValueMeta& m) {
  switch (m.kind) {
    case ir::ValueMeta::Kind::Tensor: return meta_has_symbol(m.tensor);
    case ir::ValueMeta::Kind::Tuple:
    case ir::ValueMeta::Kind::TensorList:
      for (const auto& t : m.tuple)
        if (t && meta_has_symbol(*t)) return true;
      return false;
    default: return false;
  }
}
}  // namespace

bool node_has_dynamic_shape(const ir::Node& node) {
  if (value_meta_dynamic(node.meta)) return true;
  for (const ir::Node* in : node.inputs())
    if (in->meta.is_tensor() && meta_has_symbol(in->meta.tensor)) return true;
  return false;
}

Capability ConverterRegistry::lookup(const ir::Node& node, const CompilationSettings& settings) const {
  Capability cap;
  if (node.kind != ir::NodeKind::CallFunction) {
    cap.verdict = Verdict::kNotAnOp;
    cap.reason = std::string(ir::to_string(node.kind)) + " node";
    return cap;
  }
  if (settings.torch_executed_ops.count(node.target)) {
    cap.verdict = Verdict::kTorchExecuted;
    cap.reason = "in torch_executed_ops";
    return cap;
  }
  std::vector<const ConverterSpec*> cands = candidates(node.target);
  const auto why_left = node.metadata.find(ir::kUnconvertedReason);  // a lowering pass's own reason
  const std::string left = why_left == node.metadata.end() ? "" : " (" + why_left->second + ")";
  if (cands.empty()) {
    cap.verdict = Verdict::kNoConverter;
    cap.reason = "no converter for " + node.target + left;
    return cap;
  }
  const bool dynamic = node_has_dynamic_shape(node);
  std::vector<std::string> rejections;
  bool any_validator_passed = false;
  for (const ConverterSpec* c : cands) {
    bool ok = true;
    std::string why;
    if (c->validator) {
      try {
        ok = c->validator(node, settings);
      } catch (const ValidatorError& e) {
        throw ValidatorError("node %" + node.name + " (" + node.target + "): " + e.what());
      } catch (const std::exception& e) {  // a built-in validator that cannot read the node rejects it
        ok = false;
        why = std::string(": ") + e.what();
      }
    }
    const std::string who = c->validator_name.empty() ? c->origin : c->validator_name;
    if (!ok) {
      rejections.push_back("validator " + who + " rejected" + why);
      continue;
    }
    any_validator_passed = true;
    if (dynamic && !c->supports_dynamic_shapes && !settings.assume_dynamic_shape_support) {
      rejections.push_back(std::string(to_string(c->priority)) + " converter (" + c->origin +
                           ") does not support dynamic shapes");
      continue;
    }
    cap.verdict = Verdict::kConvertible;
    cap.converter = c;
    cap.reason = std::string(to_string(c->priority)) + " converter (" + c->origin + ")";
    return cap;
  }
  cap.verdict = any_validator_passed ? Verdict::kDynamicShape : Verdict::kValidatorRejected;
  std::string reason;
  for (size_t i = 0; i < rejections.size(); ++i) reason += (i ? "; " : "") + rejections[i];
  cap.reason = reason + left;
  return cap;
}

}  // namespace kiln::conversion
