// Op schemas: argument names, order, types and defaults, written in PyTorch's own schema syntax
// (`gelu(Tensor self, *, str approximate='none') -> Tensor`). The .pt2 format omits arguments
// left at their defaults and names the rest, so kiln matches arguments by name and fills
// defaults from this table.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln::ir {

struct ArgSchema {
  std::string name;
  std::string type;                 // as written: "Tensor", "int[]", "Scalar?", "SymInt[1]", "str"
  std::optional<Argument> default_value;
  bool kwarg_only = false;
  bool is_tensor() const;           // Tensor, Tensor?, Tensor(a!) ...
  bool is_optional() const;         // type ends with '?'
  bool is_list() const;             // "int[]", "Tensor[]", "SymInt[2]" ...
};

struct OpSchema {
  std::string overload;             // "aten.gelu.default"
  std::vector<ArgSchema> args;
  std::vector<std::string> returns; // return types: {"Tensor"}, {"Tensor", "Tensor", "Tensor"}, {"Tensor[]"}
  bool view = false;                // returns an alias of an input it does not write: "-> Tensor(a)"
  bool is_inplace() const;          // writes an argument: "Tensor(a!)"
  const ArgSchema* find(const std::string& name) const;
  int index_of(const std::string& name) const;  // -1 when absent
  std::string str() const;
};

// Parses one schema string; `overload` names it ("aten.gelu.default"). Throws std::invalid_argument
// naming the position on a syntax error.
OpSchema parse_schema(const std::string& overload, const std::string& text);

// The table of every op kiln knows. Thread-safe for reads after first use.
const OpSchema* find_schema(const std::string& overload);
std::vector<std::string> known_ops();
// Adds a schema at run time (user converters for ops kiln has no schema for).
void register_schema(const std::string& overload, const std::string& text);

// A call's arguments matched to its schema: every schema argument by position, given or default.
// Converters and validators read arguments by name through this.
class BoundArgs {
 public:
  // Throws std::invalid_argument naming the node when an argument is unknown, missing or given twice.
  BoundArgs(const Node& node, const OpSchema& schema);
  const Argument& operator[](const std::string& name) const;
  const Argument& at(size_t i) const { return values_.at(i); }
  bool given(const std::string& name) const;     // present in the node (not defaulted)
  size_t size() const { return values_.size(); }
  const OpSchema& schema() const { return *schema_; }
  // Positional args (non kwarg-only, in schema order) and kwargs (kwarg-only), defaults filled:
  // what a converter receives as (args, kwargs).
  std::vector<Argument> positional() const;
  std::vector<std::pair<std::string, Argument>> keyword() const;

 private:
  const OpSchema* schema_;
  std::vector<Argument> values_;
  std::vector<bool> given_;
};

}  // namespace kiln::ir
