// complex_as_real: complex values as real tensors with a trailing dim of 2 (real, imaginary), the
// layout torch.view_as_real gives, so that rotary embeddings written with complex numbers (Meta's
// Llama and its descendants: view_as_complex, polar, a complex multiply, view_as_real) convert
// like any real code. The engine has no complex dtype.
#include <algorithm>
#include <set>

#include "ir/schema.h"
#include "lowering/passes.h"

namespace kiln::lowering {

namespace {

bool is_complex(ir::ScalarType t) { return t == ir::ScalarType::ComplexFloat || t == ir::ScalarType::ComplexDouble; }
bool is_complex(const ir::ValueMeta& m) { return m.is_tensor() && is_complex(m.tensor.dtype); }
ir::ScalarType real_of(ir::ScalarType t) {
  return t == ir::ScalarType::ComplexDouble ? ir::ScalarType::Double : ir::ScalarType::Float;
}

// The real layout of a complex tensor's metadata: [..., 2] of the real dtype, element strides doubled.
ir::TensorMeta as_real(ir::TensorMeta m) {
  m.dtype = real_of(m.dtype);
  bool known = m.storage_offset.is_constant();
  for (const ir::SymInt& s : m.strides) known &= s.is_constant();
  if (known && !m.strides.empty()) {
    for (ir::SymInt& s : m.strides) s = ir::SymInt(s.value * 2);
    m.strides.push_back(ir::SymInt(1));
    m.storage_offset = ir::SymInt(m.storage_offset.value * 2);
  } else {
    m.strides.clear();  // unknown, as metadata may leave them
  }
  m.sizes.push_back(ir::SymInt(2));
  return m;
}

// Ops whose complex result is the same op on the real layout, once dims and sizes are adjusted.
const std::set<std::string>& layout_ops() {
  static const std::set<std::string> ops = {
      "aten.view.default",     "aten.reshape.default",   "aten._unsafe_view.default", "aten.slice.Tensor",
      "aten.select.int",       "aten.unsqueeze.default", "aten.squeeze.dim",          "aten.expand.default",
      "aten.permute.default",  "aten.transpose.int",     "aten.t.default",            "aten.clone.default",
      "aten.alias.default",    "aten.detach.default",    "aten.lift_fresh_copy.default", "aten.cat.default",
      "aten.add.Tensor",       "aten.sub.Tensor",        "aten._to_copy.default",     "aten.resolve_conj.default",
      "aten.contiguous.default"};
  return ops;
}

// Ops that make complex values from real ones or combine them arithmetically (rewritten).
const std::set<std::string>& complex_ops() {
  static const std::set<std::string> ops = {"aten.view_as_complex.default", "aten.polar.default", "aten.complex.default",
                                            "aten.mul.Tensor", "aten._conj.default", "aten.conj_physical.default"};
  return ops;
}

// Ops that read a complex value and give a real one.
const std::set<std::string>& to_real_ops() {
  static const std::set<std::string> ops = {"aten.view_as_real.default", "aten.real.default", "aten.imag.default",
                                            "aten.abs.default", "aten.angle.default"};
  return ops;
}

// Whether every complex value can take the real layout: made by the ops above (or a complex
// weight), read only by them, never a user input or a program output, and every op left as is
// (layout ops) with only complex tensor inputs apart from its non-tensor arguments.
bool rewritable(const ir::ExportedProgram& program) {
  for (ir::Node* n : program.graph.nodes()) {
    const bool makes = is_complex(n->meta);
    bool reads = false;
    for (const ir::Node* in : n->inputs()) reads |= is_complex(in->meta);
    if (!makes && !reads) continue;
    if (n->kind == ir::NodeKind::Placeholder || n->kind == ir::NodeKind::Output) return false;
    if (n->kind == ir::NodeKind::GetAttr) {
      const auto w = program.weights.find(n->target);
      if (w == program.weights.end() || !w->second.meta.is_static()) return false;
      continue;
    }
    if (!ir::find_schema(n->target)) return false;
    if (makes && !reads) {
      if (n->target != "aten.view_as_complex.default" && n->target != "aten.polar.default" && n->target != "aten.complex.default")
        return false;
    } else if (!makes) {
      if (!to_real_ops().count(n->target)) return false;
    } else if (layout_ops().count(n->target)) {
      for (const ir::Node* in : n->inputs())
        if (in->meta.is_tensor() && !is_complex(in->meta)) return false;  // complex + real, ...
      if (n->target == "aten._to_copy.default" && n->inputs().at(0)->meta.tensor.dtype != n->meta.tensor.dtype) return false;
      if ((n->target == "aten.add.Tensor" || n->target == "aten.sub.Tensor") && n->kwarg("alpha")) return false;
    } else if (!complex_ops().count(n->target)) {
      return false;
    }
  }
  return true;
}

struct Rewriter {
  ir::Graph& g;

