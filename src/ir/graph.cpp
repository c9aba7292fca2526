// The graph: node storage, use lists, verification and torch.fx-style printing.
#include "ir/graph.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace kiln::ir {
namespace {

// Python's repr(float): the shortest form that reads back the same, with ".0" on integral values.
std::string float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

// Rewrites every reference to `from` inside `a` to `to`; returns whether anything changed.
bool replace_in(Argument& a, Node* from, Node* to) {
  if (a.is_node()) {
    if (a.node() != from) return false;
    a.value = to;
    return true;
  }
  if (a.is_list()) {
    bool changed = false;
    for (auto& e : std::get<Argument::List>(a.value)) changed |= replace_in(e, from, to);
    return changed;
  }
  return false;
}

// Ops with effects that dead-code elimination must keep even without users.
bool is_impure(const Node& n) {
  const std::string& t = n.target;
  if (t.rfind("higher_order.", 0) == 0) return true;
  // "aten.add_.Tensor": the op name (between the namespace and the overload) ends with '_'.
  size_t a = t.find('.'), b = t.rfind('.');
  if (a != std::string::npos && b != std::string::npos && b > a + 1) {
    std::string op = t.substr(a + 1, b - a - 1);
    if (op.back() == '_' && op.rfind("__", 0) != 0) return true;
    if (op.rfind("_assert", 0) == 0 || op == "_print" || op.rfind("copy_", 0) == 0) return true;
  }
  if (t.rfind("torch._check", 0) == 0 || t.rfind("torch._assert", 0) == 0) return true;
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Argument / Node

void Argument::for_each_node(const std::function<void(Node*)>& fn) const {
  if (is_node()) {
    if (node()) fn(node());
  } else if (is_list()) {
    for (const auto& e : list()) e.for_each_node(fn);
  }
}

std::string Argument::str() const {
  struct Printer {
    std::string operator()(const None&) const { return "None"; }
    std::string operator()(bool b) const { return b ? "True" : "False"; }
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return float_repr(v); }
    std::string operator()(const std::string& s) const { return s; }
    std::string operator()(ScalarType t) const { return std::string("torch.") + to_string(t); }
    std::string operator()(const Device& d) const { return d.str(); }
    std::string operator()(MemoryFormat f) const { return to_string(f); }
    std::string operator()(Layout l) const { return to_string(l); }
    std::string operator()(Node* n) const { return n ? "%" + n->name : "%<null>"; }
    std::string operator()(const List& l) const {
      std::string s = "[";
      for (size_t i = 0; i < l.size(); ++i) s += (i ? ", " : "") + l[i].str();
      return s + "]";
    }
  };
  return std::visit(Printer{}, value);
}

const char* to_string(NodeKind k) {
  switch (k) {
    case NodeKind::Placeholder: return "placeholder";
    case NodeKind::GetAttr: return "get_attr";
    case NodeKind::CallFunction: return "call_function";
    case NodeKind::Output: return "output";
  }
  return "?";
}

ValueMeta ValueMeta::of_tensor(TensorMeta m) {
  ValueMeta v;
  v.kind = Kind::Tensor;
  v.tensor = std::move(m);
  return v;
}

const Argument* Node::kwarg(const std::string& key) const {
  for (const auto& [k, v] : kwargs)
    if (k == key) return &v;
  return nullptr;
}

std::vector<Node*> Node::inputs() const {
  std::vector<Node*> out;
  std::unordered_set<Node*> seen;
  auto add = [&](Node* n) {
    if (seen.insert(n).second) out.push_back(n);
  };
  for (const auto& a : args) a.for_each_node(add);
  for (const auto& [k, a] : kwargs) a.for_each_node(add);
  return out;
}

std::string Node::str() const {
  switch (kind) {
    case NodeKind::Placeholder:
    case NodeKind::GetAttr:
      return "%" + name + " : [num_users=" + std::to_string(users_.size()) + "] = " + to_string(kind) +
             "[target=" + target + "]";
    case NodeKind::Output: {
      // Exported programs return a tuple: `return (%a, %b)`.
      const std::vector<Argument>& outs = args.size() == 1 && args[0].is_list() ? args[0].list() : args;
      std::string s = "return (";
      for (size_t i = 0; i < outs.size(); ++i) s += (i ? ", " : "") + outs[i].str();
      return s + (outs.size() == 1 ? ",)" : ")");
    }
    case NodeKind::CallFunction: break;
  }
  std::string s = "%" + name + " : call_function[target=" + target + "](args = (";
  for (size_t i = 0; i < args.size(); ++i) s += (i ? ", " : "") + args[i].str();
  if (args.size() == 1) s += ",";
  s += "), kwargs = {";
  for (size_t i = 0; i < kwargs.size(); ++i) s += (i ? ", " : "") + kwargs[i].first + ": " + kwargs[i].second.str();
  return s + "})";
}

// ---------------------------------------------------------------------------------------------
// Graph

void Graph::link(Node* n) {
  for (Node* in : n->inputs()) {
    auto& u = in->users_;
    if (std::find(u.begin(), u.end(), n) == u.end()) u.push_back(n);
  }
}

void Graph::unlink(Node* n) {
  for (Node* in : n->inputs()) {
    auto& u = in->users_;
    u.erase(std::remove(u.begin(), u.end(), n), u.end());
  }
}

Node* Graph::create(NodeKind kind, std::string name, std::string target, std::vector<Argument> args,
                    std::vector<std::pair<std::string, Argument>> kwargs, Node* before) {
  if (name.empty()) name = kind == NodeKind::Output ? "output" : "node";
  if (by_name_.count(name)) {
    // fx's rule: append _1, _2, ... to a taken name.
    std::string base = name;
    for (size_t i = 1;; ++i) {
      name = base + "_" + std::to_string(i);
      if (!by_name_.count(name)) break;
    }
  }
  auto node = std::make_unique<Node>();
  Node* n = node.get();
  n->kind = kind;
  n->name = name;
  n->target = std::move(target);
  n->args = std::move(args);
  n->kwargs = std::move(kwargs);
  auto pos = nodes_.end();
  if (before) {
    pos = std::find_if(nodes_.begin(), nodes_.end(), [&](const auto& p) { return p.get() == before; });
    if (pos == nodes_.end()) throw std::invalid_argument("Graph::create: %" + before->name + " is not in this graph");
  }
  nodes_.insert(pos, std::move(node));
  by_name_[n->name] = n;
  link(n);
  return n;
}

void Graph::set_args(Node* n, std::vector<Argument> args) {
  unlink(n);
  n->args = std::move(args);
  link(n);
}

void Graph::set_kwargs(Node* n, std::vector<std::pair<std::string, Argument>> kwargs) {
  unlink(n);
  n->kwargs = std::move(kwargs);
  link(n);
}

void Graph::replace_all_uses_with(Node* from, Node* to) {
  if (from == to) return;
  std::vector<Node*> users = from->users_;
  for (Node* u : users) {
    unlink(u);
    for (auto& a : u->args) replace_in(a, from, to);
    for (auto& kv : u->kwargs) replace_in(kv.second, from, to);
    link(u);
  }
}

void Graph::erase(Node* n) {
  if (!n->users_.empty())
    throw std::logic_error("cannot erase %" + n->name + ": still used by %" + n->users_.front()->name);
  auto pos = std::find_if(nodes_.begin(), nodes_.end(), [&](const auto& p) { return p.get() == n; });
  if (pos == nodes_.end()) throw std::invalid_argument("cannot erase %" + n->name + ": not in this graph");
  unlink(n);
  by_name_.erase(n->name);
  nodes_.erase(pos);
}

size_t Graph::eliminate_dead_code() {
  size_t removed = 0;
  // Backwards, so a chain of dead nodes goes in one pass.
  for (auto it = nodes_.end(); it != nodes_.begin();) {
    --it;
    Node* n = it->get();
    if (n->kind == NodeKind::CallFunction && n->users_.empty() && !is_impure(*n)) {
      unlink(n);
      by_name_.erase(n->name);
      it = nodes_.erase(it);  // the next node, already visited; --it moves on to the previous one
      ++removed;
    }
  }
  return removed;
}

std::vector<Node*> Graph::nodes() const {
  std::vector<Node*> out;
  out.reserve(nodes_.size());
  for (const auto& n : nodes_) out.push_back(n.get());
  return out;
}

std::vector<Node*> Graph::placeholders() const {
  std::vector<Node*> out;
  for (const auto& n : nodes_)
    if (n->kind == NodeKind::Placeholder) out.push_back(n.get());
  return out;
}

Node* Graph::output() const {
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it)
    if ((*it)->kind == NodeKind::Output) return it->get();
  return nullptr;
}

