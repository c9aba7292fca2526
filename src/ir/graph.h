// kiln's ATen-level graph, modelled on torch.fx: a list of nodes in topological order, each a
// placeholder (user input), get_attr (a program weight), call_function (an op overload such as
// `aten.gelu.default`, a symbolic-int op such as `_operator.mul`, or `getitem`) or output.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "ir/types.h"

namespace kiln::ir {

class Node;

struct None {
  bool operator==(const None&) const = default;
};

// A typed argument of a call. Tensors, optional tensors and symbolic ints refer to the node that
// produces them (a `Node*`); lists may mix (`[%sym_size, -1]`, `[%w, None]`).
struct Argument {
  using List = std::vector<Argument>;
  std::variant<None, bool, int64_t, double, std::string, ScalarType, Device, MemoryFormat, Layout,
               Node*, List>
      value;

  Argument() = default;
  template <class T>
  Argument(T v) : value(std::move(v)) {}  // NOLINT: implicit from each alternative
  Argument(int v) : value(int64_t{v}) {}  // NOLINT
  Argument(const char* s) : value(std::string(s)) {}  // NOLINT

  bool is_none() const { return std::holds_alternative<None>(value); }
  bool is_node() const { return std::holds_alternative<Node*>(value); }
  bool is_list() const { return std::holds_alternative<List>(value); }
  template <class T> bool is() const { return std::holds_alternative<T>(value); }
  template <class T> const T& as() const { return std::get<T>(value); }
  Node* node() const { return std::get<Node*>(value); }
  const List& list() const { return std::get<List>(value); }
  // Every node this argument refers to, lists included.
  void for_each_node(const std::function<void(Node*)>& fn) const;
  std::string str() const;  // fx style: `%x`, `[2, 3]`, `None`, `tanh`, `torch.float32`
};

enum class NodeKind : uint8_t { Placeholder, GetAttr, CallFunction, Output };
// The Node::metadata key where a lowering pass that leaves a node to PyTorch says why (for
// example complex_as_real); the converter registry adds it to the node's fallback reason.
inline constexpr const char* kUnconvertedReason = "kiln_unconverted_reason";
const char* to_string(NodeKind k);

// What a node's value is. A tuple-returning op has `tuple` metas (one per element, nullopt for
// a non-tensor element); its elements are taken with `getitem` nodes, as in torch.fx.
struct ValueMeta {
  enum class Kind : uint8_t { None, Tensor, Tuple, SymInt, SymFloat, SymBool, TensorList } kind = Kind::None;
  TensorMeta tensor;                              // Kind::Tensor
  std::vector<std::optional<TensorMeta>> tuple;   // Kind::Tuple / Kind::TensorList
  SymInt sym;                                     // Kind::SymInt: its value as an expression

  static ValueMeta of_tensor(TensorMeta m);
  bool is_tensor() const { return kind == Kind::Tensor; }
};

class Node {
 public:
  NodeKind kind = NodeKind::CallFunction;
  std::string name;    // unique in its graph
  std::string target;  // op overload "aten.gelu.default", "getitem", "_operator.mul"; weight name for GetAttr
  std::vector<Argument> args;
  std::vector<std::pair<std::string, Argument>> kwargs;  // in the order given
  ValueMeta meta;
  std::map<std::string, std::string> metadata;  // stack_trace, nn_module_stack, ... (as exported)

  const std::vector<Node*>& users() const { return users_; }
  const Argument* kwarg(const std::string& key) const;  // nullptr when absent
  // Every node this one reads, in argument order, duplicates removed.
  std::vector<Node*> inputs() const;
  bool is_op(const std::string& overload) const { return kind == NodeKind::CallFunction && target == overload; }
  std::string str() const;  // one fx line

 private:
  friend class Graph;
  std::vector<Node*> users_;
};

// The graph owns its nodes; `users` are kept consistent by every mutation below.
class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  Graph(Graph&&) = default;
  Graph& operator=(Graph&&) = default;

  // Appends at the end (or before `before`). The name is made unique if taken.
  Node* create(NodeKind kind, std::string name, std::string target, std::vector<Argument> args = {},
               std::vector<std::pair<std::string, Argument>> kwargs = {}, Node* before = nullptr);
  void set_args(Node* n, std::vector<Argument> args);
  void set_kwargs(Node* n, std::vector<std::pair<std::string, Argument>> kwargs);
  void replace_all_uses_with(Node* from, Node* to);
  void erase(Node* n);  // the node must have no users
  // Removes call_function nodes without users (not output); returns how many.
  size_t eliminate_dead_code();

  std::vector<Node*> nodes() const;           // in order
  std::vector<Node*> placeholders() const;
  // The output node has one argument, the list of program outputs in order (torch.fx's
  // `output((a, b))`); a lone non-list argument is read as a single output.
  Node* output() const;                       // nullptr before one exists
  std::vector<Argument> output_values() const;  // the outputs in order, whichever form
  Node* find(const std::string& name) const;
  size_t size() const { return nodes_.size(); }

  // Throws ir::VerifyError naming the node: topological order, every use defined and in this
  // graph, users consistent, meta present for every value, exactly one output, last.
  void verify() const;
  std::string str() const;  // torch.fx's `graph():` listing

 private:
  void link(Node* n);
  void unlink(Node* n);
  std::list<std::unique_ptr<Node>> nodes_;
  std::map<std::string, Node*> by_name_;
};

struct VerifyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bytes of one stored weight file, held once (memory-mapped or read once) and shared by every
// weight that views it.
struct Storage {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const void> owner;  // keeps the mapping / buffer alive
};

// A parameter, buffer or constant: a view of a Storage.
struct Weight {
  std::string name;            // state-dict name, e.g. "layers.0.weight"
  enum class Kind : uint8_t { Parameter, Buffer, Constant } kind = Kind::Parameter;
  TensorMeta meta;             // static sizes and strides, in elements
  std::shared_ptr<const Storage> storage;
  int64_t storage_offset = 0;  // elements
  bool is_contiguous() const;
  const uint8_t* data() const { return storage->data + storage_offset * element_size(meta.dtype); }
  size_t nbytes() const;       // of the view's elements (contiguous extent)
};

// An exported program as kiln holds it: the graph (placeholders = user inputs, get_attr = weights)
// plus the weights, symbol ranges and output order.
struct ExportedProgram {
  Graph graph;
  std::map<std::string, Weight> weights;           // by state-dict name (get_attr target)
  std::map<std::string, SymRange> ranges;         // symbol -> range
  std::string verifier;                            // "TRAINING" or "ATEN"
  std::string torch_version;
  std::pair<int, int> schema_version{0, 0};

  std::vector<Node*> inputs() const { return graph.placeholders(); }
  size_t weight_bytes() const;
};

}  // namespace kiln::ir
