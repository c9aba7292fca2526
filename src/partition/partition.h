// The partitioner: from each node's capability verdict (the registry's validators, dynamic-shape
// flags, torch_executed_ops) to accelerated segments and fallback nodes, as Torch-TensorRT's
// partitioner does:
//  - accelerated segments are maximal cycle-free groups of supported nodes: no path leaves a
//    segment through a fallback node and comes back into it;
//  - a segment with fewer than min_block_size compute ops (views, getitem and symbolic-int ops do
//    not count) goes back to the fallback;
//  - require_full_compilation fails, listing every op that could not be converted and why.
// Symbolic-int nodes (sym_size, _operator.*) belong to no segment: their values follow from the
// input shapes, so segments read them as inputs and the program evaluates them on the host.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "conversion/registry.h"
#include "conversion/settings.h"
#include "ir/graph.h"

namespace kiln::partition {

// View-like ops, getitem and symbolic-int ops: free in a segment, not counted by min_block_size.
bool is_compute_op(const ir::Node& node);
// Nodes whose value is a symbolic int/float/bool: evaluated from the input shapes, never segmented.
bool is_symbolic(const ir::Node& node);

struct NodeVerdict {
  const ir::Node* node = nullptr;
  conversion::Verdict verdict = conversion::Verdict::kNoConverter;
  std::string reason;            // registry text, or "segment of N compute ops < min_block_size M"
  bool compute = false;
  bool accelerated = false;      // final placement
};

struct Segment {
  int index = 0;                           // _run_on_acc_<index>
  std::vector<const ir::Node*> nodes;      // graph order
  std::vector<const ir::Node*> inputs;     // read inside, defined outside (placeholders, weights, sym ints, fallback values)
  std::vector<const ir::Node*> outputs;    // tensor (or tuple) values read after the segment
  size_t compute_ops = 0;
  std::string name() const { return "_run_on_acc_" + std::to_string(index); }
};

// One step of the partitioned program, in an order that respects every dependency.
struct Item {
  enum class Kind : uint8_t { kSegment, kFallback } kind;
  int segment = -1;                        // kSegment: index into Partition::segments
  const ir::Node* node = nullptr;          // kFallback: the node (getitem of fallback tuples included)
};

struct Partition {
  std::vector<NodeVerdict> verdicts;       // every call_function node, graph order
  std::vector<Segment> segments;
  std::vector<Item> order;
  size_t total_compute = 0;
  size_t supported_compute = 0;            // verdict convertible (before min_block_size)
  size_t accelerated_compute = 0;          // in a segment after min_block_size
  int64_t suggested_min_block_size = 1;

  const NodeVerdict* verdict_of(const ir::Node* n) const;
  // The dry-run report: coverage, unsupported ops with reasons, segments with shapes, suggestion.
  std::string report() const;
};

struct PartitionError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws PartitionError under require_full_compilation when any op would fall back, listing each.
Partition partition_graph(const ir::Graph& graph, const conversion::CompilationSettings& settings,
                          const conversion::ConverterRegistry& registry = conversion::ConverterRegistry::global());

}  // namespace kiln::partition
