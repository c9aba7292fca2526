#include "partition/partition.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include "ir/source_location.h"

namespace kiln::partition {

namespace {

using conversion::Verdict;

// Ops that only re-describe memory (or copy it unchanged): they cost nothing worth a segment.
const std::set<std::string>& view_ops() {
  static const std::set<std::string> ops = {
      "aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.permute.default",
      "aten.transpose.int", "aten.t.default", "aten.expand.default", "aten.expand_as.default",
      "aten.squeeze.default", "aten.squeeze.dim", "aten.squeeze.dims", "aten.unsqueeze.default",
      "aten.slice.Tensor", "aten.select.int", "aten.narrow.default", "aten.alias.default",
      "aten.clone.default", "aten.contiguous.default", "aten.flatten.using_ints", "aten.unflatten.int",
      "aten.detach.default", "aten.as_strided.default", "aten.split.Tensor", "aten.split_with_sizes.default",
      "aten.chunk.default", "aten.unbind.int", "aten.view_as.default", "aten.lift_fresh_copy.default",
      "aten.dropout.default", "aten.slice_scatter.default" /* copies; kept cheap */,
  };
  return ops;
}

// The category, then the registry's detail when it says more than the category.
std::string verdict_text(const NodeVerdict& v);

std::string verdict_label(const NodeVerdict& v) {
  switch (v.verdict) {
    case Verdict::kNoConverter: return "no converter";
    case Verdict::kValidatorRejected: return "validator rejected";
    case Verdict::kDynamicShape: return "dynamic shape";
    case Verdict::kTorchExecuted: return "torch_executed_ops";
    case Verdict::kConvertible: return "min_block_size";  // convertible but its segment was too small
    case Verdict::kNotAnOp: return "not an op";
  }
  return "?";
}

std::string verdict_text(const NodeVerdict& v) {
  std::string s = verdict_label(v);
  if (!v.reason.empty() && v.verdict != Verdict::kTorchExecuted) s += " (" + v.reason + ")";
  return s;
}

std::string value_str(const ir::Node* n) {
  std::string s = "%" + n->name + ": ";
  switch (n->meta.kind) {
    case ir::ValueMeta::Kind::Tensor: return s + n->meta.tensor.str();
    case ir::ValueMeta::Kind::SymInt: return s + "SymInt " + n->meta.sym.str();
    case ir::ValueMeta::Kind::Tuple:
    case ir::ValueMeta::Kind::TensorList: {
      s += "(";
      for (size_t i = 0; i < n->meta.tuple.size(); ++i)
        s += (i ? ", " : "") + (n->meta.tuple[i] ? n->meta.tuple[i]->str() : std::string("None"));
      return s + ")";
    }
    default: return s + (n->kind == ir::NodeKind::GetAttr ? "weight " + n->target : "value");
  }
}

// Level assignment (see partition.h): supported node n gets L(n) = max over its producers of
// L(p) for a supported p and F(p)+1 for a fallback p; a fallback node gets F(f) = max of L(p) /
// F(p). Supported nodes of one level form one segment. A path from segment k out through a
// fallback node f has F(f) >= k, so anything it reaches again has level >= k+1: no cycles.
struct Levels {
  std::unordered_map<const ir::Node*, int> level;  // L for supported, F for fallback
  int max_level = -1;
};

Levels assign_levels(const std::vector<ir::Node*>& nodes, const std::unordered_map<const ir::Node*, bool>& supported) {
  Levels lv;
  for (const ir::Node* n : nodes) {
    auto s = supported.find(n);
    if (s == supported.end()) continue;  // placeholders, weights, symbolic ints, output: no ordering constraint
    int l = s->second ? 0 : -1;
    for (const ir::Node* p : n->inputs()) {
      auto ps = supported.find(p);
      if (ps == supported.end()) continue;
      const int pl = lv.level.at(p);
      l = std::max(l, (s->second && !ps->second) ? pl + 1 : pl);
    }
    lv.level[n] = l;
    lv.max_level = std::max(lv.max_level, l);
  }
  return lv;
}

}  // namespace

bool is_symbolic(const ir::Node& n) {
  using K = ir::ValueMeta::Kind;
  return n.kind == ir::NodeKind::CallFunction &&
         (n.meta.kind == K::SymInt || n.meta.kind == K::SymFloat || n.meta.kind == K::SymBool);
}

bool is_compute_op(const ir::Node& n) {
  if (n.kind != ir::NodeKind::CallFunction || is_symbolic(n)) return false;
  if (n.target == "getitem" || n.target.rfind("_operator.", 0) == 0) return false;
  return view_ops().count(n.target) == 0;
}

const NodeVerdict* Partition::verdict_of(const ir::Node* n) const {
  for (const auto& v : verdicts)
    if (v.node == n) return &v;
  return nullptr;
}

Partition partition_graph(const ir::Graph& graph, const conversion::CompilationSettings& settings,
                          const conversion::ConverterRegistry& registry) {
  Partition part;
  const std::vector<ir::Node*> nodes = graph.nodes();
  std::unordered_map<const ir::Node*, size_t> index;  // into part.verdicts

  // 1. Verdicts. getitem follows the node it takes apart: a tuple lives where its producer runs.
  for (ir::Node* n : nodes) {
    if (n->kind != ir::NodeKind::CallFunction || is_symbolic(*n)) continue;
    NodeVerdict v;
    v.node = n;
    v.compute = is_compute_op(*n);
    const ir::Node* producer = (n->target == "getitem" && !n->args.empty() && n->args[0].is_node()) ? n->args[0].node() : nullptr;
    if (producer && index.count(producer)) {
      const NodeVerdict& pv = part.verdicts[index.at(producer)];
      v.verdict = pv.verdict == Verdict::kConvertible ? Verdict::kConvertible : Verdict::kNotAnOp;
      v.reason = "element of %" + producer->name;
    } else {
      conversion::Capability cap = registry.lookup(*n, settings);
      v.verdict = cap.verdict;
      v.reason = cap.reason;
    }
    if (v.compute) {
      ++part.total_compute;
      if (v.verdict == Verdict::kConvertible) ++part.supported_compute;
    }
    index[n] = part.verdicts.size();
    part.verdicts.push_back(std::move(v));
  }

  if (settings.require_full_compilation) {
    std::string list;
    size_t count = 0;
    for (const auto& v : part.verdicts) {
      if (v.verdict == Verdict::kConvertible || v.node->target == "getitem") continue;
      ++count;
      list += (count > 1 ? "; %" : " %") + v.node->name + " (" + ir::target_and_source(*v.node) + "): " + verdict_text(v);
    }
    if (count)
      throw PartitionError("require_full_compilation: " + std::to_string(count) + " op(s) cannot be converted:" + list);
  }

  // 2. Levels, then demote the smallest segment under min_block_size until none is left.
  std::unordered_map<const ir::Node*, bool> supported;
  for (const auto& v : part.verdicts) supported[v.node] = v.verdict == Verdict::kConvertible;
  const int64_t min_block = settings.require_full_compilation ? 1 : std::max<int64_t>(settings.min_block_size, 1);
  bool first_round = true;
  Levels lv;
  for (;;) {
    lv = assign_levels(nodes, supported);
    std::vector<size_t> compute(lv.max_level + 1, 0), members(lv.max_level + 1, 0);
    for (const auto& v : part.verdicts)
      if (supported[v.node]) {
        ++members[lv.level[v.node]];
        if (v.compute) ++compute[lv.level[v.node]];
      }
    if (first_round) {  // what min_block_size=1 would give: the base of the suggestion
      std::vector<size_t> sizes;
      for (int l = 0; l <= lv.max_level; ++l)
        if (members[l]) sizes.push_back(compute[l]);
      std::sort(sizes.rbegin(), sizes.rend());
      size_t acc = 0;
      part.suggested_min_block_size = 1;
      for (size_t s : sizes) {
        acc += s;
        part.suggested_min_block_size = std::max<int64_t>(1, static_cast<int64_t>(s));
        if (acc * 10 >= part.supported_compute * 9) break;  // 90% of convertible work accelerated
      }
      first_round = false;
    }
    int worst = -1;
    for (int l = 0; l <= lv.max_level; ++l)
      if (members[l] && static_cast<int64_t>(compute[l]) < min_block && (worst < 0 || compute[l] < compute[worst]))
        worst = l;
    if (worst < 0) break;
    for (auto& v : part.verdicts)
      if (supported[v.node] && lv.level[v.node] == worst) {
        supported[v.node] = false;
        if (v.verdict == Verdict::kConvertible)
          v.reason = "segment of " + std::to_string(compute[worst]) + " compute op(s) < min_block_size " +
                     std::to_string(min_block);
      }
  }

  // 3. Segments (one per non-empty level) and the run order.
  std::map<int, int> seg_of_level;
  for (ir::Node* n : nodes) {
    auto s = supported.find(n);
    if (s == supported.end() || !s->second) continue;
    const int l = lv.level[n];
    if (!seg_of_level.count(l)) seg_of_level[l] = -1;
  }
  for (auto& [l, idx] : seg_of_level) {
    idx = static_cast<int>(part.segments.size());
    Segment seg;
    seg.index = idx;
    part.segments.push_back(std::move(seg));
  }
  for (auto& v : part.verdicts) {
    v.accelerated = supported[v.node];
    if (!v.accelerated) continue;
    Segment& seg = part.segments[seg_of_level[lv.level[v.node]]];
    seg.nodes.push_back(v.node);
    if (v.compute) {
      ++seg.compute_ops;
      ++part.accelerated_compute;
    }
  }
  for (Segment& seg : part.segments) {
    std::set<const ir::Node*> members(seg.nodes.begin(), seg.nodes.end()), seen_in, seen_out;
    for (const ir::Node* n : seg.nodes) {
      for (const ir::Node* p : n->inputs())
        if (!members.count(p) && seen_in.insert(p).second) seg.inputs.push_back(p);
      for (const ir::Node* u : n->users())
        if (!members.count(u) && !is_symbolic(*u) && seen_out.insert(n).second) seg.outputs.push_back(n);
    }
  }
  // Fallback nodes before any segment (F = -1), then each segment followed by the fallback nodes of its level.
  auto add_fallbacks = [&](int level) {
    for (const auto& v : part.verdicts)
      if (!v.accelerated && lv.level[v.node] == level) part.order.push_back({Item::Kind::kFallback, -1, v.node});
  };
  add_fallbacks(-1);
  for (int l = 0; l <= lv.max_level; ++l) {
    if (seg_of_level.count(l)) part.order.push_back({Item::Kind::kSegment, seg_of_level[l], nullptr});
    add_fallbacks(l);
  }
  return part;
}

std::string Partition::report() const {
  std::ostringstream os;
  const double pct = total_compute ? 100.0 * supported_compute / total_compute : 100.0;
  os << "coverage: " << supported_compute << "/" << total_compute << " compute ops convertible (" << std::fixed;
  os.precision(1);
  os << pct << "%); " << accelerated_compute << " accelerated in " << segments.size() << " segment(s)\n";
  bool any = false;
  for (const auto& v : verdicts) {
    if (v.accelerated || v.node->target == "getitem") continue;
    if (!any) os << "unsupported ops (run by PyTorch):\n";
    any = true;
    os << "  %" << v.node->name << " (" << v.node->target << "): " << verdict_text(v) << "\n";
  }
  if (!any) os << "unsupported ops: none\n";
  for (const auto& s : segments) {
    os << "segment " << s.name() << ": " << s.nodes.size() << " nodes, " << s.compute_ops << " compute ops\n";
    os << "  inputs:";
    for (const ir::Node* n : s.inputs)
      if (n->kind != ir::NodeKind::GetAttr) os << "\n    " << value_str(n);
    os << "\n  outputs:";
    for (const ir::Node* n : s.outputs) os << "\n    " << value_str(n);
    os << "\n";
  }
  os << "suggested min_block_size: " << suggested_min_block_size
     << " (keeps at least 90% of the convertible compute ops in segments)\n";
  return os.str();
}

}  // namespace kiln::partition
