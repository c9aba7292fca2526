// absorb_attention_views: the permutes, reshapes and slices that cut q, k and v out of a
// projection ([B, L, H*D] -> [B, H, L, D], or a fused qkv [B, L, 3*H*D] split in three) are pure
// index arithmetic. The attention layer reads its operands through one strided view of the
// tensor before them instead, so those copies (a quarter of a transformer's layers) never run;
// dead-layer elimination then removes them.
#include <deque>
#include <optional>

#include "engine/builder.h"
#include "engine/network_internal.h"

namespace kiln::engine::passes {

using detail::static_dims;

namespace {

// A view being composed: each logical dim is a row-major group of (size, stride) atoms. Grouping
// lets a chain pass through intermediate shapes that are no strided view themselves (torchvision
// reshapes [L, B, E] to [L, B*H, D] on the way to [B, H, L, D]): only the final dims must each be
// one atom.
struct Atom {
  int64_t size, stride;
};
struct GroupedView {
  int64_t offset = 0;
  std::vector<std::vector<Atom>> dims;
};

// Neighbouring atoms that step contiguously become one; size-1 atoms go.
std::vector<Atom> merged(const std::vector<Atom>& group) {
  std::vector<Atom> out;
  for (const Atom& a : group) {
    if (a.size == 1) continue;
    if (!out.empty() && out.back().stride == a.size * a.stride) {
      out.back() = {out.back().size * a.size, a.stride};
    } else {
      out.push_back(a);
    }
  }
  return out;
}

GroupedView contiguous(const std::vector<int64_t>& dims) {
  GroupedView v;
  int64_t stride = 1;
  v.dims.resize(dims.size());
  for (size_t d = dims.size(); d-- > 0;) {
    v.dims[d] = {{dims[d], stride}};
    stride *= dims[d];
  }
  return v;
}

void permute(GroupedView& v, const std::vector<int64_t>& perm) {
  std::vector<std::vector<Atom>> r(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) r[d] = v.dims.at(perm[d]);
  v.dims = std::move(r);
}

// Regroups the atoms (in order) into `dims`, splitting an atom where a new dim ends inside it.
bool reshape(GroupedView& v, const std::vector<int64_t>& dims) {
  std::vector<Atom> atoms;
  for (const auto& g : v.dims)
    for (const Atom& a : merged(g)) atoms.push_back(a);
  size_t next = 0;
  std::vector<std::vector<Atom>> out(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] == 0) return false;
    int64_t need = dims[d];
    while (need > 1) {
      if (next >= atoms.size()) return false;
      Atom& a = atoms[next];
      if (need % a.size == 0) {
        out[d].push_back(a);
        need /= a.size;
        ++next;
      } else if (a.size % need == 0) {  // the outer part of the atom: (need, stride * rest)
        const int64_t rest = a.size / need;
        out[d].push_back({need, a.stride * rest});
        a = {rest, a.stride};
        need = 1;
      } else {
        return false;
      }
    }
  }
  if (next != atoms.size()) return false;
  v.dims = std::move(out);
  return true;
}

std::vector<int64_t> sizes(const GroupedView& v) {
  std::vector<int64_t> r;
  for (const auto& g : v.dims) {
    int64_t n = 1;
    for (const Atom& a : g) n *= a.size;
    r.push_back(n);
  }
  return r;
}

// Applies one copy layer to the view of its input; false when the result is not a view.
bool apply(GroupedView& v, const Layer* l) {
  auto out = static_dims(l->output());
  if (!out) return false;
  if (l->as<IdentityParams>()) return true;
  if (auto* s = l->as<ShuffleParams>()) {
    if (!s->first_perm.empty()) permute(v, s->first_perm);
    std::vector<int64_t> before_second = *out;  // output dims un-permuted by second_perm
    if (!s->second_perm.empty())
      for (size_t d = 0; d < s->second_perm.size(); ++d) before_second.at(s->second_perm[d]) = (*out)[d];
    if (before_second != sizes(v) && !reshape(v, before_second)) return false;
    if (!s->second_perm.empty()) permute(v, s->second_perm);
    return sizes(v) == *out;
  }
  if (auto* s = l->as<SliceParams>()) {
    if (out->size() != v.dims.size()) return false;
    for (size_t d = 0; d < v.dims.size(); ++d) {
      auto start = d < s->start.size() ? s->start[d].constant() : std::optional<int64_t>(0);
      auto step = d < s->stride.size() ? s->stride[d].constant() : std::optional<int64_t>(1);
      if (!start || !step || (*out)[d] == 0) return false;
      std::vector<Atom> g = merged(v.dims[d]);
      const int64_t size = g.empty() ? 1 : g[0].size;
      if (g.size() > 1) return false;  // a slice across a merged dim is no strided view
      const int64_t first = *start < 0 ? *start + size : *start;
      if (g.empty()) {
        if (first != 0 || (*out)[d] != 1) return false;
        continue;
      }
      v.offset += first * g[0].stride;
      v.dims[d] = {{(*out)[d], g[0].stride * *step}};
    }
    return true;
  }
  return false;
}

