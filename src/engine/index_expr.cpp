#include "engine/index_expr.h"

#include <algorithm>

namespace kiln::engine::index_expr {
namespace {

constexpr int64_t kSat = int64_t{1} << 62;

int64_t sat(__int128 v) { return v > kSat ? kSat : v < -kSat ? -kSat : static_cast<int64_t>(v); }

int64_t floor_div(int64_t a, int64_t k) {
  int64_t q = a / k;
  if (a % k != 0 && a < 0) --q;
  return q;
}
int64_t floor_mod(int64_t a, int64_t k) { return a - floor_div(a, k) * k; }

Range range_of(const IndexNode& n, const Range* ra, const Range* rb) {
  switch (n.op) {
    case IndexNode::Op::kCoord: return {0, 0};  // set by the caller from the output dims
    case IndexNode::Op::kConst: return {n.k, n.k};
    case IndexNode::Op::kAdd: return {sat(__int128(ra->lo) + rb->lo), sat(__int128(ra->hi) + rb->hi)};
    case IndexNode::Op::kMul: {
      int64_t x = sat(__int128(ra->lo) * n.k), y = sat(__int128(ra->hi) * n.k);
      return {std::min(x, y), std::max(x, y)};
    }
    case IndexNode::Op::kFloorDiv: return {floor_div(ra->lo, n.k), floor_div(ra->hi, n.k)};
    case IndexNode::Op::kMod:
      if (ra->lo >= 0 && ra->hi < n.k) return *ra;
      return {0, n.k - 1};
  }
  return {0, 0};
}

// Divisors d of k with 1 < d < k, largest first.
std::vector<int64_t> proper_divisors_desc(int64_t k) {
  std::vector<int64_t> out;
  for (int64_t d = 2; d * d <= k; ++d)
    if (k % d == 0) {
      out.push_back(d);
      if (d != k / d) out.push_back(k / d);
    }
  std::sort(out.rbegin(), out.rend());
  return out;
}

void add_term(Linear& l, int32_t node, int64_t coef) {
  if (coef == 0) return;
  int64_t& c = l.terms[node];
  c += coef;
  if (c == 0) l.terms.erase(node);
}

// a = d*A + R with R's terms the ones whose coefficient d does not divide.
void split(const Linear& a, int64_t d, Linear& big, Linear& rest) {
  big = {};
  rest = {};
  big.constant = floor_div(a.constant, d);
  rest.constant = a.constant - big.constant * d;
  for (auto [n, c] : a.terms) {
    if (c % d == 0) add_term(big, n, c / d);
    else add_term(rest, n, c);
  }
}

bool within(const Range& r, int64_t lo, int64_t hi_exclusive) { return r.lo >= lo && r.hi < hi_exclusive; }

}  // namespace

Builder::Builder(std::vector<int64_t> out_dims) : out_dims_(std::move(out_dims)) {}

int32_t Builder::intern(IndexNode n, Range r) {
  auto key = std::make_tuple(static_cast<int>(n.op), n.a, n.b, n.k);
  auto it = interned_.find(key);
  if (it != interned_.end()) return it->second;
  nodes_.push_back(n);
  ranges_.push_back(r);
  const auto id = static_cast<int32_t>(nodes_.size() - 1);
  interned_.emplace(key, id);
  return id;
}

Linear Builder::coord(size_t dim) {
  if (out_dims_.at(dim) <= 1) return {};
  IndexNode n;
  n.op = IndexNode::Op::kCoord;
  n.k = static_cast<int64_t>(dim);
  Linear l;
  l.terms[intern(n, {0, out_dims_[dim] - 1})] = 1;
  return l;
}

Linear Builder::constant(int64_t v) {
  Linear l;
  l.constant = v;
  return l;
}

Linear Builder::add(const Linear& a, const Linear& b) {
  Linear r = a;
  r.constant += b.constant;
  for (auto [n, c] : b.terms) add_term(r, n, c);
  return r;
}

Linear Builder::scale(const Linear& a, int64_t k) {
  Linear r;
  r.constant = a.constant * k;
  for (auto [n, c] : a.terms) add_term(r, n, c * k);
  return r;
}

Range Builder::range(const Linear& a) const {
  __int128 lo = a.constant, hi = a.constant;
  for (auto [n, c] : a.terms) {
    const Range& r = ranges_[n];
    __int128 x = __int128(r.lo) * c, y = __int128(r.hi) * c;
    lo += std::min(x, y);
    hi += std::max(x, y);
  }
  return {sat(lo), sat(hi)};
}

Linear Builder::floordiv(const Linear& a, int64_t k) {
  if (k == 1) return a;
  Linear q, r;
  split(a, k, q, r);  // (k*q + r) / k = q + r / k
  if (within(range(r), 0, k)) return q;
  for (int64_t d : proper_divisors_desc(k)) {
    Linear big, rest;
    split(r, d, big, rest);
    if (within(range(rest), 0, d)) return add(q, floordiv(big, k / d));
  }
  // (x / m) / k = x / (m*k)
  if (r.constant == 0 && r.terms.size() == 1 && r.terms.begin()->second == 1) {
    const IndexNode& leaf = nodes_[r.terms.begin()->first];
    if (leaf.op == IndexNode::Op::kFloorDiv && leaf.k <= kSat / k) {
      IndexNode n{IndexNode::Op::kFloorDiv, leaf.a, -1, leaf.k * k};
      add_term(q, intern(n, range_of(n, &ranges_[leaf.a], nullptr)), 1);
      return q;
    }
  }
  const int32_t inner = node(r);
  IndexNode n{IndexNode::Op::kFloorDiv, inner, -1, k};
  add_term(q, intern(n, range_of(n, &ranges_[inner], nullptr)), 1);
  return q;
}

Linear Builder::mod(const Linear& a, int64_t k) {
  if (k == 1) return {};
  Linear r;
  r.constant = floor_mod(a.constant, k);
  for (auto [n, c] : a.terms) add_term(r, n, floor_mod(c, k));  // (c*x) mod k = ((c mod k)*x) mod k
  if (within(range(r), 0, k)) return r;
  for (int64_t d : proper_divisors_desc(k)) {
    Linear big, rest;
    split(r, d, big, rest);
    if (within(range(rest), 0, d)) return add(scale(mod(big, k / d), d), rest);
  }
  const int32_t inner = node(r);
  IndexNode n{IndexNode::Op::kMod, inner, -1, k};
  Linear out;
  add_term(out, intern(n, range_of(n, &ranges_[inner], nullptr)), 1);
  return out;
}

int32_t Builder::node(const Linear& a) {
  auto constant_node = [&](int64_t v) { return intern({IndexNode::Op::kConst, -1, -1, v}, {v, v}); };
  if (a.terms.empty()) return constant_node(a.constant);
  if (a.constant == 0 && a.terms.size() == 1 && a.terms.begin()->second == 1) return a.terms.begin()->first;
  int32_t cur = -1;
  auto plus = [&](int32_t t) {
    if (cur < 0) {
      cur = t;
      return;
    }
    IndexNode n{IndexNode::Op::kAdd, cur, t, 0};
    cur = intern(n, range_of(n, &ranges_[cur], &ranges_[t]));
  };
  for (auto [leaf, c] : a.terms) {
    if (c == 1) {
      plus(leaf);
    } else {
      IndexNode n{IndexNode::Op::kMul, leaf, -1, c};
      plus(intern(n, range_of(n, &ranges_[leaf], nullptr)));
    }
  }
  if (a.constant != 0) plus(constant_node(a.constant));
  return cur;
}

std::vector<Range> node_ranges(const GatherLoads& g) {
  std::vector<Range> r(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const IndexNode& n = g.nodes[i];
    if (n.op == IndexNode::Op::kCoord) {
      r[i] = {0, std::max<int64_t>(g.out_dims.at(static_cast<size_t>(n.k)) - 1, 0)};
      continue;
    }
    r[i] = range_of(n, n.a >= 0 ? &r[n.a] : nullptr, n.b >= 0 ? &r[n.b] : nullptr);
  }
  return r;
}

std::string check(const GatherLoads& g, const std::vector<DataType>& input_types) {
  const size_t rank = g.out_dims.size();
  if (rank == 0 || rank > 8) return "gathered loads need an output rank of 1 to 8, got " + std::to_string(rank);
  __int128 numel = 1;
  for (int64_t d : g.out_dims) {
    if (d < 0) return "gathered loads: negative output dim";
    numel *= d;
    if (numel > kSat) return "gathered loads: output too large";
  }
  if (g.nodes.size() > 65536) return "gathered loads: too many index nodes";
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const IndexNode& n = g.nodes[i];
    const std::string at = "index node " + std::to_string(i);
    auto operand = [&](int32_t o) { return o >= 0 && static_cast<size_t>(o) < i; };
    switch (n.op) {
      case IndexNode::Op::kCoord:
        if (n.k < 0 || static_cast<size_t>(n.k) >= rank) return at + " reads output dim " + std::to_string(n.k);
        break;
      case IndexNode::Op::kConst: break;
      case IndexNode::Op::kAdd:
        if (!operand(n.a) || !operand(n.b)) return at + " reads a node that is not before it";
        break;
      case IndexNode::Op::kMul:
        if (!operand(n.a)) return at + " reads a node that is not before it";
        break;
      case IndexNode::Op::kFloorDiv:
      case IndexNode::Op::kMod:
        if (!operand(n.a)) return at + " reads a node that is not before it";
        if (n.k <= 0) return at + " divides by " + std::to_string(n.k);
        break;
      default: return at + " has an unknown operation";
    }
  }
  if (g.registers.empty() || g.registers.size() > 16) return "gathered loads need 1 to 16 registers";
  auto node_ok = [&](int32_t n) { return n >= 0 && static_cast<size_t>(n) < g.nodes.size(); };
  for (size_t r = 0; r < g.registers.size(); ++r) {
    const auto& pieces = g.registers[r];
    const std::string at = "gathered register " + std::to_string(r);
    if (pieces.empty() || pieces.size() > 64) return at + " needs 1 to 64 pieces";
    std::optional<DataType> dt;
    for (const LoadPiece& p : pieces) {
      if (p.bounds.size() > 16) return at + ": a piece has more than 16 bounds";
      for (const IndexBound& b : p.bounds)
        if (!node_ok(b.node)) return at + ": a bound reads a node that does not exist";
      if (p.input == -1) continue;
      if (p.input < 0 || static_cast<size_t>(p.input) >= input_types.size())
        return at + " reads input " + std::to_string(p.input) + " of " + std::to_string(input_types.size());
      if (!node_ok(p.offset)) return at + ": an offset reads a node that does not exist";
      if (dt && *dt != input_types[p.input]) return at + " reads inputs of different dtypes";
      dt = input_types[p.input];
    }
    if (!dt) return at + " reads no input";
  }
  return {};
}

