// torch.einsum as the layers it stands for: each pair of operands contracts as one batched
// matrix multiply (the operands permuted to [batch, free, contracted] and [batch, contracted,
// free] and flattened to three dims), more operands fold in from the left, and a subscript that
// only one operand has and nothing later needs is summed out of it first. Attention written with
// einsum (MaxViT's "B G H I D, B G H J D -> B G H I J") becomes the batched matmul it is.
#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace sh = impl::shuffle;

// One subscript per dim. Ellipsis dims become placeholder characters below ' ' (distinct from
// every letter), numbered from the right so that operands of different ranks broadcast as in PyTorch.
struct Equation {
  std::vector<std::string> inputs;
  std::string output;
};

std::string strip_spaces(const std::string& s) {
  std::string r;
  for (char c : s)
    if (c != ' ') r += c;
  return r;
}

std::vector<std::string> split_terms(const std::string& lhs) {
  std::vector<std::string> terms(1);
  for (char c : lhs) {
    if (c == ',') terms.emplace_back();
    else terms.back() += c;
  }
  return terms;
}

bool is_subscript(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// The placeholder of the ellipsis dim `k` places from the right of the longest ellipsis.
char ellipsis_dim(size_t k) { return static_cast<char>(1 + k); }

std::string expand_ellipsis(const std::string& term, size_t ellipsis_rank, const std::string& what) {
  const size_t at = term.find("...");
  if (at == std::string::npos) return term;
  if (term.find("...", at + 3) != std::string::npos) throw ConversionError("einsum: " + what + " has two ellipses");
  std::string dims;
  for (size_t k = ellipsis_rank; k-- > 0;) dims += ellipsis_dim(k);
  return term.substr(0, at) + dims + term.substr(at + 3);
}

// Subscripts must be letters, each at most once per term (a repeated one, a diagonal, is not
// supported); shared by the validator and the converter.
std::optional<std::string> malformed_term(const std::string& term) {
  std::set<char> seen;
  std::string rest = term;
  if (size_t at = rest.find("..."); at != std::string::npos) rest.erase(at, 3);
  for (char c : rest) {
    if (!is_subscript(c)) return "'" + std::string(1, c) + "' is not a subscript letter";
    if (!seen.insert(c).second) return "subscript '" + std::string(1, c) + "' repeats within '" + term +
                                       "' (a diagonal), which is not supported";
  }
  return std::nullopt;
}

std::optional<std::string> malformed_equation(const std::string& equation) {
  const std::string eq = strip_spaces(equation);
  const size_t arrow = eq.find("->");
  std::vector<std::string> terms = split_terms(eq.substr(0, arrow));
  if (arrow != std::string::npos) terms.push_back(eq.substr(arrow + 2));
  for (const std::string& t : terms)
    if (auto why = malformed_term(t)) return why;
  return std::nullopt;
}

Equation parse(const std::string& equation, const std::vector<Tensor*>& operands) {
  if (auto why = malformed_equation(equation)) throw ConversionError("einsum '" + equation + "': " + *why);
  const std::string eq = strip_spaces(equation);
  const size_t arrow = eq.find("->");
  const std::vector<std::string> terms = split_terms(eq.substr(0, arrow));
  if (terms.size() != operands.size())
    throw ConversionError("einsum '" + equation + "': " + std::to_string(terms.size()) + " subscript terms for " +
                          std::to_string(operands.size()) + " operands");
  size_t ellipsis_rank = 0;
  std::vector<size_t> letters(terms.size());
  for (size_t i = 0; i < terms.size(); ++i) {
    const bool has_ellipsis = terms[i].find("...") != std::string::npos;
    letters[i] = terms[i].size() - (has_ellipsis ? 3 : 0);
    const size_t rank = operands[i]->rank();
    if (has_ellipsis ? rank < letters[i] : rank != letters[i])
      throw ConversionError("einsum '" + equation + "': operand " + std::to_string(i) + " has rank " +
                            std::to_string(rank) + " but '" + terms[i] + "' names " + std::to_string(letters[i]) +
                            " dims");
    if (has_ellipsis) ellipsis_rank = std::max(ellipsis_rank, rank - letters[i]);
  }
  Equation e;
  for (size_t i = 0; i < terms.size(); ++i)
    e.inputs.push_back(expand_ellipsis(terms[i], operands[i]->rank() - letters[i], "operand " + std::to_string(i)));
  if (arrow != std::string::npos) {
    e.output = expand_ellipsis(eq.substr(arrow + 2), ellipsis_rank, "the output");
  } else {  // implicit output: the ellipsis dims, then the letters seen once, in alphabetical (ASCII) order
    std::map<char, int> count;
    for (const std::string& t : e.inputs)
      for (char c : t) ++count[c];
    for (size_t k = ellipsis_rank; k-- > 0;) e.output += ellipsis_dim(k);
    for (auto [c, n] : count)
      if (n == 1 && is_subscript(c)) e.output += c;
  }
  for (char c : e.output)
    if (std::none_of(e.inputs.begin(), e.inputs.end(), [&](const std::string& t) { return t.find(c) != t.npos; }))
      throw ConversionError("einsum '" + equation + "': output subscript '" + std::string(1, c) +
                            "' names no operand dim");
  return e;
}

// An operand with one subscript per dim.
struct Term {
  Tensor* t;
  std::string subs;
};

DimExpr product(const std::vector<DimExpr>& dims) {
  DimExpr p(int64_t{1});
  for (const DimExpr& d : dims) p = p * d;
  return p;
}

struct Builder {
  ConversionContext& ctx;
  const std::string& target;
  const std::string& name;
  int step = 0;

  std::string next(const std::string& what) { return name + "/" + what + std::to_string(step++); }

  // Sums out the subscripts of `x` that `keep` lacks.
  Term sum_out(Term x, const std::string& keep) {
    std::vector<int64_t> axes;
    std::string kept;
    for (size_t d = 0; d < x.subs.size(); ++d) {
      if (keep.find(x.subs[d]) == std::string::npos) axes.push_back(int64_t(d));
      else kept += x.subs[d];
    }
    if (axes.empty()) return x;
    return {impl::reduce::reduce(ctx, target, kAten, next("sum"), engine::ReduceOp::kSum, x.t, axes, false), kept};
  }

  // `x`'s dims in the order of `subs`, merged into one dim per group in `groups`.
  Tensor* arrange(const Term& x, const std::vector<std::string>& groups) {
    std::vector<int64_t> perm;
    std::vector<DimExpr> merged;
    for (const std::string& g : groups) {
      std::vector<DimExpr> sizes;
      for (char c : g) {
        perm.push_back(int64_t(x.subs.find(c)));
        sizes.push_back(x.t->shape()[x.subs.find(c)]);
      }
      merged.push_back(product(sizes));
    }
    Tensor* t = sh::permute(ctx, target, kAten, next("permute"), x.t, perm);  // identity: x.t itself
    return sh::reshape(ctx, target, kAten, next("group"), t, merged);
  }

  // A size-1 dim of one operand against a larger one of the other broadcasts (PyTorch's rule).
  void broadcast_shared(Term& a, Term& b) {
    auto widen = [&](Term& x, const Term& other) {
      std::vector<DimExpr> sizes = x.t->shape();
      bool changed = false;
      for (size_t d = 0; d < x.subs.size(); ++d) {
        const size_t o = other.subs.find(x.subs[d]);
        if (o == std::string::npos) continue;
        const DimExpr& theirs = other.t->shape()[o];
        if (sizes[d].constant() == int64_t{1} && theirs.constant() != int64_t{1}) {
          sizes[d] = theirs;
          changed = true;
        }
      }
      if (changed) x.t = sh::expand(ctx, target, kAten, next("broadcast"), x.t, sizes);
    };
    widen(a, b);
    widen(b, a);
  }

  // a and b contracted into one term holding the subscripts of `keep` they have.
  Term contract(Term a, Term b, const std::string& keep) {
    a = sum_out(a, keep + b.subs);
    b = sum_out(b, keep + a.subs);
    broadcast_shared(a, b);
    std::string batch, contracted, free_a, free_b;
    for (char c : a.subs) {
      const bool in_b = b.subs.find(c) != std::string::npos, kept = keep.find(c) != std::string::npos;
      (in_b ? (kept ? batch : contracted) : free_a) += c;
    }
    for (char c : b.subs)
      if (a.subs.find(c) == std::string::npos) free_b += c;
    Tensor* lhs = arrange(a, {batch, free_a, contracted});
    Tensor* rhs = arrange(b, {batch, contracted, free_b});
    Tensor* y = impl::matmul::matrix_multiply(ctx, target, kAten, next("matmul"), lhs, rhs);
    std::vector<DimExpr> sizes;
    for (char c : batch) sizes.push_back(a.t->shape()[a.subs.find(c)]);
    for (char c : free_a) sizes.push_back(a.t->shape()[a.subs.find(c)]);
    for (char c : free_b) sizes.push_back(b.t->shape()[b.subs.find(c)]);
    return {sh::reshape(ctx, target, kAten, next("split"), y, sizes), batch + free_a + free_b};
  }
};

// The operands contracted as `e` says, left to right.
Tensor* contract_operands(ConversionContext& ctx, const std::string& target, const std::string& name, const Equation& e,
                          const std::vector<Tensor*>& operands) {
  Builder b{ctx, target, name};
  Term acc{operands[0], e.inputs[0]};
  for (size_t i = 1; i < operands.size(); ++i) {
    std::string later = e.output;  // what the operands after this one and the output still need
    for (size_t j = i + 1; j < operands.size(); ++j) later += e.inputs[j];
    acc = b.contract(acc, {operands[i], e.inputs[i]}, later);
  }
  acc = b.sum_out(acc, e.output);
  std::vector<int64_t> perm;
  for (char c : e.output) perm.push_back(int64_t(acc.subs.find(c)));
  return sh::permute(ctx, target, kAten, name, acc.t, perm);
}

// _trilinear's operands live in one space of R dims: operand k lacks the dims in its expand list
// (size 1 there), and the sumdim dims are summed out of the product. As an equation: one letter
// per dim of that space.
Equation trilinear_equation(size_t space, const std::vector<std::vector<int64_t>>& expands,
                            const std::vector<int64_t>& sumdim) {
  auto has = [](const std::vector<int64_t>& v, size_t d) { return std::find(v.begin(), v.end(), int64_t(d)) != v.end(); };
  Equation e;
  for (const auto& expand : expands) {
    std::string subs;
    for (size_t d = 0; d < space; ++d)
      if (!has(expand, d)) subs += char('a' + d);
    e.inputs.push_back(subs);
  }
  for (size_t d = 0; d < space; ++d)
    if (!has(sumdim, d)) e.output += char('a' + d);
  return e;
}

}  // namespace