  ir::Node* op(ir::Node* before, const std::string& name, const std::string& target, std::vector<ir::Argument> args,
               ir::TensorMeta meta) {
    ir::Node* n = g.create(ir::NodeKind::CallFunction, name, target, std::move(args), {}, before);
    n->meta = ir::ValueMeta::of_tensor(std::move(meta));
    n->metadata = before->metadata;
    return n;
  }
  static ir::TensorMeta without_last(ir::TensorMeta m) {
    m.sizes.pop_back();
    if (!m.strides.empty()) m.strides.pop_back();
    return m;
  }
  static ir::TensorMeta broadcast(const ir::TensorMeta& a, const ir::TensorMeta& b) {
    ir::TensorMeta m = a.rank() >= b.rank() ? a : b;
    const ir::TensorMeta& other = a.rank() >= b.rank() ? b : a;
    const size_t shift = m.rank() - other.rank();
    for (size_t d = 0; d < other.rank(); ++d)
      if (m.sizes[shift + d].is_constant() && m.sizes[shift + d].value == 1) m.sizes[shift + d] = other.sizes[d];
    m.strides.clear();
    return m;
  }
  ir::Node* part(ir::Node* before, ir::Node* z, int64_t which) {  // real (0) or imaginary (1) part of a real layout
    return op(before, before->name + (which ? "_imag" : "_real"), "aten.select.int", {z, int64_t{-1}, which},
              without_last(z->meta.tensor));
  }
  ir::Node* binary(ir::Node* before, const std::string& suffix, const std::string& target, ir::Node* a, ir::Node* b) {
    return op(before, before->name + suffix, target, {a, b}, broadcast(a->meta.tensor, b->meta.tensor));
  }
  ir::Node* pair(ir::Node* before, ir::Node* re, ir::Node* im) {  // [..., 2] from two real tensors
    ir::TensorMeta m = broadcast(re->meta.tensor, im->meta.tensor);
    m.sizes.push_back(ir::SymInt(2));
    return op(before, before->name + "_pair", "aten.stack.default", {ir::Argument::List{re, im}, int64_t{-1}}, m);
  }
  // The real layout itself under a new name, where an op only reinterprets (view_as_complex,
  // view_as_real): a node of its own keeps which values are complex in the real layout apart from
  // the real tensors they view (remove_noops drops the alias afterwards).
  ir::Node* alias(ir::Node* n, ir::Node* of, ir::TensorMeta meta) {
    return op(n, n->name + "_layout", "aten.alias.default", {of}, std::move(meta));
  }

