// Lowering passes over the ATen-level IR.
#include "lowering/passes.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <optional>
#include <map>
#include <set>

#include "ir/schema.h"

namespace kiln::lowering {

namespace {

// An argument of a node by schema name when the table knows the op, else by position.
const ir::Argument* arg_of(const ir::Node& n, const std::string& name, size_t position) {
  if (const ir::Argument* k = n.kwarg(name)) return k;
  if (position < n.args.size()) return &n.args[position];
  return nullptr;
}

size_t index_in(const std::vector<ir::Node*>& order, const ir::Node* n) {
  return static_cast<size_t>(std::find(order.begin(), order.end(), n) - order.begin());
}

// In `users`' arguments (lists included), every reference to `from` becomes `to`: another node,
// or a constant once a symbolic int is known.
void substitute(ir::Graph& g, ir::Node* from, const ir::Argument& to, const std::vector<ir::Node*>& users) {
  std::function<ir::Argument(const ir::Argument&)> sub = [&](const ir::Argument& a) -> ir::Argument {
    if (a.is_node() && a.node() == from) return to;
    if (a.is_list()) {
      ir::Argument::List l;
      for (const auto& e : a.list()) l.push_back(sub(e));
      return l;
    }
    return a;
  };
  for (ir::Node* u : users) {
    std::vector<ir::Argument> args;
    for (const auto& a : u->args) args.push_back(sub(a));
    std::vector<std::pair<std::string, ir::Argument>> kwargs;
    for (const auto& [k, a] : u->kwargs) kwargs.emplace_back(k, sub(a));
    g.set_args(u, std::move(args));
    g.set_kwargs(u, std::move(kwargs));
  }
}

// Does the op's result share memory with an input? What its schema says ("-> Tensor(a)": view,
// reshape, permute, slice, split, contiguous, detach, ...), plus getitem of a split's results and
// _unsafe_view (a view whose schema promises a fresh tensor). A mutation through one reaches the input.
bool is_view_op(const std::string& target) {
  if (target == "getitem" || target == "aten._unsafe_view.default") return true;
  const ir::OpSchema* schema = ir::find_schema(target);
  return schema && schema->view;
}

}  // namespace

// ---- aliases ---------------------------------------------------------------------------------------

namespace {

// PyTorch's alias ops (NumPy spellings) and the op each one is; arguments keep their positions, and
// the named ones whose names differ are renamed. One converter per op then serves both spellings.
struct Alias {
  const char* canonical;
  std::vector<std::pair<std::string, std::string>> renamed_kwargs;
};

const std::map<std::string, Alias>& aliases() {
  static const std::map<std::string, Alias> table = {
      {"aten.swapaxes.default", {"aten.transpose.int", {{"axis0", "dim0"}, {"axis1", "dim1"}}}},
      {"aten.swapdims.default", {"aten.transpose.int", {}}},
      {"aten.moveaxis.int", {"aten.movedim.int", {}}},
      {"aten.moveaxis.intlist", {"aten.movedim.intlist", {}}},
      {"aten.absolute.default", {"aten.abs.default", {}}},
      {"aten.arccos.default", {"aten.acos.default", {}}},
      {"aten.arcsin.default", {"aten.asin.default", {}}},
      {"aten.arctan.default", {"aten.atan.default", {}}},
      {"aten.arccosh.default", {"aten.acosh.default", {}}},
      {"aten.arcsinh.default", {"aten.asinh.default", {}}},
      {"aten.arctanh.default", {"aten.atanh.default", {}}},
      {"aten.arctan2.default", {"aten.atan2.default", {}}},
      {"aten.clip.default", {"aten.clamp.default", {}}},
      {"aten.clip.Tensor", {"aten.clamp.Tensor", {}}},
      {"aten.fix.default", {"aten.trunc.default", {}}},
      {"aten.negative.default", {"aten.neg.default", {}}},
      {"aten.multiply.Tensor", {"aten.mul.Tensor", {}}},
      {"aten.multiply.Scalar", {"aten.mul.Scalar", {}}},
      {"aten.subtract.Tensor", {"aten.sub.Tensor", {}}},
      {"aten.subtract.Scalar", {"aten.sub.Scalar", {}}},
      {"aten.divide.Tensor", {"aten.div.Tensor", {}}},
      {"aten.divide.Scalar", {"aten.div.Scalar", {}}},
      {"aten.divide.Tensor_mode", {"aten.div.Tensor_mode", {}}},
      {"aten.true_divide.Tensor", {"aten.div.Tensor", {}}},
      {"aten.greater.Tensor", {"aten.gt.Tensor", {}}},
      {"aten.greater.Scalar", {"aten.gt.Scalar", {}}},
      {"aten.greater_equal.Tensor", {"aten.ge.Tensor", {}}},
      {"aten.greater_equal.Scalar", {"aten.ge.Scalar", {}}},
      {"aten.less.Tensor", {"aten.lt.Tensor", {}}},
      {"aten.less.Scalar", {"aten.lt.Scalar", {}}},
      {"aten.less_equal.Tensor", {"aten.le.Tensor", {}}},
      {"aten.less_equal.Scalar", {"aten.le.Scalar", {}}},
      {"aten.not_equal.Tensor", {"aten.ne.Tensor", {}}},
      {"aten.not_equal.Scalar", {"aten.ne.Scalar", {}}},
      {"aten.concat.default", {"aten.cat.default", {}}},
      {"aten.concatenate.default", {"aten.cat.default", {}}},
      {"aten.special_expit.default", {"aten.sigmoid.default", {}}},
      // "unsafe" only for autograd (no version-counter checks on the pieces): the same split for
      // inference. PyTorch 1.13 decomposes nn.LSTM / nn.GRU gates into it.
      {"aten.unsafe_split.Tensor", {"aten.split.Tensor", {}}},
      {"aten.unsafe_split_with_sizes.default", {"aten.split_with_sizes.default", {}}},
      {"aten.unsafe_chunk.default", {"aten.chunk.default", {}}},
  };
  return table;
}

}  // namespace

size_t canonicalize_aliases(ir::ExportedProgram& program) {
  ir::Graph& g = program.graph;
  size_t changed = 0;
  for (ir::Node* n : g.nodes()) {
    if (n->kind != ir::NodeKind::CallFunction) continue;
    // The in-place spelling ("aten.multiply_.Tensor") maps to the canonical in-place op.
    std::string t = n->target;
    const size_t dot = t.rfind('.');
    const bool in_place = dot != std::string::npos && dot > 0 && t[dot - 1] == '_' && t.compare(0, 7, "aten.__") != 0;
    if (in_place) t.erase(dot - 1, 1);
    const auto it = aliases().find(t);
    if (it == aliases().end()) continue;
    std::string canonical = it->second.canonical;
    if (in_place) canonical.insert(canonical.rfind('.'), "_");
    if (!ir::find_schema(canonical)) continue;
    n->target = canonical;
    if (!it->second.renamed_kwargs.empty()) {
      std::vector<std::pair<std::string, ir::Argument>> kwargs = n->kwargs;
      for (auto& [key, value] : kwargs)
        for (const auto& [from, to] : it->second.renamed_kwargs)
          if (key == from) key = to;
      g.set_kwargs(n, std::move(kwargs));
    }
    ++changed;
  }
  return changed;
}

// ---- no-ops ---------------------------------------------------------------------------------------

size_t remove_noops(ir::ExportedProgram& program) {
  static const std::set<std::string> kIdentity = {
      "aten.clone.default", "aten.contiguous.default", "aten.alias.default", "aten.detach.default",
      "aten.detach_.default", "aten.lift_fresh_copy.default", "aten.lift_fresh.default"};
  ir::Graph& g = program.graph;
  size_t changed = 0;
  for (ir::Node* n : g.nodes()) {
    if (n->kind != ir::NodeKind::CallFunction) continue;
    const std::string& t = n->target;
    const bool is_assert = t.rfind("aten._assert", 0) == 0 || t.rfind("aten.sym_constrain_range", 0) == 0;
    if (is_assert) {
      if (n->users().empty()) {
        g.erase(n);
        ++changed;
      }
      continue;
    }
    bool identity = kIdentity.count(t) > 0;
    // In-place dropout in eval mode leaves its input unchanged too: readers of either see the input.
    if (t == "aten.dropout.default" || t == "aten.feature_dropout.default" || t == "aten.alpha_dropout.default" ||
        t == "aten.dropout_.default" || t == "aten.feature_dropout_.default") {
      const ir::Argument* train = arg_of(*n, "train", 2);
      const ir::Argument* p = arg_of(*n, "p", 1);
      const bool eval = train && train->is<bool>() && !train->as<bool>();
      const bool p_zero = p && ((p->is<double>() && p->as<double>() == 0.0) || (p->is<int64_t>() && p->as<int64_t>() == 0));
      identity = eval || p_zero;
    }
    if (t == "aten._to_copy.default" && !n->args.empty() && n->args[0].is_node()) {
      // Same dtype (device moves are the runtime's business): a copy with no effect on values.
      const ir::Node* in = n->args[0].node();
      identity = in->meta.is_tensor() && n->meta.is_tensor() && in->meta.tensor.dtype == n->meta.tensor.dtype;
    }
    if (!identity || n->args.empty() || !n->args[0].is_node()) continue;
    // A view of the copy (PyTorch 1.13 traces x.expand(...).reshape(...) as clone then
    // _unsafe_view) becomes a reshape of its input: the same values, and where the view runs in
    // PyTorch it still works on the input's strides (a view of an expanded tensor would not).
    for (ir::Node* u : n->users())
      if ((u->target == "aten.view.default" || u->target == "aten._unsafe_view.default") && !u->args.empty() &&
          u->args[0].is_node() && u->args[0].node() == n)
        u->target = "aten.reshape.default";
    g.replace_all_uses_with(n, n->args[0].node());
    g.erase(n);
    ++changed;
  }
  return changed;
}

// ---- in-place -> functional ---------------------------------------------------------------------

namespace {

bool is_scatterable_view(const ir::Node* v) {
  return v->kind == ir::NodeKind::CallFunction && (v->target == "aten.slice.Tensor" || v->target == "aten.select.int") &&
         !v->args.empty() && v->args[0].is_node();
}

// The argument of a view node, by name or position, else `fallback`.
ir::Argument view_arg(const ir::Node& v, const std::string& name, size_t pos, ir::Argument fallback) {
  const ir::Argument* a = arg_of(v, name, pos);
  return a ? *a : fallback;
}

}  // namespace

size_t inplace_to_functional(ir::ExportedProgram& program) {
  ir::Graph& g = program.graph;
  size_t changed = 0;
  for (ir::Node* n : g.nodes()) {
    if (n->kind != ir::NodeKind::CallFunction || n->args.empty() || !n->args[0].is_node()) continue;
    // "aten.add_.Tensor" -> "aten.add.Tensor"
    const std::string& t = n->target;
    if (t.rfind("aten.", 0) != 0) continue;
    const size_t dot = t.find('.', 5);
    if (dot == std::string::npos || dot < 6 || t[dot - 1] != '_') continue;
    std::string functional;
    if (t[dot - 2] != '_') {
      functional = t.substr(0, dot - 1) + t.substr(dot);
    } else if (t.compare(5, 3, "__i") == 0 && dot > 10) {
      // Python's augmented operators: "aten.__iand__.Tensor" (mask &= m) -> "aten.__and__.Tensor".
      functional = "aten.__" + t.substr(8);
    } else {
      continue;
    }
    if (!ir::find_schema(functional)) continue;

    // The mutated value, and the chain of slice/select views it may be of: chain[0] is the base.
    std::vector<ir::Node*> chain{n->args[0].node()};
    while (is_scatterable_view(chain.front())) chain.insert(chain.begin(), chain.front()->args[0].node());
    ir::Node* base = chain.front();
    // A mutation of a user input, a weight or another kind of view would be visible elsewhere.
    // (contiguous() is one: it returns its input itself when that is contiguous already.)
    if (base->kind != ir::NodeKind::CallFunction || is_view_op(base->target)) continue;

    const std::vector<ir::Node*> order = g.nodes();
    const size_t at = index_in(order, n);
    // Readers after the mutation, per chain value; views outside the chain that outlive the
    // mutation would alias it: keep the in-place op then.
    bool safe = true;
    std::vector<std::vector<ir::Node*>> later(chain.size());
    for (size_t i = 0; i < chain.size() && safe; ++i) {
      for (ir::Node* u : chain[i]->users()) {
        if (u == n || (i + 1 < chain.size() && u == chain[i + 1])) continue;
        const bool after = index_in(order, u) > at;
        if (after) later[i].push_back(u);
        else if (is_view_op(u->target)) {
          for (ir::Node* uu : u->users()) safe = safe && index_in(order, uu) < at;
        }
      }
    }
    if (!safe) continue;

    n->target = functional;  // n now computes the new value of chain.back()
    substitute(g, chain.back(), n, later.back());
    // Write the new value back through the views: base' = slice_scatter(base, ..., view') ...
    ir::Node* next = at + 1 < order.size() ? order[at + 1] : nullptr;
    ir::Node* updated = n;
    for (size_t i = chain.size() - 1; i > 0; --i) {
      ir::Node* view = chain[i];
      ir::Node* parent = chain[i - 1];
      ir::Node* scatter;
      if (view->target == "aten.slice.Tensor") {
        scatter = g.create(ir::NodeKind::CallFunction, view->name + "_scatter", "aten.slice_scatter.default",
                           {parent, updated, view_arg(*view, "dim", 1, int64_t{0}), view_arg(*view, "start", 2, ir::None{}),
                            view_arg(*view, "end", 3, ir::None{}), view_arg(*view, "step", 4, int64_t{1})},
                           {}, next);
      } else {
        scatter = g.create(ir::NodeKind::CallFunction, view->name + "_scatter", "aten.select_scatter.default",
                           {parent, updated, view_arg(*view, "dim", 1, int64_t{0}), view_arg(*view, "index", 2, int64_t{0})},
                           {}, next);
      }
      scatter->meta = parent->meta;
      substitute(g, parent, scatter, later[i - 1]);
      updated = scatter;
    }
    ++changed;
  }
  return changed;
}

// ---- weight constant folding --------------------------------------------------------------------

namespace {

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> s(sizes.size(), 1);
  for (int i = static_cast<int>(sizes.size()) - 2; i >= 0; --i) s[i] = s[i + 1] * sizes[i + 1];
  return s;
}

std::optional<std::vector<int64_t>> ints_of(const ir::Argument& a) {
  std::vector<int64_t> out;
  if (a.is<int64_t>()) return std::vector<int64_t>{a.as<int64_t>()};
  if (!a.is_list()) return std::nullopt;
  for (const auto& e : a.list()) {
    if (!e.is<int64_t>()) return std::nullopt;
    out.push_back(e.as<int64_t>());
  }
  return out;
}

// The view `n` makes of weight `w`, or nullopt when `n` is not a pure layout op kiln can fold.
std::optional<ir::Weight> fold_view(const ir::Node& n, const ir::Weight& w) {
  std::vector<int64_t> sizes, strides;
  for (const auto& s : w.meta.sizes) {
    if (!s.is_constant()) return std::nullopt;
    sizes.push_back(s.value);
  }
  for (const auto& s : w.meta.strides) strides.push_back(s.value);
  if (strides.size() != sizes.size()) strides = contiguous_strides(sizes);
  const int64_t rank = static_cast<int64_t>(sizes.size());
  auto norm = [&](int64_t d, int64_t r) { return d < 0 ? d + r : d; };
  const std::string& t = n.target;
  std::vector<int64_t> ns, nt;
  if (t == "aten.t.default" || t == "aten.transpose.int" || t == "aten.permute.default") {
    std::vector<int64_t> perm(sizes.size());
    for (int64_t i = 0; i < rank; ++i) perm[i] = i;
    if (t == "aten.t.default") {
      if (rank == 2) std::swap(perm[0], perm[1]);
    } else if (t == "aten.transpose.int") {
      if (n.args.size() < 3 || !n.args[1].is<int64_t>() || !n.args[2].is<int64_t>()) return std::nullopt;
      std::swap(perm.at(norm(n.args[1].as<int64_t>(), rank)), perm.at(norm(n.args[2].as<int64_t>(), rank)));
    } else {
      auto p = n.args.size() > 1 ? ints_of(n.args[1]) : std::nullopt;
      if (!p || static_cast<int64_t>(p->size()) != rank) return std::nullopt;
      for (int64_t i = 0; i < rank; ++i) perm[i] = norm((*p)[i], rank);
    }
    for (int64_t i = 0; i < rank; ++i) {
      ns.push_back(sizes.at(perm[i]));
      nt.push_back(strides.at(perm[i]));
    }
  } else if (t == "aten.view.default" || t == "aten.reshape.default" || t == "aten._unsafe_view.default" ||
             t == "aten.unsqueeze.default" || t == "aten.squeeze.dim" || t == "aten.squeeze.dims" ||
             t == "aten.squeeze.default" || t == "aten.flatten.using_ints") {
    // Reshapes of a contiguous weight: new sizes from the node's (static) metadata.
    if (!w.is_contiguous() || !n.meta.is_tensor() || !n.meta.tensor.is_static()) return std::nullopt;
    for (const auto& s : n.meta.tensor.sizes) ns.push_back(s.value);
    nt = contiguous_strides(ns);
  } else {
    return std::nullopt;
  }
  ir::Weight out = w;
  out.kind = ir::Weight::Kind::Constant;
  out.meta.sizes.assign(ns.begin(), ns.end());
  out.meta.strides.assign(nt.begin(), nt.end());
  return out;
}

}  // namespace

