// Index arithmetic for gathered loads (GatherLoads in network.h): building simplified integer
// expressions over an output's coordinates (the fold_movement pass), their value ranges, their
// evaluation on the host (the CPU backend, tests) and the checks a loaded plan's expressions pass.
//
// Expressions are built as linear forms: a constant plus integer multiples of leaves, where a leaf
// is an output coordinate or a floor division / remainder of another form by a constant. Division
// and remainder simplify as far as the operands' ranges allow (tinygrad's symbolic rules):
// (k*A + R) / k = A when 0 <= R < k; (d*A + R) / k = A / (k/d) and (d*A + R) % k = d*(A % (k/d)) + R
// when d divides k and 0 <= R < d. A reshape undone after a permute so becomes plain strides, and
// only splits that truly wrap (a rolled window) cost a division in the kernel.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "engine/network.h"

namespace kiln::engine::index_expr {

struct Range {
  int64_t lo = 0, hi = 0;  // inclusive
};

// A constant plus coefficient * node for leaf nodes (coordinates, divisions, remainders).
struct Linear {
  int64_t constant = 0;
  std::map<int32_t, int64_t> terms;  // leaf node -> coefficient (never 0)
};

class Builder {
 public:
  explicit Builder(std::vector<int64_t> out_dims);
  const std::vector<int64_t>& out_dims() const { return out_dims_; }

  Linear coord(size_t dim);  // 0 for a size-1 dim
  static Linear constant(int64_t v);
  static Linear add(const Linear& a, const Linear& b);
  static Linear scale(const Linear& a, int64_t k);
  Linear floordiv(const Linear& a, int64_t k);  // k > 0
  Linear mod(const Linear& a, int64_t k);       // k > 0, result in [0, k)
  Range range(const Linear& a) const;
  // The node computing `a` (shared with equal earlier nodes).
  int32_t node(const Linear& a);

  // The nodes built so far; GatherLoads.nodes.
  std::vector<IndexNode> take_nodes() { return std::move(nodes_); }

 private:
  int32_t intern(IndexNode n, Range r);
  std::vector<int64_t> out_dims_;
  std::vector<IndexNode> nodes_;
  std::vector<Range> ranges_;
  std::map<std::tuple<int, int32_t, int32_t, int64_t>, int32_t> interned_;
};

// Each node's value range over the output coordinates (saturating at +-2^62).
std::vector<Range> node_ranges(const GatherLoads& g);
// What is wrong with `g` for a layer with `n_inputs` inputs of `input_types` (empty: nothing).
std::string check(const GatherLoads& g, const std::vector<DataType>& input_types);
// The dtype of register `r` (its pieces' inputs'; check() made sure they agree).
DataType register_type(const GatherLoads& g, size_t r, const std::vector<DataType>& input_types);
// All node values at one output coordinate (values.size() == g.nodes.size()); wrapping arithmetic.
void evaluate(const GatherLoads& g, const int64_t* coords, int64_t* values);
// The piece of register `r` taken at these node values, or -1 when none applies (the value is 0).
int pick_piece(const GatherLoads& g, size_t r, const int64_t* values);

}  // namespace kiln::engine::index_expr