std::vector<Argument> Graph::output_values() const {
  const Node* out = output();
  if (!out) return {};
  if (out->args.size() == 1 && out->args[0].is_list()) return out->args[0].list();
  return out->args;
}

Node* Graph::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

void Graph::verify() const {
  std::unordered_map<const Node*, size_t> position;
  size_t i = 0;
  for (const auto& p : nodes_) position[p.get()] = i++;
  if (by_name_.size() != nodes_.size()) throw VerifyError("graph: node names are not unique");

  size_t outputs = 0;
  i = 0;
  for (const auto& p : nodes_) {
    const Node* n = p.get();
    const std::string where = "node %" + n->name + " (" + (n->target.empty() ? to_string(n->kind) : n->target) + ")";
    auto named = by_name_.find(n->name);
    if (named == by_name_.end() || named->second != n) throw VerifyError(where + ": name not registered in the graph");

    for (Node* in : n->inputs()) {
      auto pos = position.find(in);
      if (pos == position.end()) throw VerifyError(where + ": uses %" + in->name + ", which is not in this graph");
      if (pos->second >= i) throw VerifyError(where + ": uses %" + in->name + " before it is defined");
      if (std::find(in->users_.begin(), in->users_.end(), n) == in->users_.end())
        throw VerifyError(where + ": missing from the users of %" + in->name);
      if (in->kind == NodeKind::Output) throw VerifyError(where + ": uses the output node");
    }
    for (Node* u : n->users_) {
      if (!position.count(u)) throw VerifyError(where + ": has a user outside the graph");
      auto ins = u->inputs();
      if (std::find(ins.begin(), ins.end(), n) == ins.end())
        throw VerifyError(where + ": lists %" + u->name + " as a user, but it does not use it");
    }

    switch (n->kind) {
      case NodeKind::Placeholder:
      case NodeKind::GetAttr:
        if (n->meta.kind == ValueMeta::Kind::None) throw VerifyError(where + ": has no value meta");
        if (n->target.empty()) throw VerifyError(where + ": has no target");
        break;
      case NodeKind::CallFunction:
        if (n->target.empty()) throw VerifyError(where + ": has no target");
        // Ops returning nothing (_assert_*, in-place with no result) may lack meta; a used value may not.
        if (n->meta.kind == ValueMeta::Kind::None && !n->users_.empty())
          throw VerifyError(where + ": is used but has no value meta");
        break;
      case NodeKind::Output:
        ++outputs;
        if (i + 1 != nodes_.size()) throw VerifyError(where + ": the output node is not last");
        break;
    }
    ++i;
  }
  if (outputs != 1) throw VerifyError("graph: expected exactly one output node, found " + std::to_string(outputs));
}