size_t fold_weight_constants(ir::ExportedProgram& program) {
  ir::Graph& g = program.graph;
  size_t changed = 0;
  for (ir::Node* n : g.nodes()) {
    if (n->kind != ir::NodeKind::CallFunction || n->args.empty() || !n->args[0].is_node()) continue;
    ir::Node* src = n->args[0].node();
    if (src->kind != ir::NodeKind::GetAttr) continue;
    auto it = program.weights.find(src->target);
    if (it == program.weights.end()) continue;
    std::optional<ir::Weight> folded = fold_view(*n, it->second);
    if (!folded) continue;
    std::string name = "_folded." + n->name;
    while (program.weights.count(name)) name += "_";
    folded->name = name;
    if (n->meta.is_tensor()) folded->meta.dtype = n->meta.tensor.dtype;
    program.weights[name] = *folded;
    ir::Node* attr = g.create(ir::NodeKind::GetAttr, n->name + "_folded", name, {}, {}, n);
    attr->meta = n->meta;
    g.replace_all_uses_with(n, attr);
    g.erase(n);
    if (src->users().empty()) {
      const std::string old = src->target;
      g.erase(src);
      bool used = false;  // drop the original weight when no other get_attr reads it
      for (ir::Node* m : g.nodes()) used = used || (m->kind == ir::NodeKind::GetAttr && m->target == old);
      if (!used) program.weights.erase(old);
    }
    ++changed;
  }
  return changed;
}

