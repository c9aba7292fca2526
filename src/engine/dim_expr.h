// Symbolic tensor dimensions of the engine. Plans are shape-generic: a dimension is a constant or
// an expression over named symbols (bound from input shapes, or by a data-dependent layer at run
// time), evaluated once per input shape. The engine knows nothing of the IR's sympy expressions;
// the conversion layer translates them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/enum_list.h"

namespace kiln::engine {

using SymbolValues = std::map<std::string, int64_t>;

class DimExpr {
 public:
#define KILN_DIM_OPS(X)                                                                                  \
  X(Const, "const") X(Sym, "sym") X(Add, "+") X(Sub, "-") X(Mul, "*") X(FloorDiv, "//") X(CeilDiv, "ceildiv") \
  X(Mod, "%") X(Max, "max") X(Min, "min")
  enum class Op : uint8_t { KILN_ENUM_VALUES(KILN_DIM_OPS) };

  DimExpr() : DimExpr(int64_t{0}) {}
  DimExpr(int64_t v);            // NOLINT: constants convert implicitly
  DimExpr(int v) : DimExpr(int64_t{v}) {}  // NOLINT
  static DimExpr symbol(const std::string& name);
  static DimExpr binary(Op op, const DimExpr& a, const DimExpr& b);  // folds constants
  // Builds the node as given, without folding or reordering (canonicalization uses it).
  static DimExpr binary_unsimplified(Op op, const DimExpr& a, const DimExpr& b);

  Op op() const;
  bool is_constant() const { return op() == Op::Const; }
  std::optional<int64_t> constant() const;  // value when constant
  const std::string& symbol_name() const;   // Op::Sym only
  const DimExpr& lhs() const;
  const DimExpr& rhs() const;

  // Throws engine::ShapeError naming the symbol when unbound, or on division by zero.
  int64_t evaluate(const SymbolValues& values) const;
  void collect_symbols(std::vector<std::string>& out) const;
  bool same_as(const DimExpr& other) const;  // structural equality
  std::string str() const;                   // "s0*3 + 1"

 private:
  struct Node;
  explicit DimExpr(std::shared_ptr<const Node> n) : node_(std::move(n)) {}
  std::shared_ptr<const Node> node_;
};
KILN_ENUM_INFO(DimExpr::Op, KILN_DIM_OPS)

DimExpr operator+(const DimExpr& a, const DimExpr& b);
DimExpr operator-(const DimExpr& a, const DimExpr& b);
DimExpr operator*(const DimExpr& a, const DimExpr& b);
DimExpr floor_div(const DimExpr& a, const DimExpr& b);
DimExpr ceil_div(const DimExpr& a, const DimExpr& b);
DimExpr mod(const DimExpr& a, const DimExpr& b);
DimExpr max(const DimExpr& a, const DimExpr& b);
DimExpr min(const DimExpr& a, const DimExpr& b);

// a / b when b divides a exactly and structurally ((s0*12) / 4 = s0*3; (s0*s1) / s1 = s0), else
// nullopt. Reshape's -1 inference uses it.
std::optional<DimExpr> try_exact_div(const DimExpr& a, const DimExpr& b);

using Shape = std::vector<DimExpr>;
std::string to_string(const Shape& s);             // "[s0, 16]"
bool is_static(const Shape& s);
std::vector<int64_t> evaluate(const Shape& s, const SymbolValues& values);

}  // namespace kiln::engine
