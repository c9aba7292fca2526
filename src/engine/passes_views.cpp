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

namespace {

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size(), 1);
  for (size_t d = dims.size(); d-- > 1;) s[d - 1] = s[d] * dims[d];
  return s;
}

void permute(StridedView& v, const std::vector<int64_t>& perm) {
  StridedView r = v;
  for (size_t d = 0; d < perm.size(); ++d) {
    r.dims[d] = v.dims.at(perm[d]);
    r.strides[d] = v.strides.at(perm[d]);
  }
  v = r;
}

// New strides for viewing `v` as `dims` without moving elements, when they exist: each run of
// old dims that is contiguous among itself may be split or merged freely (as torch's view()).
bool reshape(StridedView& v, const std::vector<int64_t>& dims) {
  int64_t numel = 1;
  for (int64_t d : v.dims) numel *= d;
  if (numel == 0) return false;
  std::vector<int64_t> st(dims.size(), 0);
  int64_t view_d = int64_t(dims.size()) - 1;
  int64_t chunk_stride = v.strides.empty() ? 1 : v.strides.back(), chunk_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(v.dims.size()) - 1; d >= 0; --d) {
    chunk_numel *= v.dims[d];
    const bool chunk_ends = d == 0 || (v.dims[d - 1] != 1 && v.strides[d - 1] != chunk_numel * chunk_stride);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < chunk_numel || dims[view_d] == 1)) {
      st[view_d] = view_numel * chunk_stride;
      view_numel *= dims[view_d];
      --view_d;
    }
    if (view_numel != chunk_numel) return false;
    if (d > 0) {
      chunk_stride = v.strides[d - 1];
      chunk_numel = view_numel = 1;
    }
  }
  if (view_d != -1) return false;
  v.dims = dims;
  v.strides = st;
  return true;
}

std::optional<std::vector<int64_t>> static_dims(const Tensor* t) {
  if (!is_static(t->shape())) return std::nullopt;
  return evaluate(t->shape(), {});
}

// Applies one copy layer to the view of its input; false when the result is not a strided view.
bool apply(StridedView& v, const Layer* l) {
  auto out = static_dims(l->output());
  if (!out) return false;
  if (l->as<IdentityParams>()) return true;
  if (auto* s = l->as<ShuffleParams>()) {
    if (!s->first_perm.empty()) permute(v, s->first_perm);
    std::vector<int64_t> before_second = *out;  // output dims un-permuted by second_perm
    if (!s->second_perm.empty())
      for (size_t d = 0; d < s->second_perm.size(); ++d) before_second.at(s->second_perm[d]) = (*out)[d];
    if (before_second != v.dims && !reshape(v, before_second)) return false;
    if (!s->second_perm.empty()) permute(v, s->second_perm);
    return v.dims == *out;
  }
  if (auto* s = l->as<SliceParams>()) {
    if (out->size() != v.dims.size()) return false;
    for (size_t d = 0; d < v.dims.size(); ++d) {
      auto start = d < s->start.size() ? s->start[d].constant() : std::optional<int64_t>(0);
      auto step = d < s->stride.size() ? s->stride[d].constant() : std::optional<int64_t>(1);
      if (!start || !step) return false;
      int64_t first = *start < 0 ? *start + v.dims[d] : *start;
      if ((*out)[d] == 0) return false;
      v.offset += first * v.strides[d];
      v.strides[d] *= *step;
      v.dims[d] = (*out)[d];
    }
    return true;
  }
  return false;
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
    StridedView v{0, *dims, contiguous_strides(*dims)};
    bool ok = true;
    for (size_t i = first; ok && i < chain.size(); ++i) ok = apply(v, chain[i]);
    if (ok && !v.strides.empty() && v.strides.back() == 1) return std::make_pair(source, v);
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
    if (what.empty()) continue;
    Layer* nl = net.add_layer(l->name(), inputs, p);
    net.replace_all_uses(l->output(), nl->output());
    net.remove_layer(l);
    detail::log_debug("absorb_attention_views: " + nl->name() + what);
    ++changed;
  }
  net.topological_sort();
  return changed;
}

}  // namespace kiln::engine::passes