// ---- gelu (tanh) written out ------------------------------------------------------------------

namespace {

std::optional<double> number(const ir::Argument& a) {
  if (a.is<double>()) return a.as<double>();
  if (a.is<int64_t>()) return double(a.as<int64_t>());
  return std::nullopt;
}

bool near(double v, double want) { return std::abs(v - want) <= 1e-6 * std::abs(want); }

// The node operand and the number when `n` is the binary op `op` (mul, add, div: its .Tensor or
// .Scalar overload, no alpha) of a node and a literal number; either order for mul and add, the
// node first for div.
std::optional<std::pair<ir::Node*, double>> node_and_number(const ir::Node* n, const char* op) {
  if (!n || n->kind != ir::NodeKind::CallFunction || n->args.size() != 2 || !n->kwargs.empty()) return std::nullopt;
  if (n->target != std::string("aten.") + op + ".Tensor" && n->target != std::string("aten.") + op + ".Scalar")
    return std::nullopt;
  const bool commutes = std::string(op) != "div";
  for (int i = 0; i < (commutes ? 2 : 1); ++i) {
    const ir::Argument &a = n->args[i], &b = n->args[1 - i];
    if (a.is_node() && number(b)) return std::pair{a.node(), *number(b)};
  }
  return std::nullopt;
}

// The node operand when `n` is `op` of a node and (about) the number `c`, else null.
ir::Node* with_number(const ir::Node* n, const char* op, double c) {
  const auto m = node_and_number(n, op);
  return m && near(m->second, c) ? m->first : nullptr;
}

ir::Node* only_node_arg(const ir::Node* n, const char* target) {
  return n && n->is_op(target) && !n->args.empty() && n->args[0].is_node() ? n->args[0].node() : nullptr;
}

bool single_use(const ir::Node* n) { return n && n->users().size() == 1; }

// x when `outer` is 0.5*x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), its intermediates used
// nowhere else.
ir::Node* gelu_tanh_input(ir::Node* outer) {
  if (!outer->is_op("aten.mul.Tensor") || outer->args.size() != 2 || !outer->args[0].is_node() || !outer->args[1].is_node())
    return nullptr;
  for (int i = 0; i < 2; ++i) {
    ir::Node* half = outer->args[i].node();
    ir::Node* one_plus = outer->args[1 - i].node();
    ir::Node* x = with_number(half, "mul", 0.5);
    ir::Node* tanh = with_number(one_plus, "add", 1.0);
    ir::Node* scaled = only_node_arg(tanh, "aten.tanh.default");
    ir::Node* inner = with_number(scaled, "mul", 0.7978845608028654);
    if (!x || !inner || !inner->is_op("aten.add.Tensor") || inner->args.size() != 2 || !inner->kwargs.empty()) continue;
    for (int j = 0; j < 2; ++j) {
      const ir::Argument &a = inner->args[j], &b = inner->args[1 - j];
      if (!a.is_node() || a.node() != x || !b.is_node()) continue;
      ir::Node* power = with_number(b.node(), "mul", 0.044715);  // 0.044715 * x^3
      if (!power || !power->is_op("aten.pow.Tensor_Scalar") || power->args.size() != 2 || !power->args[0].is_node() ||
          power->args[0].node() != x || !number(power->args[1]) || *number(power->args[1]) != 3.0)
        continue;
      for (const ir::Node* t : {half, one_plus, tanh, scaled, inner, b.node(), power})
        if (!single_use(t)) return nullptr;
      return x;
    }
  }
  return nullptr;
}

// A node turned into another op in place: its name, meta and users stay.
struct Rewrite {
  std::string target;
  std::vector<ir::Argument> args;
  std::vector<std::pair<std::string, ir::Argument>> kwargs;
};

// Applies `match`'s rewrite to every node it gives one for, then drops what only the old forms used.
size_t rewrite_in_place(ir::Graph& g, const std::function<std::optional<Rewrite>(ir::Node*)>& match) {
  size_t changed = 0;
  for (ir::Node* n : g.nodes()) {
    std::optional<Rewrite> r = match(n);
    if (!r) continue;
    n->target = std::move(r->target);
    g.set_args(n, std::move(r->args));
    g.set_kwargs(n, std::move(r->kwargs));
    ++changed;
  }
  if (changed) g.eliminate_dead_code();
  return changed;
}

}  // namespace