std::string Graph::str() const {
  std::string s = "graph():\n";
  for (const auto& n : nodes_) s += "    " + n->str() + "\n";
  return s;
}

// ---------------------------------------------------------------------------------------------
// Weights / program

bool Weight::is_contiguous() const {
  int64_t expected = 1;
  if (meta.strides.empty()) return true;
  if (meta.strides.size() != meta.sizes.size()) return false;
  for (size_t d = meta.sizes.size(); d-- > 0;) {
    if (!meta.sizes[d].is_constant() || !meta.strides[d].is_constant()) return false;
    const int64_t size = meta.sizes[d].value;
    if (size == 0) return true;
    if (size != 1 && meta.strides[d].value != expected) return false;
    expected *= size;
  }
  return true;
}

size_t Weight::nbytes() const {
  // Bytes from the first element to one past the last, following the strides (the view's extent).
  int64_t extent = 1;
  for (size_t d = 0; d < meta.sizes.size(); ++d) {
    const int64_t size = meta.sizes[d].value;
    if (size == 0) return 0;
    const int64_t stride = meta.strides.size() == meta.sizes.size() ? meta.strides[d].value : 0;
    if (meta.strides.size() != meta.sizes.size()) {  // no strides: contiguous
      extent *= size;
      continue;
    }
    extent += (size - 1) * stride;
  }
  return static_cast<size_t>(extent) * element_size(meta.dtype);
}

size_t ExportedProgram::weight_bytes() const {
  // What the program holds: each storage once, however many weights view it.
  std::set<const Storage*> seen;
  size_t total = 0;
  for (const auto& [name, w] : weights)
    if (w.storage && seen.insert(w.storage.get()).second) total += w.storage->size;
  return total;
}

}  // namespace kiln::ir
