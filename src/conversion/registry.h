// The converter registry, with the seed's semantics to the letter:
//  - candidates per op overload, in order; HIGH is inserted before every existing candidate,
//    STANDARD appended after them;
//  - a node's converter is the first candidate whose validator passes AND that can take the node's
//    dynamic shapes (the node has no symbolic dim, or the candidate supports dynamic shapes, or
//    settings.assume_dynamic_shape_support);
//  - no such candidate, or the op in torch_executed_ops: the node runs in PyTorch.
// One registry, shared by C++ and Python converters. Built-ins enter through register_builtin_converters().
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "conversion/settings.h"
#include "engine/network.h"
#include "ir/graph.h"

namespace kiln::conversion {

class ConversionContext;

// A converter's argument or result: network tensors for tensors, DimExpr for symbolic ints,
// plain values otherwise, lists for lists and tuples.
struct Value {
  using List = std::vector<Value>;
  std::variant<std::monostate, bool, int64_t, double, std::string, ir::ScalarType, ir::Device,
               ir::MemoryFormat, ir::Layout, engine::Tensor*, engine::DimExpr, List>
      v;
  Value() = default;
  template <class T>
  Value(T x) : v(std::move(x)) {}  // NOLINT
  Value(int x) : v(int64_t{x}) {}  // NOLINT
  Value(const char* s) : v(std::string(s)) {}  // NOLINT
  bool is_none() const { return std::holds_alternative<std::monostate>(v); }
  bool is_tensor() const { return std::holds_alternative<engine::Tensor*>(v); }
  bool is_list() const { return std::holds_alternative<List>(v); }
  template <class T> bool is() const { return std::holds_alternative<T>(v); }
  engine::Tensor* tensor() const;    // throws ConversionError naming what it holds otherwise
  int64_t to_int() const;            // int, bool, or a constant DimExpr
  double to_double() const;          // int, double, bool or a constant DimExpr
  engine::DimExpr to_dim() const;    // int or DimExpr
  bool to_bool() const;
  const std::string& str() const;
  const List& list() const;
  std::vector<int64_t> to_ints() const;          // a list of ints (or one int, repeated as 1 element)
  std::vector<engine::DimExpr> to_dims() const;  // a list of ints / DimExprs
  std::string debug() const;
};
using Kwargs = std::vector<std::pair<std::string, Value>>;

struct ConversionError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A user's validator raised (rather than returned false): the registry reports it instead of
// treating the node as rejected, so a bug in a validator is never a silent fallback.
struct ValidatorError : ConversionError {
  using ConversionError::ConversionError;
};

using ConverterFn = std::function<Value(ConversionContext& ctx, const std::string& target,
                                        const std::vector<Value>& args, const Kwargs& kwargs,
                                        const std::string& name)>;
using CapabilityValidator = std::function<bool(const ir::Node& node, const CompilationSettings& settings)>;

enum class ConverterPriority : uint8_t { STANDARD, HIGH };
const char* to_string(ConverterPriority p);

struct ConverterSpec {
  std::string target;                        // "aten.gelu.default"
  ConverterFn fn;
  CapabilityValidator validator;             // empty = always true
  std::string validator_name;                // shown by `kiln converters`; "" when none
  bool supports_dynamic_shapes = false;
  ConverterPriority priority = ConverterPriority::STANDARD;
  bool requires_output_allocator = false;
  std::string origin = "builtin";            // "builtin", "c++", "python:<module>.<fn>"
};

enum class Verdict : uint8_t { kConvertible, kNoConverter, kValidatorRejected, kDynamicShape, kTorchExecuted, kNotAnOp };
const char* to_string(Verdict v);

struct Capability {
  Verdict verdict = Verdict::kNoConverter;
  const ConverterSpec* converter = nullptr;  // when convertible
  std::string reason;                        // human text: "validator rejected (approximate=none)"
};

class ConverterRegistry {
 public:
  static ConverterRegistry& global();

  void add(ConverterSpec spec);                         // applies the priority rule
  std::vector<const ConverterSpec*> candidates(const std::string& target) const;
  std::vector<std::string> targets() const;
  // Verdict for one node; runs validators (never converters).
  Capability lookup(const ir::Node& node, const CompilationSettings& settings) const;
  // Removes converters whose origin starts with `origin_prefix` (tests, Python module reload).
  size_t remove_by_origin(const std::string& origin_prefix);

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<std::unique_ptr<ConverterSpec>>> by_target_;
};

// True when the node's output or a tensor input has a symbolic dim.
bool node_has_dynamic_shape(const ir::Node& node);

// Registers every built-in converter once (idempotent). Called explicitly by the program layer,
// the CLI and the Python module; never from static initializers.
void register_builtin_converters();

// C++ registration in one call, e.g.
//   KILN_REGISTER_CONVERTER("aten.gelu.default", my_gelu, .priority = ConverterPriority::HIGH);
#define KILN_REGISTER_CONVERTER(TARGET, FN, ...)                                        \
  ::kiln::conversion::ConverterRegistry::global().add(                                \
      ::kiln::conversion::ConverterSpec{.target = TARGET, .fn = FN, __VA_ARGS__})

}  // namespace kiln::conversion