  // A complex op rewritten on real layouts; its inputs are rewritten already.
  ir::Node* rewrite_complex(ir::Node* n, const ir::BoundArgs& a) {
    const std::string& t = n->target;
    if (t == "aten.view_as_complex.default") return alias(n, a["self"].node(), as_real(n->meta.tensor));
    if (t == "aten.polar.default" || t == "aten.complex.default") {
      ir::Node* re = t == "aten.complex.default" ? a["real"].node() : nullptr;
      ir::Node* im = t == "aten.complex.default" ? a["imag"].node() : nullptr;
      if (!re) {
        ir::Node* r = a["abs"].node();
        ir::Node* angle = a["angle"].node();
        ir::Node* cos = op(n, n->name + "_cos", "aten.cos.default", {angle}, angle->meta.tensor);
        ir::Node* sin = op(n, n->name + "_sin", "aten.sin.default", {angle}, angle->meta.tensor);
        re = binary(n, "_re", "aten.mul.Tensor", r, cos);
        im = binary(n, "_im", "aten.mul.Tensor", r, sin);
      }
      return pair(n, re, im);
    }
    if (t == "aten._conj.default" || t == "aten.conj_physical.default") {
      ir::Node* z = a["self"].node();
      ir::Node* neg = op(n, n->name + "_neg_imag", "aten.neg.default", {part(n, z, 1)}, without_last(z->meta.tensor));
      return pair(n, part(n, z, 0), neg);
    }
    // mul.Tensor: (a + bi)(c + di) = (ac - bd) + (ad + bc)i; by a real tensor, each part scaled;
    // by a real number, the layout scaled as it is.
    ir::Node* x = a["self"].node();
    const ir::Argument& other = a["other"];
    if (!other.is_node()) {
      n->meta = ir::ValueMeta::of_tensor(as_real(n->meta.tensor));
      return n;
    }
    ir::Node* y = other.node();
    if (!real_layout.count(x) || !real_layout.count(y)) {  // one side real: scale both parts by it
      ir::Node* z = real_layout.count(x) ? x : y;
      ir::Node* r = real_layout.count(x) ? y : x;
      ir::TensorMeta um = r->meta.tensor;
      um.sizes.push_back(ir::SymInt(1));
      um.strides.clear();
      ir::Node* scale = op(n, n->name + "_scale", "aten.unsqueeze.default", {r, int64_t{-1}}, um);
      return binary(n, "_scaled", "aten.mul.Tensor", z, scale);
    }
    ir::Node *ar = part(n, x, 0), *ai = part(n, x, 1), *br = part(n, y, 0), *bi = part(n, y, 1);
    ir::Node* re = binary(n, "_re", "aten.sub.Tensor", binary(n, "_rr", "aten.mul.Tensor", ar, br),
                          binary(n, "_ii", "aten.mul.Tensor", ai, bi));
    ir::Node* im = binary(n, "_im", "aten.add.Tensor", binary(n, "_ri", "aten.mul.Tensor", ar, bi),
                          binary(n, "_ir", "aten.mul.Tensor", ai, br));
    return pair(n, re, im);
  }

  // A complex -> real op on a real layout.
  ir::Node* rewrite_to_real(ir::Node* n, const ir::BoundArgs& a) {
    ir::Node* z = a["self"].node();
    const std::string& t = n->target;
    if (t == "aten.view_as_real.default") return alias(n, z, n->meta.tensor);
    if (t == "aten.real.default") return part(n, z, 0);
    if (t == "aten.imag.default") return part(n, z, 1);
    if (t == "aten.abs.default")
      return op(n, n->name + "_norm", "aten.linalg_vector_norm.default", {z, 2.0, ir::Argument::List{int64_t{-1}}, false},
                n->meta.tensor);
    return op(n, n->name + "_atan2", "aten.atan2.default", {part(n, z, 1), part(n, z, 0)}, n->meta.tensor);  // angle
  }