size_t fuse_gelu_tanh(ir::ExportedProgram& program) {
  return rewrite_in_place(program.graph, [](ir::Node* n) -> std::optional<Rewrite> {
    ir::Node* x = n->kind == ir::NodeKind::CallFunction ? gelu_tanh_input(n) : nullptr;
    if (!x) return std::nullopt;
    return Rewrite{"aten.gelu.default", {ir::Argument(x)}, {{"approximate", ir::Argument(std::string("tanh"))}}};
  });
}

// ---- attention written out --------------------------------------------------------------------

namespace {

bool same_sizes(const ir::Node* a, const ir::Node* b) {
  return a->meta.is_tensor() && b->meta.is_tensor() && a->meta.tensor.str() == b->meta.tensor.str();
}

// The same sizes, whatever the dtypes.
bool same_dims(const ir::Node* a, const ir::Node* b) {
  if (!a->meta.is_tensor() || !b->meta.is_tensor() || a->meta.tensor.rank() != b->meta.tensor.rank()) return false;
  for (size_t i = 0; i < a->meta.tensor.rank(); ++i)
    if (a->meta.tensor.sizes[i].str() != b->meta.tensor.sizes[i].str()) return false;
  return true;
}

// Normalized axis `a` of a rank-`r` tensor, or -1 when out of range.
int64_t axis_of(const ir::Argument& a, int64_t r) {
  if (!a.is<int64_t>()) return -1;
  const int64_t x = a.as<int64_t>() < 0 ? a.as<int64_t>() + r : a.as<int64_t>();
  return x >= 0 && x < r ? x : -1;
}

// k when `kt` is k with its last two dims swapped (transpose.int or a permute doing only that).
ir::Node* untransposed(const ir::Node* kt) {
  if (!kt || kt->kind != ir::NodeKind::CallFunction || kt->args.empty() || !kt->args[0].is_node() ||
      !kt->meta.is_tensor())
    return nullptr;
  const int64_t r = int64_t(kt->meta.tensor.rank());
  if (r < 2) return nullptr;
  if (kt->is_op("aten.transpose.int") && kt->args.size() == 3) {
    const int64_t a = axis_of(kt->args[1], r), b = axis_of(kt->args[2], r);
    if (std::min(a, b) == r - 2 && std::max(a, b) == r - 1) return kt->args[0].node();
  }
  if (kt->is_op("aten.permute.default") && kt->args.size() == 2 && kt->args[1].is_list()) {
    const auto& perm = kt->args[1].list();
    if (int64_t(perm.size()) != r) return nullptr;
    for (int64_t i = 0; i < r; ++i) {
      const int64_t want = i == r - 2 ? r - 1 : i == r - 1 ? r - 2 : i;
      if (axis_of(perm[size_t(i)], r) != want) return nullptr;
    }
    return kt->args[0].node();
  }
  return nullptr;
}

// The softmax over the last dim that `p` is (softmax.int, _softmax, _safe_softmax), its input.
// A dtype conversion of a tensor node: aten.to.dtype (training IR) or aten._to_copy (core ATen)
// with nothing but the dtype set.
bool is_cast(const ir::Node* n) {
  if (!n || n->args.empty() || !n->args[0].is_node() || !n->meta.is_tensor() || !n->args[0].node()->meta.is_tensor())
    return false;
  if (n->is_op("aten.to.dtype")) return true;
  if (!n->is_op("aten._to_copy.default")) return false;
  for (const auto& [key, value] : n->kwargs)
    if (key != "dtype" && !value.is_none() && key != "layout" && key != "device") return false;
  return true;
}

// The input of a softmax over the last dim whose input has dtype `in_dtype` (its own output's
// dtype unless a softmax(dtype=...) upcasts), or null.
ir::Node* softmax_input(const ir::Node* p, ir::ScalarType in_dtype) {
  if (!p || p->kind != ir::NodeKind::CallFunction || p->args.size() < 2 || !p->args[0].is_node() || !p->meta.is_tensor())
    return nullptr;
  const bool softmax = p->is_op("aten.softmax.int") || p->is_op("aten._softmax.default") || p->is_op("aten._safe_softmax.default");
  if (!softmax || axis_of(p->args[1], int64_t(p->meta.tensor.rank())) != int64_t(p->meta.tensor.rank()) - 1) return nullptr;
  if (p->is_op("aten._softmax.default") && p->args.size() > 2 && p->args[2].is<bool>() && p->args[2].as<bool>())
    return nullptr;  // half_to_float
  ir::Node* x = p->args[0].node();
  if (!x->meta.is_tensor()) return nullptr;
  if (x->meta.tensor.dtype == p->meta.tensor.dtype || x->meta.tensor.dtype == in_dtype) return x;
  return nullptr;  // softmax(dtype=...) to anything else
}
ir::Node* softmax_input(const ir::Node* p) { return p && p->meta.is_tensor() ? softmax_input(p, p->meta.tensor.dtype) : nullptr; }

// X when `n` is X, or X expanded to its own sizes (a no-op expand, as matmul's decomposition adds).
ir::Node* through_noop_expand(ir::Node* n) {
  if (n && n->is_op("aten.expand.default") && !n->args.empty() && n->args[0].is_node() && single_use(n) &&
      same_sizes(n, n->args[0].node()))
    return n->args[0].node();
  return n;
}

// a, b when `n` is a matmul of them over matching batch dims: aten.matmul itself, or the form
// core ATen decomposes it into, view(bmm(view(expand(a)), view(expand(b)))) back to the batch dims.
bool as_matmul(ir::Node* n, ir::Node*& a, ir::Node*& b) {
  if (!n || n->kind != ir::NodeKind::CallFunction || n->args.size() < 2 || !n->args[0].is_node()) return false;
  if (n->is_op("aten.matmul.default")) {
    if (!n->args[1].is_node()) return false;
    a = n->args[0].node();
    b = n->args[1].node();
    return true;
  }
  if (!n->is_op("aten.view.default") && !n->is_op("aten._unsafe_view.default") && !n->is_op("aten.reshape.default"))
    return false;
  ir::Node* bmm = n->args[0].node();
  if (!bmm->is_op("aten.bmm.default") || bmm->args.size() != 2 || !single_use(bmm) || !n->meta.is_tensor()) return false;
  ir::Node* operands[2];
  ir::Node* flat[2];
  for (int i = 0; i < 2; ++i) {
    ir::Node* v = bmm->args[i].is_node() ? bmm->args[i].node() : nullptr;
    if (!v || !(v->is_op("aten.view.default") || v->is_op("aten._unsafe_view.default") || v->is_op("aten.reshape.default")) ||
        !single_use(v) || v->args.empty() || !v->args[0].is_node() || !v->meta.is_tensor() || v->meta.tensor.rank() != 3)
      return false;
    flat[i] = v;
    operands[i] = through_noop_expand(v->args[0].node());
  }
  // Same rank and batch dims as the result, and [M, K] x [K, N] -> [M, N] in the last two.
  const auto& out = n->meta.tensor.sizes;
  const size_t r = out.size();
  for (ir::Node* o : operands)
    if (!o->meta.is_tensor() || o->meta.tensor.rank() != r) return false;
  const auto &sa = operands[0]->meta.tensor.sizes, &sb = operands[1]->meta.tensor.sizes;
  if (r < 3) return false;
  for (size_t d = 0; d + 2 < r; ++d)
    if (sa[d].str() != out[d].str() || sb[d].str() != out[d].str()) return false;
  if (sa[r - 2].str() != out[r - 2].str() || sb[r - 1].str() != out[r - 1].str() || sa[r - 1].str() != sb[r - 2].str())
    return false;
  // The views only merge the batch dims: each keeps its operand's matrix dims, and so does the
  // bmm's result (equal element counts then make dim 0 the batch product).
  const auto &fa = flat[0]->meta.tensor.sizes, &fb = flat[1]->meta.tensor.sizes;
  if (!bmm->meta.is_tensor() || bmm->meta.tensor.rank() != 3) return false;
  const auto& fo = bmm->meta.tensor.sizes;
  if (fa[1].str() != sa[r - 2].str() || fa[2].str() != sa[r - 1].str() || fb[1].str() != sb[r - 2].str() ||
      fb[2].str() != sb[r - 1].str() || fo[1].str() != out[r - 2].str() || fo[2].str() != out[r - 1].str())
    return false;
  a = operands[0];
  b = operands[1];
  return true;
}

// x when `p` is PyTorch's safe softmax written out (core ATen's decomposition of _safe_softmax,
// which sdpa's decomposition uses): where(not(any(not(x == -inf), -1, keepdim)),
// full_like(softmax(x, -1), 0), softmax(x, -1)): rows with nothing kept give zeros, exactly what
// the fused attention gives.
ir::Node* safe_softmax_input(ir::Node* p) {
  if (!p->is_op("aten.where.self") || p->args.size() != 3 || !p->args[0].is_node() || !p->args[1].is_node() ||
      !p->args[2].is_node())
    return nullptr;
  ir::Node *cond = p->args[0].node(), *zeros = p->args[1].node(), *sm = p->args[2].node();
  ir::Node* x = softmax_input(sm);
  if (!x || !x->meta.is_tensor()) return nullptr;
  const auto zero = zeros->args.size() >= 2 ? number(zeros->args[1]) : std::nullopt;
  if (!zeros->is_op("aten.full_like.default") || !zeros->args[0].is_node() || zeros->args[0].node() != sm || !zero ||
      *zero != 0)
    return nullptr;
  ir::Node* any = only_node_arg(cond, "aten.logical_not.default");
  const int64_t r = int64_t(x->meta.tensor.rank());
  if (!any || !any->is_op("aten.any.dim") || any->args.size() < 3 || axis_of(any->args[1], r) != r - 1 ||
      !any->args[2].is<bool>() || !any->args[2].as<bool>() || !any->args[0].is_node())
    return nullptr;
  ir::Node* eq = only_node_arg(any->args[0].node(), "aten.logical_not.default");
  const auto inf = eq && eq->args.size() == 2 ? number(eq->args[1]) : std::nullopt;
  if (!eq || !eq->is_op("aten.eq.Scalar") || !eq->args[0].is_node() || eq->args[0].node() != x || !inf ||
      !(std::isinf(*inf) && *inf < 0))
    return nullptr;
  return x;
}

struct EagerAttention {
  ir::Node *q = nullptr, *k = nullptr, *mask = nullptr;
  double scale = 1.0;
};

// `s` = [matmul(q, kᵀ) (* c | / c)], each used once: q, k and the scale.
// `top_users`: how many users `s` itself may have (2 when the safe softmax's -inf test reads it too).
std::optional<EagerAttention> scores(ir::Node* s, size_t top_users = 1) {
  EagerAttention a;
  ir::Node* m = s;
  const auto mul = node_and_number(s, "mul"), div = node_and_number(s, "div");  // (c / scores is no scaling)
  if (mul || div) {
    const double c = mul ? mul->second : div->second;
    if (c == 0 || s->users().size() > top_users) return std::nullopt;
    a.scale = mul ? c : 1.0 / c;
    m = mul ? mul->first : div->first;
    top_users = 1;
  }
  ir::Node* kt = nullptr;
  if (m->users().size() > top_users || !as_matmul(m, a.q, kt)) return std::nullopt;
  // sdpa's decomposition scales q and kᵀ by sqrt(scale) each: the product is the scale
  for (ir::Node** operand : {&a.q, &kt})
    if (const auto scaled = node_and_number(*operand, "mul")) {
      a.scale *= scaled->second;
      *operand = scaled->first;
    }
  a.k = untransposed(kt);
  if (!a.k) return std::nullopt;
  return a;
}

// The sdpa `out` is, when it ends attention written out (see the header).
std::optional<Rewrite> eager_attention(ir::Node* out) {
  ir::Node *p = nullptr, *v = nullptr;
  if (!as_matmul(out, p, v)) return std::nullopt;
  // softmax(...).to(its own dtype) is the softmax
  if (p->is_op("aten.to.dtype") && single_use(p) && p->args.size() >= 2 && p->args[0].is_node() &&
      same_sizes(p, p->args[0].node()) && p->meta.tensor.dtype == p->args[0].node()->meta.tensor.dtype)
    p = p->args[0].node();
  // Half-precision models' softmax in fp32: softmax(x.float()).to(x.dtype), or softmax(x,
  // dtype=float32).to(x.dtype) (transformers' eager attention). sdpa's kernels keep their softmax
  // in fp32 anyway and round the probabilities to the inputs' dtype before P·V, as the cast does.
  const ir::ScalarType dt = p->meta.is_tensor() ? p->meta.tensor.dtype : ir::ScalarType::Float;
  const bool half = dt == ir::ScalarType::Half || dt == ir::ScalarType::BFloat16;
  bool upcast = false;
  if (half && is_cast(p) && single_use(p) && same_dims(p, p->args[0].node()) &&
      p->args[0].node()->meta.tensor.dtype == ir::ScalarType::Float) {
    p = p->args[0].node();
    upcast = true;
  }
  p = through_noop_expand(p);
  ir::Node* x = single_use(p) ? softmax_input(p, upcast ? dt : p->meta.tensor.dtype) : nullptr;
  if (x && upcast && is_cast(x) && single_use(x) && x->args[0].node()->meta.tensor.dtype == dt) x = x->args[0].node();
  if (upcast && (!x || x->meta.tensor.dtype != dt)) return std::nullopt;
  if (x && !single_use(x)) return std::nullopt;
  const bool safe = !x;
  if (!x) x = single_use(p) ? safe_softmax_input(p) : nullptr;  // (x then also feeds its -inf test)
  if (!x || (safe && x->users().size() != 2)) return std::nullopt;
  std::optional<EagerAttention> a = scores(x, safe ? 2 : 1);
  if (!a && x->is_op("aten.add.Tensor") && x->args.size() == 2 && x->kwargs.empty() && x->args[0].is_node() &&
      x->args[1].is_node()) {
    for (int i = 0; i < 2 && !a; ++i) {
      ir::Node* s = x->args[i].node();
      ir::Node* mask = x->args[1 - i].node();
      // the mask must not broadcast the scores up, nor change their dtype
      if (!same_sizes(s, x) || !mask->meta.is_tensor() || mask->meta.tensor.dtype != x->meta.tensor.dtype ||
          mask->meta.tensor.rank() > x->meta.tensor.rank())
        continue;
      a = scores(s);
      if (a) a->mask = mask;
    }
  }
  if (!a) return std::nullopt;
  const size_t rank = out->meta.is_tensor() ? out->meta.tensor.rank() : 0;
  bool ranks_agree = rank >= 2;
  for (const ir::Node* t : {a->q, a->k, v}) ranks_agree = ranks_agree && t->meta.is_tensor() && t->meta.tensor.rank() == rank;
  if (!ranks_agree) return std::nullopt;
  const ir::Argument mask = a->mask ? ir::Argument(a->mask) : ir::Argument();
  return Rewrite{"aten.scaled_dot_product_attention.default",
                 {ir::Argument(a->q), ir::Argument(a->k), ir::Argument(v), mask},
                 {{"scale", ir::Argument(a->scale)}}};
}

}  // namespace

