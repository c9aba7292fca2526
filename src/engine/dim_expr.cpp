// Symbolic dimensions. Expressions are kept in a canonical form so that equal shapes compare equal
// structurally and print readably: sums are flattened into `terms*coef + const` with terms sorted
// by their printed form, products into `factors*coef` likewise, and constants always fold.
#include "engine/dim_expr.h"

#include <algorithm>
#include <cstdlib>

#include "engine/network.h"

namespace kiln::engine {

struct DimExpr::Node {
  Op op = Op::Const;
  int64_t value = 0;
  std::string name;
  std::vector<DimExpr> kids;  // lhs, rhs of binary ops; empty for leaves
};

namespace {

bool is_commutative(DimExpr::Op op) {
  using Op = DimExpr::Op;
  return op == Op::Add || op == Op::Mul || op == Op::Max || op == Op::Min;
}

int64_t py_floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t py_mod(int64_t a, int64_t b) { return a - py_floor_div(a, b) * b; }
int64_t ceil_div_i(int64_t a, int64_t b) { return -py_floor_div(-a, b); }

int precedence(DimExpr::Op op) {
  using Op = DimExpr::Op;
  switch (op) {
    case Op::Add: case Op::Sub: return 1;
    case Op::Mul: case Op::FloorDiv: case Op::Mod: return 2;
    default: return 3;  // atoms and function-call syntax
  }
}

}  // namespace

DimExpr::DimExpr(int64_t v) {
  // zero is by far the most common default: share one node
  static const std::shared_ptr<const Node> zero = std::make_shared<Node>();
  if (v == 0) {
    node_ = zero;
    return;
  }
  auto n = std::make_shared<Node>();
  n->op = Op::Const;
  n->value = v;
  node_ = std::move(n);
}

DimExpr DimExpr::symbol(const std::string& name) {
  auto n = std::make_shared<Node>();
  n->op = Op::Sym;
  n->name = name;
  return DimExpr(std::shared_ptr<const Node>(std::move(n)));
}

DimExpr::Op DimExpr::op() const { return node_->op; }
std::optional<int64_t> DimExpr::constant() const {
  if (node_->op == Op::Const) return node_->value;
  return std::nullopt;
}
const std::string& DimExpr::symbol_name() const { return node_->name; }
static const DimExpr& leaf_child() {
  static const DimExpr zero(int64_t{0});
  return zero;
}
const DimExpr& DimExpr::lhs() const { return node_->kids.empty() ? leaf_child() : node_->kids[0]; }
const DimExpr& DimExpr::rhs() const { return node_->kids.empty() ? leaf_child() : node_->kids[1]; }

namespace {

// Builds a node without simplification (the canonicalizers below call it).
DimExpr raw(DimExpr::Op op, const DimExpr& a, const DimExpr& b) { return DimExpr::binary_unsimplified(op, a, b); }

// ---- canonical products: coef * f1 * f2 ... (factors sorted by printed form) ----
void collect_factors(const DimExpr& e, int64_t& coef, std::vector<DimExpr>& fs) {
  if (auto c = e.constant()) {
    coef *= *c;
  } else if (e.op() == DimExpr::Op::Mul) {
    collect_factors(e.lhs(), coef, fs);
    collect_factors(e.rhs(), coef, fs);
  } else {
    fs.push_back(e);
  }
}

void sort_by_str(std::vector<DimExpr>& v) {
  std::stable_sort(v.begin(), v.end(), [](const DimExpr& x, const DimExpr& y) { return x.str() < y.str(); });
}

DimExpr build_product(int64_t coef, std::vector<DimExpr> fs) {
  if (coef == 0 || fs.empty()) return DimExpr(fs.empty() ? coef : 0);
  sort_by_str(fs);
  DimExpr r = fs[0];
  for (size_t i = 1; i < fs.size(); ++i) r = raw(DimExpr::Op::Mul, r, fs[i]);
  if (coef != 1) r = raw(DimExpr::Op::Mul, r, DimExpr(coef));
  return r;
}

// ---- canonical sums: t1*c1 + t2*c2 ... + const ----
struct Linear {
  std::vector<std::pair<DimExpr, int64_t>> terms;  // term (non-constant product), coefficient
  int64_t constant = 0;
  void add_term(const DimExpr& t, int64_t c) {
    std::string key = t.str();
    for (auto& [e, k] : terms) {
      if (e.str() == key) {
        k += c;
        return;
      }
    }
    terms.emplace_back(t, c);
  }
};

void collect_linear(const DimExpr& e, int64_t scale, Linear& out) {
  using Op = DimExpr::Op;
  if (auto c = e.constant()) {
    out.constant += scale * *c;
  } else if (e.op() == Op::Add) {
    collect_linear(e.lhs(), scale, out);
    collect_linear(e.rhs(), scale, out);
  } else if (e.op() == Op::Sub) {
    collect_linear(e.lhs(), scale, out);
    collect_linear(e.rhs(), -scale, out);
  } else {
    int64_t coef = 1;
    std::vector<DimExpr> fs;
    collect_factors(e, coef, fs);
    out.add_term(build_product(1, fs), scale * coef);
  }
}

DimExpr build_linear(Linear lin) {
  std::vector<std::pair<DimExpr, int64_t>> pos, neg;
  for (auto& [t, c] : lin.terms) {
    if (c > 0) pos.emplace_back(t, c);
    if (c < 0) neg.emplace_back(t, -c);
  }
  auto by_str = [](const auto& x, const auto& y) { return x.first.str() < y.first.str(); };
  std::stable_sort(pos.begin(), pos.end(), by_str);
  std::stable_sort(neg.begin(), neg.end(), by_str);
  auto scaled = [](const DimExpr& t, int64_t c) {
    int64_t coef = 1;
    std::vector<DimExpr> fs;
    collect_factors(t, coef, fs);
    return build_product(coef * c, fs);
  };
  std::optional<DimExpr> r;
  for (auto& [t, c] : pos) r = r ? raw(DimExpr::Op::Add, *r, scaled(t, c)) : scaled(t, c);
  for (auto& [t, c] : neg) r = r ? raw(DimExpr::Op::Sub, *r, scaled(t, c)) : scaled(t, -c);
  if (!r) return DimExpr(lin.constant);
  if (lin.constant > 0) r = raw(DimExpr::Op::Add, *r, DimExpr(lin.constant));
  if (lin.constant < 0) r = raw(DimExpr::Op::Sub, *r, DimExpr(-lin.constant));
  return *r;
}

DimExpr canonical_sum(DimExpr::Op op, const DimExpr& a, const DimExpr& b) {
  Linear lin;
  collect_linear(a, 1, lin);
  collect_linear(b, op == DimExpr::Op::Add ? 1 : -1, lin);
  return build_linear(std::move(lin));
}

}  // namespace

// a / b when it divides exactly (structurally): (s0*12)/4 = s0*3, (s0*s1*6)/(s1*2) = s0*3.
std::optional<DimExpr> try_exact_div(const DimExpr& a, const DimExpr& b) {
  if (a.same_as(b)) return DimExpr(1);
  int64_t bc = 1;
  std::vector<DimExpr> bf;
  collect_factors(b, bc, bf);
  if (bc == 0) return std::nullopt;
  if (bf.empty()) {
    // constant divisor: every term of a sum must divide
    Linear lin;
    collect_linear(a, 1, lin);
    if (lin.constant % bc != 0) return std::nullopt;
    for (auto& [t, c] : lin.terms)
      if (c % bc != 0) return std::nullopt;
    for (auto& [t, c] : lin.terms) c /= bc;
    lin.constant /= bc;
    return build_linear(std::move(lin));
  }
  int64_t ac = 1;
  std::vector<DimExpr> af;
  collect_factors(a, ac, af);
  if (ac % bc != 0) return std::nullopt;
  for (const DimExpr& f : bf) {
    auto it = std::find_if(af.begin(), af.end(), [&](const DimExpr& x) { return x.same_as(f); });
    if (it == af.end()) return std::nullopt;
    af.erase(it);
  }
  return build_product(ac / bc, af);
}

DimExpr DimExpr::binary_unsimplified(Op op, const DimExpr& a, const DimExpr& b) {
  auto n = std::make_shared<Node>();
  n->op = op;
  n->kids = {a, b};
  return DimExpr(std::shared_ptr<const Node>(std::move(n)));
}

DimExpr DimExpr::binary(Op op, const DimExpr& a, const DimExpr& b) {
  auto ca = a.constant(), cb = b.constant();
  if (ca && cb) {
    int64_t x = *ca, y = *cb;
    switch (op) {
      case Op::Add: return x + y;
      case Op::Sub: return x - y;
      case Op::Mul: return x * y;
      case Op::FloorDiv: if (y != 0) return py_floor_div(x, y); break;
      case Op::CeilDiv: if (y != 0) return ceil_div_i(x, y); break;
      case Op::Mod: if (y != 0) return py_mod(x, y); break;
      case Op::Max: return std::max(x, y);
      case Op::Min: return std::min(x, y);
      default: break;
    }
    return binary_unsimplified(op, a, b);  // division by a constant zero: left for evaluate() to report
  }
  switch (op) {
    case Op::Add:
    case Op::Sub:
      return canonical_sum(op, a, b);
    case Op::Mul: {
      int64_t coef = 1;
      std::vector<DimExpr> fs;
      collect_factors(a, coef, fs);
      collect_factors(b, coef, fs);
      // keep a sum times a constant readable: (s0 + 1)*2 stays a product
      return build_product(coef, fs);
    }
    case Op::FloorDiv:
    case Op::CeilDiv:
      if (cb && *cb == 1) return a;
      if (!cb || *cb != 0) {
        if (auto q = try_exact_div(a, b)) return *q;
      }
      return binary_unsimplified(op, a, b);
    case Op::Mod:
      if (cb && *cb == 1) return DimExpr(0);
      if (!cb || *cb != 0) {
        if (try_exact_div(a, b)) return DimExpr(0);
      }
      return binary_unsimplified(op, a, b);
    case Op::Max:
    case Op::Min: {
      if (a.same_as(b)) return a;
      // commutative: constant last, otherwise ordered by printed form
      bool swap = (ca && !cb) || (!ca && !cb && b.str() < a.str());
      return swap ? binary_unsimplified(op, b, a) : binary_unsimplified(op, a, b);
    }
    default:
      return binary_unsimplified(op, a, b);
  }
}

int64_t DimExpr::evaluate(const SymbolValues& values) const {
  const Node& n = *node_;
  switch (n.op) {
    case Op::Const: return n.value;
    case Op::Sym: {
      auto it = values.find(n.name);
      if (it == values.end()) throw ShapeError("symbol '" + n.name + "' is not bound");
      return it->second;
    }
    default: break;
  }
  int64_t x = n.kids[0].evaluate(values), y = n.kids[1].evaluate(values);
  switch (n.op) {
    case Op::Add: return x + y;
    case Op::Sub: return x - y;
    case Op::Mul: return x * y;
    case Op::Max: return std::max(x, y);
    case Op::Min: return std::min(x, y);
    default: break;
  }
  if (y == 0) throw ShapeError("division by zero evaluating '" + str() + "'");
  switch (n.op) {
    case Op::FloorDiv: return py_floor_div(x, y);
    case Op::CeilDiv: return ceil_div_i(x, y);
    case Op::Mod: return py_mod(x, y);
    default: throw ShapeError("bad dimension expression");
  }
}

void DimExpr::collect_symbols(std::vector<std::string>& out) const {
  const Node& n = *node_;
  if (n.op == Op::Const) return;
  if (n.op == Op::Sym) {
    if (std::find(out.begin(), out.end(), n.name) == out.end()) out.push_back(n.name);
    return;
  }
  n.kids[0].collect_symbols(out);
  n.kids[1].collect_symbols(out);
}

bool DimExpr::same_as(const DimExpr& other) const {
  if (node_ == other.node_) return true;
  const Node &x = *node_, &y = *other.node_;
  if (x.op != y.op) return false;
  switch (x.op) {
    case Op::Const: return x.value == y.value;
    case Op::Sym: return x.name == y.name;
    default:
      if (x.kids[0].same_as(y.kids[0]) && x.kids[1].same_as(y.kids[1])) return true;
      return is_commutative(x.op) && x.kids[0].same_as(y.kids[1]) && x.kids[1].same_as(y.kids[0]);
  }
}

std::string DimExpr::str() const {
  const Node& n = *node_;
  switch (n.op) {
    case Op::Const: return std::to_string(n.value);
    case Op::Sym: return n.name;
    case Op::CeilDiv: return "ceildiv(" + n.kids[0].str() + ", " + n.kids[1].str() + ")";
    case Op::Max: return "max(" + n.kids[0].str() + ", " + n.kids[1].str() + ")";
    case Op::Min: return "min(" + n.kids[0].str() + ", " + n.kids[1].str() + ")";
    default: break;
  }
  int p = precedence(n.op);
  auto wrap = [](const DimExpr& e, bool paren) { return paren ? "(" + e.str() + ")" : e.str(); };
  bool neg_const_rhs = n.kids[1].constant() && *n.kids[1].constant() < 0;
  bool lparen = precedence(n.kids[0].op()) < p;
  // right operand: same precedence needs parens for non-associative ops (a - (b + c), a // (b*c))
  bool rparen = precedence(n.kids[1].op()) < p || (precedence(n.kids[1].op()) == p && n.op != Op::Add && n.op != Op::Mul) ||
                neg_const_rhs;
  const char* sym = "";
  switch (n.op) {
    case Op::Add: sym = " + "; break;
    case Op::Sub: sym = " - "; break;
    case Op::Mul: sym = "*"; break;
    case Op::FloorDiv: sym = "//"; break;
    case Op::Mod: sym = " % "; break;
    default: break;
  }
  return wrap(n.kids[0], lparen) + sym + wrap(n.kids[1], rparen);
}

DimExpr operator+(const DimExpr& a, const DimExpr& b) { return DimExpr::binary(DimExpr::Op::Add, a, b); }
DimExpr operator-(const DimExpr& a, const DimExpr& b) { return DimExpr::binary(DimExpr::Op::Sub, a, b); }
DimExpr operator*(const DimExpr& a, const DimExpr& b) { return DimExpr::binary(DimExpr::Op::Mul, a, b); }
DimExpr floor_div(const DimExpr& a, const DimExpr& b) { return DimExpr::binary(DimExpr::Op::FloorDiv, a, b); }
DimExpr ceil_div(const DimExpr& a, const DimExpr& b) { return DimExpr::binary(DimExpr::Op::CeilDiv, a, b); }
DimExpr mod(const DimExpr& a, const DimExpr& b) { return DimExpr::binary(DimExpr::Op::Mod, a, b); }
DimExpr max(const DimExpr& a, const DimExpr& b) { return DimExpr::binary(DimExpr::Op::Max, a, b); }
DimExpr min(const DimExpr& a, const DimExpr& b) { return DimExpr::binary(DimExpr::Op::Min, a, b); }

std::string to_string(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += s[i].str();
  }
  return r + "]";
}

bool is_static(const Shape& s) {
  return std::all_of(s.begin(), s.end(), [](const DimExpr& d) { return d.is_constant(); });
}

std::vector<int64_t> evaluate(const Shape& s, const SymbolValues& values) {
  std::vector<int64_t> r;
  r.reserve(s.size());
  for (const DimExpr& d : s) r.push_back(d.evaluate(values));
  return r;
}

}  // namespace kiln::engine
