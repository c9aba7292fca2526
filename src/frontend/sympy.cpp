#include "frontend/sympy.h"

#include <cctype>
#include <vector>

namespace kiln::frontend {
namespace {

using ir::SymExpr;
using ir::SymExprPtr;
using Op = SymExpr::Op;

constexpr int kMaxDepth = 256;  // recursion bound against hostile nesting

class SreprParser {
 public:
  explicit SreprParser(const std::string& s) : s_(s) {}

  SymExprPtr parse() {
    SymExprPtr e = expr(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text");
    return e;
  }

 private:
  // One parsed call argument: an expression, a quoted string, or a keyword (ignored).
  struct Arg {
    SymExprPtr expr;
    std::string str;
    bool is_string = false;
    bool is_keyword = false;
  };

  [[noreturn]] void fail(const std::string& what) const {
    throw SympyError("bad sympy expression '" + (s_.size() > 200 ? s_.substr(0, 200) + "..." : s_) +
                     "': " + what + " at position " + std::to_string(pos_));
  }
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  char peek() {
    skip_ws();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  std::string ident() {
    size_t start = pos_;
    while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
    return s_.substr(start, pos_ - start);
  }
  std::string quoted() {
    const char q = s_[pos_++];
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != q) ++pos_;
    if (pos_ >= s_.size()) fail("unterminated string");
    return s_.substr(start, pos_++ - start);
  }
  int64_t integer_literal() {
    size_t start = pos_;
    if (s_[pos_] == '-' || s_[pos_] == '+') ++pos_;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    const std::string digits = s_.substr(start, pos_ - start);
    try {
      size_t used = 0;
      int64_t v = std::stoll(digits, &used);
      if (used != digits.size()) fail("bad integer '" + digits + "'");
      return v;
    } catch (const std::out_of_range&) {
      fail("integer " + digits + " does not fit in 64 bits");
    } catch (const std::invalid_argument&) {
      fail("bad integer '" + digits + "'");
    }
  }

  std::vector<Arg> call_args(int depth) {
    std::vector<Arg> args;
    ++pos_;  // '('
    if (peek() == ')') {
      ++pos_;
      return args;
    }
    while (true) {
      Arg a;
      char c = peek();
      if (c == '\'' || c == '"') {
        a.is_string = true;
        a.str = quoted();
      } else {
        // `positive=True`: a keyword argument (assumptions); skip its value.
        size_t save = pos_;
        std::string id = ident();
        if (!id.empty() && peek() == '=') {
          ++pos_;
          a.is_keyword = true;
          skip_value(depth + 1);
        } else {
          pos_ = save;
          a.expr = expr(depth + 1);
        }
      }
      args.push_back(std::move(a));
      c = peek();
      if (c == ',') {
        ++pos_;
        continue;
      }
      if (c == ')') {
        ++pos_;
        return args;
      }
      fail("expected ',' or ')'");
    }
  }

  void skip_value(int depth) {
    char c = peek();
    if (c == '\'' || c == '"') {
      quoted();
      return;
    }
    expr(depth);  // True / False / numbers / nested calls all parse as expressions
  }

  SymExprPtr expr(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth));
    char c = peek();
    if (c == '\0') fail("unexpected end");
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '+') return SymExpr::integer(integer_literal());
    std::string name = ident();
    if (name.empty()) fail(std::string("unexpected character '") + c + "'");
    if (peek() != '(') {
      // Bare names: sympy's singletons.
      if (name == "true" || name == "True") return SymExpr::integer(1);
      if (name == "false" || name == "False") return SymExpr::integer(0);
      if (name == "oo" || name == "int_oo") return SymExpr::function("oo", {});
      if (name == "None") return SymExpr::function("None", {});
      fail("unknown name '" + name + "'");
    }
    std::vector<Arg> args = call_args(depth);
    return build(name, args);
  }

  std::vector<SymExprPtr> exprs(const std::string& name, const std::vector<Arg>& args) {
    std::vector<SymExprPtr> out;
    for (const auto& a : args) {
      if (a.is_keyword) continue;
      if (a.is_string) fail(name + "() takes expressions, not a string");
      out.push_back(a.expr);
    }
    return out;
  }

  SymExprPtr build(const std::string& name, const std::vector<Arg>& args) {
    if (name == "Symbol" || name == "Dummy") {
      if (args.empty() || !args[0].is_string || args[0].str.empty()) fail("Symbol() needs a name");
      return SymExpr::symbol(args[0].str);
    }
    if (name == "Integer") {
      auto v = exprs(name, args);
      if (v.size() != 1 || !v[0]->is_integer()) fail("Integer() takes one integer");
      return v[0];
    }
    if (name == "BooleanTrue") return SymExpr::integer(1);
    if (name == "BooleanFalse") return SymExpr::integer(0);
    if (name == "Float" || name == "Rational") {
      // Non-integers: keep the text so it prints; evaluation reports the function by name.
      std::string text;
      for (const auto& a : args) {
        if (a.is_keyword) continue;
        if (!text.empty()) text += "/";
        text += a.is_string ? a.str : a.expr->str();
      }
      return SymExpr::function(name + "[" + text + "]", {});
    }

    static const std::pair<const char*, Op> kOps[] = {
        {"Add", Op::Add},           {"Mul", Op::Mul},
        {"Pow", Op::Pow},           {"PowByNatural", Op::Pow},
        {"FloorDiv", Op::FloorDiv}, {"CleanDiv", Op::FloorDiv},
        {"IntTrueDiv", Op::Function}, {"CeilDiv", Op::CeilDiv},
        {"Mod", Op::Mod},           {"PythonMod", Op::Mod},
        {"Max", Op::Max},           {"Min", Op::Min},
        {"Eq", Op::Eq},             {"Equality", Op::Eq},
        {"Ne", Op::Ne},             {"Unequality", Op::Ne},
        {"StrictLessThan", Op::Lt}, {"Lt", Op::Lt},
        {"LessThan", Op::Le},       {"Le", Op::Le},
        {"StrictGreaterThan", Op::Gt}, {"Gt", Op::Gt},
        {"GreaterThan", Op::Ge},    {"Ge", Op::Ge},
        {"And", Op::And},           {"Or", Op::Or},
        {"Not", Op::Not},           {"Where", Op::Where},
    };
    std::vector<SymExprPtr> v = exprs(name, args);
    if (name == "ModularIndexing") {
      if (v.size() != 3) fail("ModularIndexing() takes 3 arguments");
      return SymExpr::make(Op::Mod, {SymExpr::make(Op::FloorDiv, {v[0], v[1]}), v[2]});
    }
    for (const auto& [n, op] : kOps) {
      if (name != n || op == Op::Function) continue;
      try {
        return SymExpr::make(op, std::move(v));
      } catch (const std::invalid_argument& e) {
        fail(name + "(): " + e.what());
      }
    }
    return SymExpr::function(name, std::move(v));
  }

  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

ir::SymExprPtr parse_sympy_srepr(const std::string& text) { return SreprParser(text).parse(); }

}  // namespace kiln::frontend