size_t fuse_eager_attention(ir::ExportedProgram& program) { return rewrite_in_place(program.graph, eager_attention); }

size_t unbroadcast_matmul_weights(ir::ExportedProgram& program) {
  return rewrite_in_place(program.graph, [](ir::Node* n) -> std::optional<Rewrite> {
    if (!n->is_op("aten.bmm.default") || n->args.size() != 2 || !n->args[0].is_node() || !n->args[1].is_node())
      return std::nullopt;
    ir::Node* flat = n->args[1].node();
    if (!(flat->is_op("aten.view.default") || flat->is_op("aten._unsafe_view.default") ||
          flat->is_op("aten.reshape.default")) ||
        !single_use(flat) || flat->args.empty() || !flat->args[0].is_node() || !same_sizes(flat, flat->args[0].node()))
      return std::nullopt;
    ir::Node* expand = flat->args[0].node();
    if (!expand->is_op("aten.expand.default") || !single_use(expand) || expand->args.empty() ||
        !expand->args[0].is_node() || !expand->meta.is_tensor())
      return std::nullopt;
    ir::Node* w = expand->args[0].node();
    if (!w->meta.is_tensor() || w->meta.tensor.rank() != 2 || expand->meta.tensor.rank() != 3) return std::nullopt;
    const auto& ws = w->meta.tensor.sizes;
    const auto& es = expand->meta.tensor.sizes;
    if (!(ws[0] == es[1]) || !(ws[1] == es[2])) return std::nullopt;
    return Rewrite{"aten.matmul.default", {n->args[0], ir::Argument(w)}, {}};
  });
}

