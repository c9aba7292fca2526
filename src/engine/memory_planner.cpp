#include "engine/memory_planner.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "engine/network_internal.h"
#include "engine/plan_impl.h"

namespace kiln::engine {

namespace {
// The bytes a request takes in the arena: at least one, rounded up to the alignment.
size_t arena_bytes_of(const BufferRequest& r) {
  return (std::max<size_t>(r.bytes, 1) + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
}

// Places the buffers in the given order, each at the smallest gap that holds it among the buffers
// already placed whose lifetimes overlap its own (after the last of them when none does).
ArenaPlan place_in_order(const std::vector<BufferRequest>& requests, const std::vector<size_t>& order) {
  ArenaPlan plan;
  plan.offsets.assign(requests.size(), 0);
  struct Placed {
    size_t offset, bytes;
    int first, last;
  };
  std::vector<Placed> placed;
  std::vector<Placed> live;
  for (size_t idx : order) {
    const BufferRequest& r = requests[idx];
    const size_t bytes = arena_bytes_of(r);
    live.clear();
    for (const Placed& p : placed)
      if (p.first <= r.last && r.first <= p.last) live.push_back(p);
    std::sort(live.begin(), live.end(), [](const Placed& a, const Placed& b) { return a.offset < b.offset; });
    size_t best = SIZE_MAX, best_gap = SIZE_MAX, cursor = 0;
    for (const Placed& p : live) {
      if (p.offset > cursor) {
        size_t gap = p.offset - cursor;
        if (gap >= bytes && gap < best_gap) {
          best = cursor;
          best_gap = gap;
        }
      }
      cursor = std::max(cursor, p.offset + p.bytes);
    }
    if (best == SIZE_MAX) best = cursor;
    plan.offsets[idx] = best;
    placed.push_back({best, bytes, r.first, r.last});
    plan.total_bytes = std::max(plan.total_bytes, best + bytes);
  }
  return plan;
}

}  // namespace

size_t peak_live_bytes(const std::vector<BufferRequest>& requests) {
  std::map<int, int64_t> delta;
  for (const BufferRequest& r : requests) {
    const auto bytes = static_cast<int64_t>(arena_bytes_of(r));
    delta[r.first] += bytes;
    delta[r.last + 1] -= bytes;
  }
  int64_t live = 0, peak = 0;
  for (const auto& [step, d] : delta) peak = std::max(peak, live += d);
  return static_cast<size_t>(peak);
}

namespace {

// Orders to start from; no one of them is best on every network (Swin's arena is 14% over its peak
// by size alone and exact from one of the others).
std::vector<std::vector<size_t>> placement_orders(const std::vector<BufferRequest>& requests, ArenaSearch search) {
  const size_t n = requests.size();
  std::vector<size_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  auto bigger = [&](size_t a, size_t b) { return requests[a].bytes > requests[b].bytes; };
  std::vector<std::vector<size_t>> orders;

  // Largest first: big buffers get placed while the arena is empty, small ones fill the gaps.
  std::vector<size_t> by_size = ids;
  std::stable_sort(by_size.begin(), by_size.end(), bigger);
  orders.push_back(by_size);
  if (search == ArenaSearch::kQuick) return orders;

  // Longest-lived first (then largest): buffers that span many steps pin the layout; place them low.
  orders.push_back(ids);
  std::stable_sort(orders.back().begin(), orders.back().end(), [&](size_t a, size_t b) {
    const int la = requests[a].last - requests[a].first, lb = requests[b].last - requests[b].first;
    return la != lb ? la > lb : bigger(a, b);
  });

  // By breadth: the step with the most bytes alive first, its buffers largest first, then the next
  // busiest step's unplaced ones.
  std::map<int, size_t> live_at;
  for (const BufferRequest& r : requests)
    for (int64_t s = r.first; s <= r.last; ++s) live_at[int(s)] += r.bytes;
  std::vector<std::pair<size_t, int>> steps;
  for (const auto& [step, bytes] : live_at) steps.push_back({bytes, step});
  std::stable_sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<bool> taken(n, false);
  std::vector<size_t> breadth;
  for (const auto& [bytes, step] : steps)
    for (size_t idx : by_size)
      if (!taken[idx] && requests[idx].first <= step && step <= requests[idx].last) {
        taken[idx] = true;
        breadth.push_back(idx);
      }
  for (size_t idx : by_size)  // alive at no step (first > last): still placed, so every order is a permutation
    if (!taken[idx]) breadth.push_back(idx);
  orders.push_back(std::move(breadth));
  return orders;
}

}  // namespace

ArenaPlan plan_arena(const std::vector<BufferRequest>& requests, ArenaSearch search) {
  const size_t n = requests.size();
  ArenaPlan best;
  std::vector<size_t> order;
  for (std::vector<size_t>& start : placement_orders(requests, search)) {
    ArenaPlan plan = place_in_order(requests, start);
    if (order.empty() || plan.total_bytes < best.total_bytes) {
      best = std::move(plan);
      order = std::move(start);
    }
  }
  // Every start order can leave chains of residual blocks fragmented (ConvNeXt: 17% over its peak,
  // the long-lived skip buffers landing between two placements of the wide MLP buffer). Swapping two
  // buffers in the order and keeping the change when the arena does not grow finds the packing;
  // the swaps are seeded, so a plan is the same on every build, and bounded by work (n² per try).
  const size_t floor = peak_live_bytes(requests);
  if (search == ArenaSearch::kQuick || n < 2 || best.total_bytes <= floor) return best;
  constexpr size_t kSearchWork = 20'000'000;
  const size_t tries = std::min<size_t>(400, kSearchWork / (n * n));
  std::mt19937 rng(20261205);
  for (size_t t = 0; t < tries && best.total_bytes > floor; ++t) {
    std::vector<size_t> candidate = order;
    std::swap(candidate[rng() % n], candidate[rng() % n]);
    ArenaPlan plan = place_in_order(requests, candidate);
    if (plan.total_bytes <= best.total_bytes) {
      best = std::move(plan);
      order = std::move(candidate);
    }
  }
  return best;
}

bool is_pointwise_channels_last(const ConvolutionParams& p, const std::vector<int64_t>& w) {
  auto all = [](const std::vector<int64_t>& v, int64_t x) { return std::all_of(v.begin(), v.end(), [x](int64_t e) { return e == x; }); };
  return p.channels_last && !p.transposed && p.groups == 1 && w.size() == 4 && w[1] == 1 && w[2] == 1 &&
         all(p.stride, 1) && all(p.padding, 0);
}

ArenaSearch arena_search_for(const Network& net) {
  // KILN_ARENA_SEARCH=0: largest-first alone for every network (to compare plans).
  if (!detail::env_flag("KILN_ARENA_SEARCH", true)) return ArenaSearch::kQuick;
  return net.input_symbols().empty() ? ArenaSearch::kThorough : ArenaSearch::kQuick;
}

namespace {

bool moves_no_data(const Layer& l) {
  if (l.as<IdentityParams>()) return true;
  const auto* p = l.as<ShuffleParams>();
  return p && p->first_perm.empty() && p->second_perm.empty() && p->reshape;
}

// The arena tensor whose buffer `id` uses (itself unless it is an alias).
int root_of(const std::map<int, int>& alias, int id) {
  auto it = alias.find(id);
  return it == alias.end() ? id : it->second;
}

// The residual input whose buffer the layer's output may take on `device`, or null: where the
// backend's kernel reads each residual element before it writes that element of the output.
// - CPU convolutions (oneDNN's sum post-op adds what the output holds; kiln's own kernel keeps a
//   copy when the two share memory). Its matmuls write the product before adding: never.
// - CUDA matmuls (cuBLASLt's D = A·B + C takes C == D) and 1×1 channels-last convolutions, which
//   run as those matmuls, with KILN_CUDA_IN_PLACE_RESIDUALS=1 only: on the H200, bf16 MobileNetV2
//   and EfficientNet-B0 plans built so disagreed with PyTorch (cosine 0.92 and 0.9988) where fp16
//   and fp32 agreed, not yet explained. Its other convolutions write the output before an epilogue
//   adds the residual: never.
const Tensor* in_place_residual(const Layer& l, DeviceKind device) {
  const auto* cp = l.as<ConvolutionParams>();
  const auto* mp = l.as<MatMulParams>();
  if (l.outputs().size() != 1 || l.inputs().size() < 3) return nullptr;
  if (device != DeviceKind::kCPU && device != DeviceKind::kCUDA) return nullptr;  // a backend's own rule, or none
  if (device == DeviceKind::kCPU && !(cp && cp->has_residual)) return nullptr;
  if (device == DeviceKind::kCUDA) {
    if (!detail::env_flag("KILN_CUDA_IN_PLACE_RESIDUALS", false)) return nullptr;
    bool rows_conv = false;
    if (cp && cp->has_residual) {
      std::vector<int64_t> w;  // the weight's dims, where all are known
      for (const DimExpr& d : l.inputs()[1]->shape()) w.push_back(d.constant().value_or(-1));
      rows_conv = is_pointwise_channels_last(*cp, w);
    }
    if (!rows_conv && !(mp && mp->has_residual)) return nullptr;
  }
  const Tensor* residual = l.inputs().back();
  const Tensor* out = l.output();
  if (residual->dtype() != out->dtype() || residual->shape().size() != out->shape().size()) return nullptr;
  for (size_t d = 0; d < out->shape().size(); ++d)
    if (!residual->shape()[d].same_as(out->shape()[d])) return nullptr;
  return residual;
}

// One pass over the layers: lifetimes of arena tensors and the aliases onto them. `in_place`:
// the layers whose output takes its residual's buffer.
void plan_buffers(const Network& net, std::map<int, Lifetime>* life, std::map<int, int>* alias,
                  const std::set<int>& in_place = {}) {
  auto root = [&](int id) { return root_of(*alias, id); };
  auto layers = net.layers();
  for (int i = 0; i < static_cast<int>(layers.size()); ++i) {
    const Layer* l = layers[i];
    for (const Tensor* t : l->inputs()) {
      auto it = life->find(root(t->id()));
      if (it != life->end()) it->second.last = i;
    }
    if (l->as<ConstantParams>()) continue;
    for (const Tensor* t : l->outputs()) {
      if (!net.input_bound(t->shape())) continue;
      if (moves_no_data(*l) && life->count(root(l->inputs()[0]->id())) &&
          t->dtype() == l->inputs()[0]->dtype()) {
        (*alias)[t->id()] = root(l->inputs()[0]->id());
        continue;
      }
      if (in_place.count(i)) {
        (*alias)[t->id()] = root(l->inputs().back()->id());
        continue;
      }
      (*life)[t->id()] = {i, i};
    }
  }
  // Network outputs stay readable after execute: alive to the end.
  int end = static_cast<int>(layers.size());
  for (auto& [n, t] : net.outputs()) {
    auto it = life->find(root(t->id()));
    if (it != life->end()) it->second.last = end;
  }
}

// Both passes: the aliases of data-free layers first, then the layers whose residual dies with them
// (in_place_residual), by the lifetimes of the first pass.
void plan_all(const Network& net, DeviceKind device, std::map<int, Lifetime>* life, std::map<int, int>* alias) {
  plan_buffers(net, life, alias);
  auto root = [&](int id) { return root_of(*alias, id); };
  std::set<int> in_place;
  auto layers = net.layers();
  for (int i = 0; i < static_cast<int>(layers.size()); ++i) {
    const Tensor* residual = in_place_residual(*layers[i], device);
    if (!residual || !life->count(layers[i]->output()->id())) continue;
    const int r = root(residual->id());
    auto it = life->find(r);
    // Dead after this layer, and nothing else the convolution reads (its input, computed weights or
    // bias) in the same buffer: it would read what it writes.
    if (it == life->end() || it->second.last != i) continue;
    const auto& ins = layers[i]->inputs();
    if (std::any_of(ins.begin(), ins.end() - 1, [&](const Tensor* t) { return root(t->id()) == r; })) continue;
    in_place.insert(i);
  }
  if (in_place.empty()) return;
  life->clear();
  alias->clear();
  plan_buffers(net, life, alias, in_place);
}

}  // namespace

void compute_buffer_plan(const Network& net, DeviceKind device, std::map<int, Lifetime>* lifetimes,
                         std::map<int, int>* aliases) {
  lifetimes->clear();
  aliases->clear();
  plan_all(net, device, lifetimes, aliases);
}

}  // namespace kiln::engine
