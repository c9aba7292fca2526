// Symbolic integer expressions. Values are immutable, so make() folds what it can right away:
// all-constant operands evaluate, Add/Mul flatten and merge their constant terms. This keeps the
// sizes that flow through shape passes small (`s0*3`, not `Mul(Integer(1), Mul(Integer(3), s0))`).
#include "ir/symexpr.h"

#include <stdexcept>

namespace kiln::ir {
namespace {

int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw std::overflow_error("symbolic expression overflows int64 (add)");
  return r;
}

int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw std::overflow_error("symbolic expression overflows int64 (mul)");
  return r;
}

// Python's floor division and modulo (the sign follows the divisor), as sympy/torch use them.
int64_t floor_div(int64_t a, int64_t b) {
  if (b == 0) throw std::domain_error("symbolic expression divides by zero");
  if (a == INT64_MIN && b == -1) throw std::overflow_error("symbolic expression overflows int64 (floordiv)");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t py_mod(int64_t a, int64_t b) {
  if (b == 0) throw std::domain_error("symbolic expression takes a modulo by zero");
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

size_t arity(SymExpr::Op op) {
  using Op = SymExpr::Op;
  switch (op) {
    case Op::Pow: case Op::FloorDiv: case Op::CeilDiv: case Op::Mod:
    case Op::Eq: case Op::Ne: case Op::Lt: case Op::Le: case Op::Gt: case Op::Ge:
      return 2;
    case Op::Not: return 1;
    case Op::Where: return 3;
    default: return 0;  // variadic (>= 1)
  }
}

const char* op_name(SymExpr::Op op) {
  using Op = SymExpr::Op;
  switch (op) {
    case Op::Integer: return "Integer";
    case Op::Symbol: return "Symbol";
    case Op::Add: return "Add";
    case Op::Mul: return "Mul";
    case Op::Pow: return "Pow";
    case Op::FloorDiv: return "FloorDiv";
    case Op::CeilDiv: return "CeilDiv";
    case Op::Mod: return "Mod";
    case Op::Max: return "Max";
    case Op::Min: return "Min";
    case Op::Eq: return "Eq";
    case Op::Ne: return "Ne";
    case Op::Lt: return "Lt";
    case Op::Le: return "Le";
    case Op::Gt: return "Gt";
    case Op::Ge: return "Ge";
    case Op::And: return "And";
    case Op::Or: return "Or";
    case Op::Not: return "Not";
    case Op::Where: return "Where";
    case Op::Function: return "Function";
  }
  return "?";
}

// Precedence for parenthesizing in str(): higher binds tighter.
int precedence(const SymExpr& e) {
  using Op = SymExpr::Op;
  switch (e.op()) {
    case Op::Integer: return e.value() < 0 ? 50 : 100;
    case Op::Symbol: case Op::FloorDiv: case Op::Function: case Op::Max: case Op::Min: case Op::Mod:
    case Op::CeilDiv: case Op::Eq: case Op::Ne: case Op::Where:
      return 100;
    case Op::Pow: return 60;
    case Op::Mul: return 50;
    case Op::Add: return 40;
    case Op::Lt: case Op::Le: case Op::Gt: case Op::Ge: return 35;
    case Op::Not: return 30;
    case Op::And: return 20;
    case Op::Or: return 10;
  }
  return 0;
}

std::string paren(const SymExpr& e, int min_prec) {
  std::string s = e.str();
  return precedence(e) < min_prec ? "(" + s + ")" : s;
}

std::string join_call(const char* name, const std::vector<SymExprPtr>& args) {
  std::string s = std::string(name) + "(";
  for (size_t i = 0; i < args.size(); ++i) s += (i ? ", " : "") + args[i]->str();
  return s + ")";
}

}  // namespace

SymExprPtr SymExpr::integer(int64_t v) {
  auto e = std::make_shared<SymExpr>();
  e->op_ = Op::Integer;
  e->value_ = v;
  return e;
}

SymExprPtr SymExpr::symbol(std::string name) {
  if (name.empty()) throw std::invalid_argument("SymExpr::symbol: empty name");
  auto e = std::make_shared<SymExpr>();
  e->op_ = Op::Symbol;
  e->name_ = std::move(name);
  return e;
}

SymExprPtr SymExpr::function(std::string name, std::vector<SymExprPtr> args) {
  for (const auto& a : args)
    if (!a) throw std::invalid_argument("SymExpr::function " + name + ": null argument");
  auto e = std::make_shared<SymExpr>();
  e->op_ = Op::Function;
  e->name_ = std::move(name);
  e->args_ = std::move(args);
  return e;
}

SymExprPtr SymExpr::make(Op op, std::vector<SymExprPtr> args) {
  if (op == Op::Integer || op == Op::Symbol || op == Op::Function)
    throw std::invalid_argument(std::string("SymExpr::make: use the factory for ") + op_name(op));
  for (const auto& a : args)
    if (!a) throw std::invalid_argument(std::string("SymExpr::make ") + op_name(op) + ": null argument");
  const size_t n = arity(op);
  if (n ? args.size() != n : args.empty())
    throw std::invalid_argument(std::string("SymExpr::make ") + op_name(op) + ": wrong number of arguments (" +
                                std::to_string(args.size()) + ")");

  if (op == Op::Add || op == Op::Mul) {
    // Flatten nested sums/products and merge their constants (placed first, as sympy does).
    std::vector<SymExprPtr> flat;
    int64_t c = op == Op::Add ? 0 : 1;
    bool folded = true;
    for (const auto& a : args) {
      const auto& parts = a->op() == op ? a->args() : std::vector<SymExprPtr>{a};
      for (const auto& p : parts) {
        if (p->is_integer() && folded) {
          int64_t r;
          if (op == Op::Add ? __builtin_add_overflow(c, p->value(), &r) : __builtin_mul_overflow(c, p->value(), &r)) {
            folded = false;  // keep it symbolic rather than fail on a corner nobody evaluates
            flat.push_back(p);
          } else {
            c = r;
          }
        } else {
          flat.push_back(p);
        }
      }
    }
    if (op == Op::Mul && c == 0) return integer(0);
    const bool neutral = (op == Op::Add ? c == 0 : c == 1);
    if (!neutral) flat.insert(flat.begin(), integer(c));
    if (flat.empty()) return integer(c);
    if (flat.size() == 1) return flat[0];
    args = std::move(flat);
  } else if ((op == Op::Max || op == Op::Min || op == Op::And || op == Op::Or) && args.size() == 1) {
    return args[0];
  }

  auto e = std::make_shared<SymExpr>();
  e->op_ = op;
  e->args_ = std::move(args);
  bool all_const = true;
  for (const auto& a : e->args_) all_const = all_const && a->is_integer();
  if (all_const) {
    try {
      if (auto v = e->evaluate({})) return integer(*v);
    } catch (const std::exception&) {
      // Division by zero or overflow: leave it unevaluated; evaluate() reports it if ever asked.
    }
  }
  return e;
}

std::optional<int64_t> SymExpr::evaluate(const std::map<std::string, int64_t>& bindings) const {
  switch (op_) {
    case Op::Integer: return value_;
    case Op::Symbol: {
      auto it = bindings.find(name_);
      if (it == bindings.end()) return std::nullopt;
      return it->second;
    }
    case Op::Function:
      throw std::runtime_error("cannot evaluate symbolic function " + name_ + "()");
    default: break;
  }
  std::vector<int64_t> v;
  v.reserve(args_.size());
  for (const auto& a : args_) {
    auto x = a->evaluate(bindings);
    if (!x) return std::nullopt;
    v.push_back(*x);
  }
  switch (op_) {
    case Op::Add: {
      int64_t r = 0;
      for (auto x : v) r = checked_add(r, x);
      return r;
    }
    case Op::Mul: {
      int64_t r = 1;
      for (auto x : v) r = checked_mul(r, x);
      return r;
    }
    case Op::Pow: {
      if (v[1] < 0) {
        if (v[0] == 1) return 1;
        if (v[0] == -1) return (v[1] % 2) ? -1 : 1;
        throw std::runtime_error("symbolic Pow with negative exponent is not an integer");
      }
      int64_t r = 1, base = v[0], e = v[1];
      while (e > 0) {  // square-and-multiply: bounded by 64 iterations
        if (e & 1) r = checked_mul(r, base);
        e >>= 1;
        if (e) base = checked_mul(base, base);
      }
      return r;
    }
    case Op::FloorDiv: return floor_div(v[0], v[1]);
    case Op::CeilDiv: {
      if (v[1] == 0) throw std::domain_error("symbolic expression divides by zero");
      return -floor_div(checked_mul(v[0], -1), v[1]);
    }
    case Op::Mod: return py_mod(v[0], v[1]);
    case Op::Max: {
      int64_t r = v[0];
      for (auto x : v) r = std::max(r, x);
      return r;
    }
    case Op::Min: {
      int64_t r = v[0];
      for (auto x : v) r = std::min(r, x);
      return r;
    }
    case Op::Eq: return v[0] == v[1];
    case Op::Ne: return v[0] != v[1];
    case Op::Lt: return v[0] < v[1];
    case Op::Le: return v[0] <= v[1];
    case Op::Gt: return v[0] > v[1];
    case Op::Ge: return v[0] >= v[1];
    case Op::And: {
      for (auto x : v) if (!x) return 0;
      return 1;
    }
    case Op::Or: {
      for (auto x : v) if (x) return 1;
      return 0;
    }
    case Op::Not: return v[0] == 0;
    case Op::Where: return v[0] ? v[1] : v[2];
    default: break;
  }
  throw std::logic_error("SymExpr::evaluate: unhandled op");
}

void SymExpr::collect_symbols(std::vector<std::string>& out) const {
  if (op_ == Op::Symbol) {
    for (const auto& s : out)
      if (s == name_) return;
    out.push_back(name_);
    return;
  }
  for (const auto& a : args_) a->collect_symbols(out);
}

std::string SymExpr::str() const {
  switch (op_) {
    case Op::Integer: return std::to_string(value_);
    case Op::Symbol: return name_;
    case Op::Add: {
      // sympy prints symbolic terms first and the constant last, with `-` for negative terms.
      std::vector<const SymExpr*> terms;
      for (const auto& a : args_) if (!a->is_integer()) terms.push_back(a.get());
      for (const auto& a : args_) if (a->is_integer()) terms.push_back(a.get());
      std::string s;
      for (size_t i = 0; i < terms.size(); ++i) {
        const SymExpr& t = *terms[i];
        bool neg = false;
        std::string body;
        if (t.is_integer() && t.value() < 0 && t.value() != INT64_MIN) {
          neg = true;
          body = std::to_string(-t.value());
        } else if (t.op() == Op::Mul && t.args()[0]->is_integer() && t.args()[0]->value() < 0 &&
                   t.args()[0]->value() != INT64_MIN) {
          neg = true;
          std::vector<SymExprPtr> rest(t.args().begin() + 1, t.args().end());
          if (t.args()[0]->value() != -1) rest.insert(rest.begin(), integer(-t.args()[0]->value()));
          body = rest.size() == 1 ? paren(*rest[0], 50) : make(Op::Mul, rest)->str();
        } else {
          body = paren(t, 41);
        }
        if (i == 0) s = neg ? "-" + body : body;
        else s += (neg ? " - " : " + ") + body;
      }
      return s;
    }
    case Op::Mul: {
      std::string s;
      size_t start = 0;
      if (args_[0]->is_integer() && args_[0]->value() == -1 && args_.size() > 1) {
        s = "-";
        start = 1;
      }
      for (size_t i = start; i < args_.size(); ++i) s += (i > start ? "*" : "") + paren(*args_[i], 50);
      return s;
    }
    case Op::Pow: return paren(*args_[0], 61) + "**" + paren(*args_[1], 61);
    case Op::FloorDiv: return "(" + paren(*args_[0], 51) + "//" + paren(*args_[1], 51) + ")";
    case Op::CeilDiv: return join_call("CeilDiv", args_);
    case Op::Mod: return join_call("Mod", args_);
    case Op::Max: return join_call("Max", args_);
    case Op::Min: return join_call("Min", args_);
    case Op::Eq: return join_call("Eq", args_);
    case Op::Ne: return join_call("Ne", args_);
    case Op::Lt: return paren(*args_[0], 36) + " < " + paren(*args_[1], 36);
    case Op::Le: return paren(*args_[0], 36) + " <= " + paren(*args_[1], 36);
    case Op::Gt: return paren(*args_[0], 36) + " > " + paren(*args_[1], 36);
    case Op::Ge: return paren(*args_[0], 36) + " >= " + paren(*args_[1], 36);
    case Op::And: {
      std::string s;
      for (size_t i = 0; i < args_.size(); ++i) s += (i ? " & " : "") + paren(*args_[i], 21);
      return s;
    }
    case Op::Or: {
      std::string s;
      for (size_t i = 0; i < args_.size(); ++i) s += (i ? " | " : "") + paren(*args_[i], 11);
      return s;
    }
    case Op::Not: return "~" + paren(*args_[0], 31);
    case Op::Where: return join_call("Where", args_);
    case Op::Function: return join_call(name_.c_str(), args_);
  }
  return "?";
}

bool SymExpr::equals(const SymExpr& o) const {
  if (this == &o) return true;
  if (op_ != o.op_ || value_ != o.value_ || name_ != o.name_ || args_.size() != o.args_.size()) return false;
  for (size_t i = 0; i < args_.size(); ++i)
    if (!args_[i]->equals(*o.args_[i])) return false;
  return true;
}

SymInt::SymInt(SymExprPtr e) {
  if (!e) throw std::invalid_argument("SymInt: null expression");
  if (e->is_integer()) {
    value = e->value();
  } else {
    expr = std::move(e);
  }
}

std::optional<int64_t> SymInt::evaluate(const std::map<std::string, int64_t>& bindings) const {
  if (!expr) return value;
  return expr->evaluate(bindings);
}

std::string SymInt::str() const { return expr ? expr->str() : std::to_string(value); }

bool SymInt::operator==(const SymInt& o) const {
  if (!expr && !o.expr) return value == o.value;
  if (expr && o.expr) return expr->equals(*o.expr);
  return false;
}

}  // namespace kiln::ir