DataType register_type(const GatherLoads& g, size_t r, const std::vector<DataType>& input_types) {
  for (const LoadPiece& p : g.registers.at(r))
    if (p.input >= 0) return input_types.at(p.input);
  return DataType::kFloat32;
}

void evaluate(const GatherLoads& g, const int64_t* coords, int64_t* values) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const IndexNode& n = g.nodes[i];
    switch (n.op) {
      case IndexNode::Op::kCoord: values[i] = coords[n.k]; break;
      case IndexNode::Op::kConst: values[i] = n.k; break;
      case IndexNode::Op::kAdd: values[i] = static_cast<int64_t>(uint64_t(values[n.a]) + uint64_t(values[n.b])); break;
      case IndexNode::Op::kMul: values[i] = static_cast<int64_t>(uint64_t(values[n.a]) * uint64_t(n.k)); break;
      case IndexNode::Op::kFloorDiv: values[i] = floor_div(values[n.a], n.k); break;
      case IndexNode::Op::kMod: values[i] = floor_mod(values[n.a], n.k); break;
    }
  }
}

int pick_piece(const GatherLoads& g, size_t r, const int64_t* values) {
  const auto& pieces = g.registers[r];
  for (size_t p = 0; p < pieces.size(); ++p) {
    bool ok = true;
    for (const IndexBound& b : pieces[p].bounds) ok = ok && values[b.node] >= b.lo && values[b.node] < b.hi;
    if (ok) return static_cast<int>(p);
  }
  return -1;
}

}  // namespace kiln::engine::index_expr