  // A layout op's dims and sizes moved to the real layout (one more dim, last), in place.
  void rewrite_layout(ir::Node* n, const ir::BoundArgs& a) {
    const int64_t rank = int64_t(n->inputs().at(0)->meta.tensor.rank()) - 1;  // the complex input's rank
    const int64_t out_rank = int64_t(n->meta.tensor.rank());
    auto dim_in = [&](int64_t d) { return d < 0 ? d + rank : d; };
    std::vector<ir::Argument> args = a.positional();
    const ir::OpSchema& s = a.schema();
    auto set = [&](const char* name, ir::Argument v) { args[size_t(s.index_of(name))] = std::move(v); };
    auto grown = [](const ir::Argument& sizes) {
      ir::Argument::List l = sizes.list();
      l.push_back(int64_t{2});
      return ir::Argument(l);
    };
    const std::string& t = n->target;
    if (t == "aten.view.default" || t == "aten.reshape.default" || t == "aten._unsafe_view.default" ||
        t == "aten.expand.default")
      set("size", grown(a["size"]));
    else if (t == "aten.slice.Tensor" || t == "aten.select.int" || t == "aten.squeeze.dim" || t == "aten.cat.default")
      set("dim", dim_in(a["dim"].as<int64_t>()));
    else if (t == "aten.unsqueeze.default")
      set("dim", a["dim"].as<int64_t>() < 0 ? a["dim"].as<int64_t>() + out_rank : a["dim"].as<int64_t>());
    else if (t == "aten.transpose.int")
      set("dim0", dim_in(a["dim0"].as<int64_t>())), set("dim1", dim_in(a["dim1"].as<int64_t>()));
    else if (t == "aten.permute.default") {
      ir::Argument::List dims;
      for (const ir::Argument& d : a["dims"].list()) dims.push_back(dim_in(d.as<int64_t>()));
      dims.push_back(rank);
      set("dims", dims);
    } else if (t == "aten.t.default") {
      n->target = "aten.transpose.int";
      args = {args[0], int64_t{0}, int64_t{rank - 1}};
    } else if (t == "aten._to_copy.default") {
      std::vector<std::pair<std::string, ir::Argument>> kw;
      for (auto [k, v] : a.keyword())
        if (k == "dtype") kw.emplace_back(k, ir::Argument(real_of(v.as<ir::ScalarType>())));
        else kw.emplace_back(k, v);
      g.set_kwargs(n, kw);
      g.set_args(n, args);
      n->meta = ir::ValueMeta::of_tensor(as_real(n->meta.tensor));
      return;
    }
    g.set_args(n, args);
    g.set_kwargs(n, a.keyword());
    n->meta = ir::ValueMeta::of_tensor(as_real(n->meta.tensor));
  }

  std::set<ir::Node*> real_layout;  // complex values, now in the real layout
};

}  // namespace

size_t complex_as_real(ir::ExportedProgram& program) {
  bool any = false;
  for (const ir::Node* n : program.graph.nodes()) any |= is_complex(n->meta);
  if (!any || !rewritable(program)) return 0;
  size_t changed = 0;
  for (auto& [name, w] : program.weights) {  // the same bytes, read as pairs of reals
    if (!is_complex(w.meta.dtype)) continue;
    w.meta = as_real(w.meta);
    w.storage_offset *= 2;
    ++changed;
  }
  Rewriter r{program.graph, {}};
  for (ir::Node* n : program.graph.nodes()) {
    const bool makes = is_complex(n->meta);
    if (n->kind == ir::NodeKind::GetAttr) {
      if (makes) n->meta = ir::ValueMeta::of_tensor(as_real(n->meta.tensor)), r.real_layout.insert(n), ++changed;
      continue;
    }
    bool reads = false;
    for (ir::Node* in : n->inputs()) reads |= r.real_layout.count(in) > 0;
    if (n->kind != ir::NodeKind::CallFunction || (!makes && !reads)) continue;
    const ir::BoundArgs a(*n, *ir::find_schema(n->target));
    ++changed;
    ir::Node* result = n;
    if (!makes) result = r.rewrite_to_real(n, a);
    else if (layout_ops().count(n->target)) r.rewrite_layout(n, a);
    else result = r.rewrite_complex(n, a);
    if (result != n) {
      program.graph.replace_all_uses_with(n, result);
      program.graph.erase(n);
    }
    if (makes) r.real_layout.insert(result);
  }
  return changed;
}

}  // namespace kiln::lowering