// ---- symbolic ints --------------------------------------------------------------------------------

size_t canonicalize_symbolic(ir::ExportedProgram& program) {
  ir::Graph& g = program.graph;
  size_t changed = 0;
  for (ir::Node* n : g.nodes()) {
    if (n->kind != ir::NodeKind::CallFunction || n->meta.kind != ir::ValueMeta::Kind::SymInt) continue;
    std::optional<int64_t> v;
    if (n->meta.sym.is_constant()) v = n->meta.sym.value;
    else {
      try {
        if (auto e = n->meta.sym.evaluate({})) v = *e;
      } catch (const std::exception&) {  // an expression kiln cannot evaluate stays symbolic
      }
    }
    if (!v && n->target == "aten.sym_size.int" && n->args.size() >= 2 && n->args[0].is_node() &&
        n->args[1].is<int64_t>()) {
      const ir::Node* in = n->args[0].node();
      if (in->meta.is_tensor()) {
        int64_t d = n->args[1].as<int64_t>();
        const int64_t r = static_cast<int64_t>(in->meta.tensor.rank());
        if (d < 0) d += r;
        if (d >= 0 && d < r && in->meta.tensor.sizes[d].is_constant()) v = in->meta.tensor.sizes[d].value;
      }
    }
    if (!v) continue;
    substitute(g, n, ir::Argument(*v), std::vector<ir::Node*>(n->users()));  // a copy: substituting edits users()
    if (n->users().empty()) g.erase(n);
    ++changed;
  }
  return changed;
}