void register_einsum() {
  add({"aten.einsum.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const std::string& equation = a["equation"].str();
    const std::vector<Tensor*> operands = a.tensors("tensors");
    if (operands.empty()) throw ConversionError("einsum needs at least one operand");
    return contract_operands(ctx, target, name, parse(equation, operands), operands);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument eq = node_arg(n, "equation"), operands = node_arg(n, "tensors");
        if (!eq.is<std::string>() || malformed_equation(eq.as<std::string>()) || !operands.is<ir::Argument::List>())
          return false;
        for (const ir::Argument& t : operands.as<ir::Argument::List>())  // the engine multiplies matrices of floats
          if (!t.is_node() || !t.node()->meta.is_tensor() || !ir::is_floating(t.node()->meta.tensor.dtype)) return false;
        return dtypes_supported(n);
      }, "float operands; letters as subscripts, none repeated within one operand (no diagonals)"});
  // torch._trilinear (what F.bilinear / nn.Bilinear trace to): three operands multiplied in one
  // broadcast space and summed over sumdim, contracted pairwise like an einsum instead of
  // forming the product (for nn.Bilinear, [N, out, in1, in2]).
  add({"aten._trilinear.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const std::vector<Tensor*> operands{a.tensor("i1"), a.tensor("i2"), a.tensor("i3")};
    const size_t space = operands[0]->rank() + a.ints("expand1").size();
    return contract_operands(ctx, target, name,
                             trilinear_equation(space, {a.ints("expand1"), a.ints("expand2"), a.ints("expand3")}, a.ints("sumdim")),
                             operands);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        std::vector<std::vector<int64_t>> expands;
        size_t space = 0;
        for (const char* arg : {"i1", "i2", "i3"}) {
          const ir::TensorMeta* m = arg_meta(n, arg);
          if (!m || !ir::is_floating(m->dtype)) return false;
          const auto expand = ints_arg(node_arg(n, std::string("expand") + arg[1]));
          if (!expand) return false;
          if (space == 0) space = m->rank() + expand->size();
          if (m->rank() + expand->size() != space || space > 26) return false;
          expands.push_back(*expand);
        }
        // Every dim of the space is some operand's (a dim all three lack would be a size-1 output
        // dim no equation can name).
        for (size_t d = 0; d < space; ++d) {
          bool held = false;
          for (const auto& e : expands) held |= std::find(e.begin(), e.end(), int64_t(d)) == e.end();
          if (!held) return false;
        }
        return node_arg(n, "sumdim").is<ir::Argument::List>();
      }, "float operands, every dim held by one of them"});
}

}  // namespace kiln::conversion::converters