// The strided view a composed view amounts to, when each dim is one atom.
std::optional<StridedView> finish(const GroupedView& v) {
  StridedView r;
  r.offset = v.offset;
  for (const auto& g : v.dims) {
    std::vector<Atom> m = merged(g);
    if (m.size() > 1) return std::nullopt;
    r.dims.push_back(m.empty() ? 1 : m[0].size);
    r.strides.push_back(m.empty() ? 0 : m[0].stride);
  }
  return r;
}

bool is_copy(const Layer* l) { return l->as<ShuffleParams>() || l->as<SliceParams>() || l->as<IdentityParams>(); }

// The longest chain of copy layers above `t` that composes into one strided view with unit last
// stride: the tensor to read instead, and the view.
std::optional<std::pair<Tensor*, StridedView>> view_through_copies(Tensor* t) {
  std::deque<const Layer*> chain;
  for (Tensor* cur = t; cur->producer() && is_copy(cur->producer());) {
    chain.push_front(cur->producer());
    cur = cur->producer()->inputs()[0];
  }
  for (size_t first = 0; first < chain.size(); ++first) {
    Tensor* source = chain[first]->inputs()[0];
    auto dims = static_dims(source);
    if (!dims) continue;
    GroupedView v = contiguous(*dims);
    bool ok = true;
    for (size_t i = first; ok && i < chain.size(); ++i) ok = apply(v, chain[i]);
    std::optional<StridedView> sv = ok ? finish(v) : std::nullopt;
    if (sv && !sv->strides.empty() && sv->strides.back() == 1) return std::make_pair(source, *sv);
  }
  return std::nullopt;
}

}  // namespace

size_t absorb_attention_views(Network& net) {
  size_t changed = 0;
  for (Layer* l : net.layers()) {
    auto* ap = l->as<AttentionParams>();
    if (!ap || !ap->views.empty()) continue;
    AttentionParams p = *ap;
    p.views.assign(3, std::nullopt);
    std::vector<Tensor*> inputs = l->inputs();
    std::string what;
    for (size_t i = 0; i < 3; ++i) {
      auto found = view_through_copies(inputs[i]);
      if (!found) continue;
      what += std::string(" ") + "qkv"[i] + " <- " + found->first->name();
      inputs[i] = found->first;
      p.views[i] = found->second;
    }
    // The head-merge permute after it ([B, H, L, D] -> [B, L, H, D], maybe with the reshape to
    // [B, L, H*D]) becomes the way it writes; a reshape that was part of it stays, as an alias.
    Layer* after = detail::sole_consumer(net, l->output());
    const auto* sp = after ? after->as<ShuffleParams>() : nullptr;
    const bool permuted_out = sp && sp->second_perm.empty() && !sp->first_perm.empty() &&
                              sp->first_perm.back() == int64_t(sp->first_perm.size()) - 1;
    if (permuted_out) {
      p.output_perm = sp->first_perm;
      what += " out -> " + after->name();
    }
    if (what.empty()) continue;
    const detail::OriginScope origin(net, l->origin());
    Layer* nl = net.add_layer(l->name(), inputs, p);
    Tensor* result = nl->output();
    if (permuted_out && sp->reshape) {
      ShuffleParams reshape;
      reshape.reshape = sp->reshape;
      result = net.add_shuffle(after->name(), result, reshape)->output();
    }
    net.replace_all_uses(permuted_out ? after->output() : l->output(), result);
    if (permuted_out) net.remove_layer(after);
    net.remove_layer(l);
    detail::log_debug("absorb_attention_views: " + nl->name() + what);
    ++changed;
  }
  net.topological_sort();
  return changed;
}

}  // namespace kiln::engine::passes