// ---- float64 -> float32 ---------------------------------------------------------------------------

namespace {

bool retype(ir::TensorMeta& m) {
  if (m.dtype != ir::ScalarType::Double) return false;
  m.dtype = ir::ScalarType::Float;
  return true;
}

bool retype(ir::ValueMeta& m) {
  bool changed = m.is_tensor() && retype(m.tensor);
  for (auto& t : m.tuple) changed = (t && retype(*t)) || changed;
  return changed;
}

bool is_double(const ir::ValueMeta& m) { return m.is_tensor() && m.tensor.dtype == ir::ScalarType::Double; }

// dtype arguments (`_to_copy(dtype=torch.float64)`, `arange(..., dtype=...)`): float64 -> float32.
ir::Argument retype_arg(const ir::Argument& a, bool& changed) {
  if (a.is<ir::ScalarType>() && a.as<ir::ScalarType>() == ir::ScalarType::Double) {
    changed = true;
    return ir::Argument(ir::ScalarType::Float);
  }
  if (a.is_list()) {
    ir::Argument::List l;
    for (const auto& e : a.list()) l.push_back(retype_arg(e, changed));
    return ir::Argument(std::move(l));
  }
  return a;
}

// A strided f64 view as a contiguous f32 copy.
std::shared_ptr<ir::Storage> to_float(const ir::Weight& w) {
  const ir::TensorMeta& m = w.meta;
  int64_t n = 1;
  for (const auto& s : m.sizes) n *= s.value;
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(n));
  const double* src = reinterpret_cast<const double*>(w.data());
  const size_t r = m.rank();
  std::vector<int64_t> idx(r, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < r; ++d) off += idx[d] * (m.strides.size() == r ? m.strides[d].value : 0);
    if (m.strides.size() != r) off = i;  // contiguous when strides are unknown
    (*out)[static_cast<size_t>(i)] = static_cast<float>(src[off]);
    for (size_t d = r; d-- > 0;) {
      if (++idx[d] < m.sizes[d].value) break;
      idx[d] = 0;
    }
  }
  auto st = std::make_shared<ir::Storage>();
  st->data = reinterpret_cast<const uint8_t*>(out->data());
  st->size = out->size() * sizeof(float);
  st->owner = out;
  return st;
}

}  // namespace

