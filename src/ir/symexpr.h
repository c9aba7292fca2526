// Symbolic integer expressions: the sizes torch.export writes as sympy `srepr` strings
// (`Mul(Integer(3), Symbol('s77', positive=True, integer=True))`). Immutable and shared.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::ir {

class SymExpr;
using SymExprPtr = std::shared_ptr<const SymExpr>;

class SymExpr {
 public:
  // The sympy functions kiln understands. `Function` keeps any other name so that a program
  // using it still loads and prints; evaluating it fails with the name.
  enum class Op {
    Integer, Symbol, Add, Mul, Pow, FloorDiv, CeilDiv, Mod, Max, Min,
    Eq, Ne, Lt, Le, Gt, Ge, And, Or, Not, Where, Function,
  };

  static SymExprPtr integer(int64_t v);
  static SymExprPtr symbol(std::string name);
  static SymExprPtr make(Op op, std::vector<SymExprPtr> args);
  static SymExprPtr function(std::string name, std::vector<SymExprPtr> args);

  Op op() const { return op_; }
  int64_t value() const { return value_; }             // Integer only
  const std::string& name() const { return name_; }    // Symbol / Function
  const std::vector<SymExprPtr>& args() const { return args_; }

  bool is_integer() const { return op_ == Op::Integer; }
  bool is_symbol() const { return op_ == Op::Symbol; }
  // nullopt when a symbol is unbound; throws std::runtime_error naming an unknown function.
  std::optional<int64_t> evaluate(const std::map<std::string, int64_t>& bindings) const;
  void collect_symbols(std::vector<std::string>& out) const;
  // Readable form, sympy's str(): `3*s77`, `s0 + 1`, `(s0//2)`.
  std::string str() const;
  bool equals(const SymExpr& other) const;

 private:
  Op op_ = Op::Integer;
  int64_t value_ = 0;
  std::string name_;
  std::vector<SymExprPtr> args_;
};

// A size or symbolic int: a constant, or an expression over symbols.
struct SymInt {
  int64_t value = 0;  // meaningful when expr is null
  SymExprPtr expr;    // null for a constant

  SymInt() = default;
  SymInt(int64_t v) : value(v) {}  // NOLINT: constants convert implicitly, as in PyTorch
  explicit SymInt(SymExprPtr e);   // folds to a constant when e is an Integer

  bool is_constant() const { return expr == nullptr; }
  std::optional<int64_t> evaluate(const std::map<std::string, int64_t>& bindings) const;
  std::string str() const;
  bool operator==(const SymInt& o) const;
};

// Range of a symbol from range_constraints; max == nullopt is unbounded.
struct SymRange {
  int64_t min = 0;
  std::optional<int64_t> max;
};

}  // namespace kiln::ir