size_t truncate_double(ir::ExportedProgram& program, std::ostream* warn) {
  ir::Graph& g = program.graph;
  size_t inputs = 0, weights = 0, values = 0;
  for (auto& [name, w] : program.weights) {
    if (w.meta.dtype != ir::ScalarType::Double || !w.meta.is_static()) continue;
    w.storage = to_float(w);
    w.storage_offset = 0;
    w.meta.dtype = ir::ScalarType::Float;
    w.meta.strides.clear();
    int64_t s = 1;
    for (size_t d = w.meta.rank(); d-- > 0;) {
      w.meta.strides.insert(w.meta.strides.begin(), ir::SymInt(s));
      s *= std::max<int64_t>(w.meta.sizes[d].value, 1);
    }
    ++weights;
  }
  ir::Node* out = g.output();
  // Results the caller gets as float64: cast back after everything else is retyped.
  std::vector<ir::Node*> double_results;
  if (out && !out->args.empty() && out->args[0].is_list())
    for (const auto& a : out->args[0].list())
      if (a.is_node() && is_double(a.node()->meta)) double_results.push_back(a.node());
  for (ir::Node* n : g.nodes()) {
    if (n->kind == ir::NodeKind::Placeholder) {
      if (!is_double(n->meta)) continue;
      // Keep the input float64 (what callers pass); its users read an f32 copy.
      std::vector<ir::Node*> users(n->users());
      ir::Node* body = nullptr;  // the casts go after every placeholder (get_attrs may come first)
      const auto order = g.nodes();
      for (size_t i = order.size(); i-- > 0;)
        if (order[i]->kind == ir::NodeKind::Placeholder) {
          body = i + 1 < order.size() ? order[i + 1] : nullptr;
          break;
        }
      ir::Node* c = g.create(ir::NodeKind::CallFunction, n->name + "_f32", "aten._to_copy.default", {n},
                             {{"dtype", ir::Argument(ir::ScalarType::Float)}}, body);
      c->meta = n->meta;
      retype(c->meta);
      users.erase(std::remove(users.begin(), users.end(), out), users.end());
      substitute(g, n, ir::Argument(c), users);
      ++inputs;
      continue;
    }
    if (n->kind == ir::NodeKind::GetAttr) {
      retype(n->meta);
      continue;
    }
    if (n->kind != ir::NodeKind::CallFunction) continue;
    bool changed = retype(n->meta);
    bool args_changed = false;
    std::vector<ir::Argument> args;
    for (const auto& a : n->args) args.push_back(retype_arg(a, args_changed));
    std::vector<std::pair<std::string, ir::Argument>> kwargs;
    for (const auto& [k, a] : n->kwargs) kwargs.emplace_back(k, retype_arg(a, args_changed));
    if (args_changed) {
      g.set_args(n, std::move(args));
      g.set_kwargs(n, std::move(kwargs));
    }
    if (changed || args_changed) ++values;
  }
  for (ir::Node* r : double_results) {
    if (r->kind == ir::NodeKind::Placeholder) continue;  // a passed-through input is still f64
    ir::Node* c = g.create(ir::NodeKind::CallFunction, r->name + "_f64", "aten._to_copy.default", {r},
                           {{"dtype", ir::Argument(ir::ScalarType::Double)}}, out);
    c->meta = r->meta;
    c->meta.tensor.dtype = ir::ScalarType::Double;
    substitute(g, r, ir::Argument(c), {out});
  }
  const size_t total = inputs + weights + values;
  if (total && warn)
    *warn << "kiln: warning: float64 program computed in float32 (truncate_double: " << inputs << " input(s), "
          << weights << " weight(s), " << values << " op(s)); float64 inputs and outputs are cast at the boundary\n";
  return total;
}

std::vector<PassReport> run_passes(ir::ExportedProgram& program) {
  std::vector<PassReport> out;
  auto run = [&](const char* name, size_t (*fn)(ir::ExportedProgram&)) {
    out.push_back({name, fn(program)});
    program.graph.verify();
    return out.back().changes;
  };
  run("canonicalize_aliases", canonicalize_aliases);
  // Before remove_noops: a clone that is then mutated in place (torchvision's Swin v2 zeroes a
  // slice of a cloned bias) is what keeps the mutation off the weight it copies.
  run("inplace_to_functional", inplace_to_functional);
  run("remove_noops", remove_noops);
  // Before truncate_double, which then computes complex128's real layout in float32 too; the
  // aliases it leaves mark the layouts while it runs and go with a second remove_noops.
  if (run("complex_as_real", complex_as_real)) run("remove_noops", remove_noops);
  run("truncate_double", [](ir::ExportedProgram& p) { return truncate_double(p, &std::cerr); });
  run("unbroadcast_matmul_weights", unbroadcast_matmul_weights);
  run("fold_weight_constants", [](ir::ExportedProgram& p) { return fold_weight_constants(p); });
  run("canonicalize_symbolic", canonicalize_symbolic);
  run("fuse_gelu_tanh", fuse_gelu_tanh);
  run("fuse_eager_attention", fuse_eager_attention);
  out.push_back({"eliminate_dead_code", program.graph.eliminate_dead_code()});
  program.graph.verify();
  return out;
}

}  // namespace kiln::lowering
