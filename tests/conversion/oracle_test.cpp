// Converters against PyTorch itself: each case builds one node, runs it through libtorch's
// dispatcher (the torch bridge) to get the reference and the output metadata, then converts it
// (it must convert: nothing falls back) and runs the plan on the CPU backend.
// Built with the bridge only (KILN_HAS_TORCH); otherwise the suite reports itself skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "conversion/convert.h"
#include "harness.h"

#ifdef KILN_HAS_TORCH
#include "torch_bridge/torch_bridge.h"
#endif

namespace kiln::conversion {
namespace {

#ifndef KILN_HAS_TORCH
TEST(Oracle, NeedsTheTorchBridge) { GTEST_SKIP() << "built without libtorch: the PyTorch oracle is not available"; }
#else

using ir::ScalarType;
using testing::Case;
using testing::HostArray;
using testing::random_array;
using Arg = ir::Argument;
using L = ir::Argument::List;
using Nodes = std::vector<ir::Node*>;
constexpr auto F = ScalarType::Float;
constexpr auto I64 = ScalarType::Long;
constexpr auto I32 = ScalarType::Int;
constexpr auto B = ScalarType::Bool;

struct OracleCase {
  std::string target;
  std::vector<std::pair<ScalarType, std::vector<int64_t>>> inputs;
  std::function<std::vector<Arg>(const Nodes&)> args;
  std::vector<std::pair<std::string, Arg>> kwargs = {};
  double lo = -3, hi = 3;  // input value range (integer inputs are floored)
  double tol = 1e-5;
  // Per-input value ranges where inputs need different ones (index tensors vs. data); empty = lo/hi.
  std::vector<std::pair<double, double>> ranges = {};
  std::string reference = {};  // the op PyTorch runs for the expected value, when not `target`
};

program::HostTensor to_host(const HostArray& a) {
  auto bytes = std::make_shared<std::vector<uint8_t>>(testing::pack(a));
  return program::HostTensor::view(a.dtype, a.dims, bytes->data(), bytes);
}

std::vector<double> host_values(const program::HostTensor& t) {
  engine::TensorView v;
  v.data = t.data;
  v.dtype = conversion::to_engine_dtype(t.dtype);
  v.dims = t.dims;
  return testing::unpack(v);
}

void run_case(const OracleCase& oc, uint32_t seed) {
  SCOPED_TRACE(oc.target + " seed " + std::to_string(seed));
  Case c;
  Nodes ins;
  std::vector<program::RtValue> rt;
  for (size_t i = 0; i < oc.inputs.size(); ++i) {
    const auto [lo, hi] = i < oc.ranges.size() ? oc.ranges[i] : std::make_pair(oc.lo, oc.hi);
    HostArray a = random_array(oc.inputs[i].first, oc.inputs[i].second, seed + static_cast<uint32_t>(i), lo, hi);
    ins.push_back(c.input("in" + std::to_string(i), a));
    rt.push_back(to_host(a));
  }
  ir::Node* n = c.call(oc.target, oc.args(ins), oc.kwargs, ir::ValueMeta{});
  std::vector<program::RtValue> used;  // the bridge takes the values of node.inputs(), in order
  for (const ir::Node* u : n->inputs())
    used.push_back(rt.at(static_cast<size_t>(std::find(ins.begin(), ins.end(), u) - ins.begin())));
  if (!oc.reference.empty()) n->target = oc.reference;
  std::vector<program::HostTensor> want = torch_bridge::run_node(*n, used);
  n->target = oc.target;
  auto meta_of = [](const program::HostTensor& t) {
    ir::TensorMeta m;
    m.dtype = t.dtype;
    m.sizes.assign(t.dims.begin(), t.dims.end());
    return ir::ValueMeta::of_tensor(m);
  };
  // An op of several outputs (embedding_bag's bag offsets and sizes beside the result) is checked
  // on output 0, read through getitem as export graphs read it.
  const ir::Node* out = n;
  if (want.size() > 1) {
    ir::ValueMeta tuple;
    tuple.kind = ir::ValueMeta::Kind::Tuple;
    for (const auto& w : want) tuple.tuple.push_back(meta_of(w).tensor);
    n->meta = tuple;
    out = c.call("getitem", {n, int64_t{0}}, {}, meta_of(want[0]));
  } else {
    ASSERT_EQ(want.size(), 1u);
    n->meta = meta_of(want[0]);
  }
  const auto found = ConverterRegistry::global().lookup(*n, c.settings);
  ASSERT_EQ(found.verdict, Verdict::kConvertible) << found.reason;
  auto got = c.run({out});
  EXPECT_EQ(got[0].first, want[0].dims);
  testing::expect_close(got[0].second, host_values(want[0]), oc.tol, oc.tol, oc.target);
}

Arg in(const Nodes& n, size_t i) { return n.at(i); }

// A case's arguments: its first `inputs` input nodes, then `extra`. A single list argument is
// written one({Arg(L{...})}): one({L{...}}) is also a copy of the list itself (L is
// std::vector<Arg>), which clang picks, spreading the list into arguments.
std::function<std::vector<Arg>(const Nodes&)> inputs_then(size_t inputs, std::vector<Arg> extra) {
  return [inputs, extra = std::move(extra)](const Nodes& n) {
    std::vector<Arg> a(n.begin(), n.begin() + static_cast<std::ptrdiff_t>(inputs));
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
}
std::function<std::vector<Arg>(const Nodes&)> one(std::vector<Arg> extra = {}) { return inputs_then(1, std::move(extra)); }
std::function<std::vector<Arg>(const Nodes&)> two(std::vector<Arg> extra = {}) { return inputs_then(2, std::move(extra)); }
std::function<std::vector<Arg>(const Nodes&)> three(std::vector<Arg> extra = {}) {
  return inputs_then(3, std::move(extra));
}

// Bool-mask logic, integer cumsum / diff and advanced indexing with several index tensors.
void mask_op_cases(std::vector<OracleCase>& cs) {
  for (const char* op : {"aten.__and__.Tensor", "aten.__or__.Tensor", "aten.__xor__.Tensor",
                         "aten.bitwise_and.Tensor", "aten.bitwise_or.Tensor", "aten.bitwise_xor.Tensor",
                         "aten.logical_and.default", "aten.logical_or.default", "aten.logical_xor.default"}) {
    cs.push_back({op, {{B, {2, 1, 5}}, {B, {3, 1}}}, two(), {}, 0, 2});  // bool masks, broadcast
    cs.push_back({op, {{B, {4, 4}}, {B, {4, 4}}}, two(), {}, 0, 2});
    if (std::string(op).find("logical") == std::string::npos) {
      cs.push_back({op, {{I64, {3, 4}}, {I64, {4}}}, two(), {}, -9, 9});
      cs.push_back({op, {{I32, {6}}, {I64, {6}}}, two(), {}, -9, 9});
      cs.push_back({op, {{I32, {2, 3}}, {B, {2, 3}}}, two(), {}, 0, 2});
    }
  }
  for (const char* op : {"aten.__and__.Scalar", "aten.__or__.Scalar", "aten.__xor__.Scalar",
                         "aten.bitwise_and.Scalar", "aten.bitwise_or.Scalar"}) {
    cs.push_back({op, {{I64, {3, 4}}}, one({6}), {}, -9, 9});
    cs.push_back({op, {{B, {7}}}, one({true}), {}, 0, 2});
  }
  cs.push_back({"aten.bitwise_not.default", {{B, {3, 5}}}, one(), {}, 0, 2});
  cs.push_back({"aten.bitwise_not.default", {{I64, {9}}}, one(), {}, -9, 9});
  cs.push_back({"aten.bitwise_not.default", {{I32, {2, 2}}}, one(), {}, -9, 9});
  cs.push_back({"aten.logical_not.default", {{B, {8}}}, one(), {}, 0, 2});
  cs.push_back({"aten.logical_not.default", {{F, {8}}}, one(), {}, -1, 1});
  cs.push_back({"aten.logical_not.default", {{I64, {2, 4}}}, one(), {}, -2, 2});

  // cumsum: integers and bools accumulate in i64 (PyTorch's result dtype), dtype= casts first.
  auto cum = [](int64_t dim) {
    return [dim](const Nodes& n) { return std::vector<Arg>{n[0], dim}; };
  };
  cs.push_back({"aten.cumsum.default", {{I64, {3, 5}}}, cum(-1), {}, -9, 9});
  cs.push_back({"aten.cumsum.default", {{I64, {4, 2, 3}}}, cum(0), {}, -9, 9});
  cs.push_back({"aten.cumsum.default", {{B, {2, 7}}}, cum(1), {}, 0, 2});
  cs.push_back({"aten.cumsum.default", {{I32, {6}}}, cum(0), {}, -9, 9});
  cs.push_back({"aten.cumsum.default", {{I32, {3, 4}}}, cum(1), {{"dtype", ScalarType::Long}}, -9, 9});
  cs.push_back({"aten.cumsum.default", {{B, {3, 4}}}, cum(0), {{"dtype", ScalarType::Int}}, 0, 2});
  cs.push_back({"aten.cumsum.default", {{I64, {3, 4}}}, cum(1), {{"dtype", F}}, -9, 9});
  cs.push_back({"aten.cumsum.default", {{ScalarType::Byte, {10}}}, cum(0), {}, 0, 9});

  // sort/argsort (a full TopK): floats both ways; integers with many ties through the stable
  // overload, whose order among equals is the input's.
  auto sort_args = [](int64_t dim, bool descending) {
    return [=](const Nodes& n) { return std::vector<Arg>{n[0], dim, descending}; };
  };
  cs.push_back({"aten.argsort.default", {{F, {4, 9}}}, sort_args(-1, false)});
  cs.push_back({"aten.argsort.default", {{F, {5, 3, 2}}}, sort_args(0, true)});
  cs.push_back({"aten.argsort.stable", {{I64, {3, 17}}}, one(), {{"stable", true}, {"dim", 1}, {"descending", false}}, -3, 3});
  cs.push_back({"aten.argsort.stable", {{I32, {6, 5}}}, one(), {{"stable", true}, {"dim", 0}, {"descending", true}}, -2, 2});

  // index_put: several broadcast index tensors with a None, negative indices, accumulate (sums at
  // repeated positions), and a 0-d value written without accumulate (repeats write the same value).
  auto index_put = [](std::vector<int> slots, bool accumulate) {  // slot k: input k+1, or -1; values last
    return [=](const Nodes& n) {
      L l;
      for (int s : slots) l.push_back(s < 0 ? Arg() : Arg(n.at(static_cast<size_t>(s) + 1)));
      return std::vector<Arg>{n[0], l, n.back(), accumulate};
    };
  };
  cs.push_back({"aten.index_put.default", {{F, {4, 5, 6}}, {I64, {3, 1}}, {I64, {1, 2}}, {F, {3, 2, 6}}},
                index_put({0, 1}, true), {}, -3, 3, 1e-5, {{-3, 3}, {-4, 4}, {-5, 5}, {-3, 3}}});
  cs.push_back({"aten.index_put.default", {{F, {2, 5, 6}}, {I64, {4}}, {F, {}}}, index_put({-1, 0}, false), {}, -3, 3,
                1e-5, {{-3, 3}, {-5, 5}, {-3, 3}}});
  cs.push_back({"aten.index_put.default", {{I64, {6, 3}}, {I64, {5}}, {I64, {5, 3}}}, index_put({0}, true), {}, -3, 3,
                1e-5, {{-9, 9}, {-6, 6}, {-9, 9}}});

  // masked_scatter: a full mask, one broadcast along a dim, integers; source longer than needed.
  cs.push_back({"aten.masked_scatter.default", {{F, {3, 4}}, {B, {3, 4}}, {F, {12}}}, three(), {}, -3, 3, 1e-5,
                {{-3, 3}, {0, 2}, {-3, 3}}});
  cs.push_back({"aten.masked_scatter.default", {{F, {2, 3, 5}}, {B, {2, 3, 1}}, {F, {6, 6}}}, three(), {}, -3, 3, 1e-5,
                {{-3, 3}, {0, 2}, {-3, 3}}});
  cs.push_back({"aten.masked_scatter.default", {{I64, {4, 2}}, {B, {4, 2}}, {I64, {3, 3}}}, three(), {}, -3, 3, 1e-5,
                {{-9, 9}, {0, 2}, {-9, 9}}});

  // repeat_interleave by an int: along a dim (negative too), and over the flattened input.
  auto interleave = [](int64_t r, std::optional<int64_t> dim) {
    return [=](const Nodes& n) { return std::vector<Arg>{n[0], r, dim ? Arg(*dim) : Arg()}; };
  };
  cs.push_back({"aten.repeat_interleave.self_int", {{F, {3, 4}}}, interleave(2, 1)});
  cs.push_back({"aten.repeat_interleave.self_int", {{F, {2, 3, 5}}}, interleave(3, -3)});
  cs.push_back({"aten.repeat_interleave.self_int", {{I64, {2, 3}}}, interleave(2, std::nullopt), {}, -5, 5});

  // diff: floats, integers (transformers' position-id diffs), bools (xor), n > 1, prepend/append.
  auto diff = [](int64_t n_, int64_t dim) {
    return [=](const Nodes& n) { return std::vector<Arg>{n[0], n_, dim}; };
  };
  cs.push_back({"aten.diff.default", {{F, {3, 6}}}, diff(1, -1)});
  cs.push_back({"aten.diff.default", {{I64, {5, 4}}}, diff(2, 0), {}, -9, 9});
  cs.push_back({"aten.diff.default", {{I32, {2, 3, 5}}}, diff(1, 1), {}, -9, 9});
  cs.push_back({"aten.diff.default", {{B, {2, 6}}}, diff(1, 1), {}, 0, 2});
  cs.push_back({"aten.diff.default", {{B, {9}}}, diff(3, 0), {}, 0, 2});
  cs.push_back({"aten.diff.default", {{F, {4}}}, diff(0, 0)});
  cs.push_back({"aten.diff.default", {{I64, {2, 5}}, {I64, {2, 1}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 1, -1, n[1]}; }, {}, 0, 9});
  cs.push_back({"aten.diff.default", {{F, {3, 4}}, {F, {1, 4}}, {F, {2, 4}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 2, 0, n[1], n[2]}; }});
  cs.push_back({"aten.diff.default", {{F, {2, 3}}, {F, {2, 2}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 1, 1, Arg(), n[1]}; }});

  // index.Tensor with several index tensors (broadcast), Nones between or before them, negative
  // indices, i32 and i64 indices; ranges keep every index valid for its dim.
  auto index = [](std::vector<int> slots) {  // slot k: input k+1, or -1 for None
    return [slots](const Nodes& n) {
      L l;
      for (int s : slots) l.push_back(s < 0 ? Arg() : Arg(n.at(static_cast<size_t>(s) + 1)));
      return std::vector<Arg>{n[0], l};
    };
  };
  cs.push_back({"aten.index.Tensor", {{F, {4, 5, 6}}, {I64, {3, 1}}, {I64, {1, 2}}}, index({0, 1}), {}, -3, 3,
                1e-5, {{-3, 3}, {-4, 4}, {-5, 5}}});
  cs.push_back({"aten.index.Tensor", {{F, {2, 5, 6, 3}}, {I64, {2, 3}}, {I64, {3}}}, index({-1, 0, 1}), {}, -3, 3,
                1e-5, {{-3, 3}, {-5, 5}, {-6, 6}}});
  cs.push_back({"aten.index.Tensor", {{F, {5, 3, 4}}, {I64, {2, 1}}, {I64, {3}}}, index({0, -1, 1}), {}, -3, 3,
                1e-5, {{-3, 3}, {-5, 5}, {-4, 4}}});
  cs.push_back({"aten.index.Tensor", {{I64, {3, 4, 5, 2}}, {I64, {4}}, {I64, {4}}, {I64, {2, 1}}},
                index({0, -1, 1, 2}), {}, -3, 3, 1e-5, {{-9, 9}, {-3, 3}, {-5, 5}, {-2, 2}}});
  cs.push_back({"aten.index.Tensor", {{F, {3, 4}}, {I64, {}}, {I64, {}}}, index({0, 1}), {}, -3, 3, 1e-5,
                {{-3, 3}, {-3, 3}, {-4, 4}}});
  // transformers' padding mask: attention_mask[batch_idx, kv_idx], idx [B,1,1,1] and [1,1,1,KV].
  cs.push_back({"aten.index.Tensor", {{B, {2, 7}}, {I64, {2, 1, 1, 1}}, {I64, {1, 1, 1, 7}}}, index({0, 1}), {}, 0,
                2, 1e-5, {{0, 2}, {0, 2}, {0, 7}}});
  cs.push_back({"aten.index.Tensor", {{F, {6, 5}}, {I64, {4}}}, index({-1, 0}), {}, -3, 3, 1e-5,
                {{-3, 3}, {-5, 5}}});
  // A boolean mask index (boxes[keep]): its count of trues sizes the result (data-dependent),
  // covering one or two dims, after a None (x[:, mask]), of floats and integers.
  cs.push_back({"aten.index.Tensor", {{F, {6, 4}}, {B, {6}}}, index({0}), {}, -3, 3, 1e-5, {{-3, 3}, {0, 2}}});
  cs.push_back({"aten.index.Tensor", {{F, {3, 4, 2}}, {B, {3, 4}}}, index({0}), {}, -3, 3, 1e-5, {{-3, 3}, {0, 2}}});
  cs.push_back({"aten.index.Tensor", {{F, {2, 5, 3}}, {B, {5}}}, index({-1, 0}), {}, -3, 3, 1e-5, {{-3, 3}, {0, 2}}});
  cs.push_back({"aten.index.Tensor", {{I64, {7}}, {B, {7}}}, index({0}), {}, -3, 3, 1e-5, {{-9, 9}, {0, 2}}});
  // _unsafe_index (PyTorch >= 2.1; upsampling decompositions) is index without the checks: the
  // 1.13 oracle computes it as index.
  cs.push_back({"aten._unsafe_index.Tensor", {{F, {1, 2, 4, 4}}, {I64, {8, 1}}, {I64, {8}}},
                index({-1, -1, 0, 1}), {}, -3, 3, 1e-5, {{-3, 3}, {0, 4}, {0, 4}}});
  cs.back().reference = "aten.index.Tensor";
}

// Issue 18's coverage gate: the registered converters no case above reached (unary math, scalar
// and tensor overloads, reductions of every form, 1-d and 3-d pooling, padding modes, every
// upsample overload, 1-d/3-d and transposed convolutions, norms, factories, scatters, sorting).
void breadth_cases(std::vector<OracleCase>& cs) {
  // Unary math (domains kept inside each function's).
  for (const char* op : {"aten.asin.default", "aten.acos.default", "aten.atan.default", "aten.tan.default"})
    cs.push_back({op, {{F, {3, 5}}}, one(), {}, -0.9, 0.9});
  for (const char* op : {"aten.log2.default", "aten.log10.default", "aten.log1p.default", "aten.reciprocal.default"})
    cs.push_back({op, {{F, {3, 5}}}, one(), {}, 0.2, 4});
  for (const char* op : {"aten.sinh.default", "aten.cosh.default", "aten.expm1.default", "aten.square.default",
                         "aten.trunc.default", "aten.round.default", "aten.relu6.default", "aten.mish.default",
                         "aten.isnan.default", "aten.isinf.default"})
    cs.push_back({op, {{F, {4, 6}}}, one(), {}, -7, 7, 1e-5});
  cs.push_back({"aten.square.default", {{I64, {5}}}, one(), {}, -9, 9});
  // Scalar and tensor overloads.
  cs.push_back({"aten.fmod.Scalar", {{F, {8}}}, one({1.5}), {}, -5, 5});
  cs.push_back({"aten.fmod.Tensor", {{F, {2, 4}}, {F, {4}}}, two(), {}, -5, 5, 1e-5, {{-5, 5}, {0.5, 3}}});
  cs.push_back({"aten.remainder.Scalar", {{F, {8}}}, one({-1.5}), {}, -5, 5});
  cs.push_back({"aten.floor_divide.Scalar", {{I64, {8}}}, one({3}), {}, -9, 9});
  cs.push_back({"aten.bitwise_xor.Scalar", {{I64, {6}}}, one({5}), {}, -9, 9});
  cs.push_back({"aten.le.Scalar", {{F, {7}}}, one({0.25})});
  cs.push_back({"aten.ne.Tensor", {{I64, {3, 4}}, {I64, {4}}}, two(), {}, -2, 2});
  cs.push_back({"aten.pow.Scalar", {{F, {6}}}, [](const Nodes& n) { return std::vector<Arg>{2.0, n[0]}; }});
  cs.push_back({"aten.pow.Tensor_Tensor", {{F, {2, 3}}, {F, {3}}}, two(), {}, 0.5, 2});
  cs.push_back({"aten.div.Scalar_mode", {{F, {8}}}, one({0.7}), {{"rounding_mode", "floor"}}, -5, 5, 1e-5});
  cs.push_back({"aten.rsub.Tensor", {{F, {2, 3}}, {F, {3}}}, two(), {{"alpha", 2}}});
  cs.push_back({"aten.addcdiv.default", {{F, {4}}, {F, {4}}, {F, {4}}}, three(), {{"value", 0.5}}, -3, 3, 1e-5,
                {{-3, 3}, {-3, 3}, {0.5, 2}}});
  cs.push_back({"aten.clamp.Tensor", {{F, {3, 4}}, {F, {4}}, {F, {3, 1}}}, three(), {}, -3, 3, 1e-5,
                {{-3, 3}, {-2, -1}, {1, 2}}});
  cs.push_back({"aten.clamp_max.default", {{F, {7}}}, one({0.5})});
  cs.push_back({"aten.clamp_max.Tensor", {{F, {2, 3}}, {F, {3}}}, two()});
  cs.push_back({"aten.clamp_min.Tensor", {{F, {2, 3}}, {F, {2, 1}}}, two()});
  cs.push_back({"aten.max.other", {{F, {2, 3}}, {F, {3}}}, two()});
  cs.push_back({"aten.where.ScalarSelf", {{B, {3, 4}}, {F, {4}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 1.5, n[1]}; }, {}, -3, 3, 1e-5, {{0, 2}, {-3, 3}}});
  cs.push_back({"aten.masked_fill.Tensor", {{F, {3, 4}}, {B, {3, 4}}, {F, {}}}, three(), {}, -3, 3, 1e-5,
                {{-3, 3}, {0, 2}, {-3, 3}}});
  cs.push_back({"aten.baddbmm.default", {{F, {2, 3, 5}}, {F, {2, 3, 4}}, {F, {2, 4, 5}}}, three(),
                {{"beta", 0.5}, {"alpha", 2.0}}, -1, 1, 1e-4});
  // Reductions in every form: whole-tensor, one dim with indices, lists of dims, corrections.
  cs.push_back({"aten.all.default", {{B, {3, 4}}}, one(), {}, 0, 2});
  cs.push_back({"aten.all.dim", {{F, {3, 4}}}, one({1, true}), {}, 0, 2});
  cs.push_back({"aten.any.default", {{I64, {3, 4}}}, one(), {}, 0, 1.2});
  cs.push_back({"aten.amin.default", {{F, {2, 3, 4}}}, one({L{0, 2}, false})});
  for (const char* op : {"aten.max.default", "aten.min.default", "aten.mean.default", "aten.prod.default"})
    cs.push_back({op, {{F, {3, 4}}}, one(), {}, 0.5, 1.5, 1e-5});
  cs.push_back({"aten.max.dim", {{F, {3, 5}}}, one({1, true})});
  cs.push_back({"aten.min.dim", {{F, {3, 5}}}, one({0})});
  cs.push_back({"aten.std.default", {{F, {4, 6}}}, one({false})});
  cs.push_back({"aten.std.dim", {{F, {4, 6}}}, one({L{1}, true, true})});
  cs.push_back({"aten.std.correction", {{F, {4, 6}}}, one({Arg(L{0})}), {{"correction", 1}, {"keepdim", true}}});
  cs.push_back({"aten.var.default", {{F, {4, 6}}}, one({true})});
  cs.push_back({"aten.var.dim", {{F, {2, 4, 6}}}, one({L{0, 2}, false, false})});
  cs.push_back({"aten.log_softmax.int", {{F, {3, 7}}}, one({1})});
  cs.push_back({"aten.sort.default", {{F, {3, 8}}}, one({1, true})});
  cs.push_back({"aten.sort.stable", {{F, {4, 6}}}, one(), {{"stable", true}, {"dim", 0}, {"descending", false}}});
  cs.push_back({"aten.topk.default", {{F, {3, 9}}}, one({4, -1, true, true})});
  // Pooling: 1-d and 3-d, adaptive, with indices.
  cs.push_back({"aten._adaptive_avg_pool2d.default", {{F, {1, 3, 7, 6}}}, one({Arg(L{3, 2})})});
  cs.push_back({"aten._adaptive_avg_pool3d.default", {{F, {1, 2, 4, 6, 5}}}, one({Arg(L{2, 3, 1})})});
  cs.push_back({"aten.adaptive_avg_pool1d.default", {{F, {2, 3, 10}}}, one({Arg(L{4})})});
  cs.push_back({"aten.adaptive_avg_pool3d.default", {{F, {1, 2, 4, 6, 5}}}, one({Arg(L{1, 1, 1})})});
  cs.push_back({"aten.adaptive_max_pool1d.default", {{F, {2, 3, 10}}}, one({Arg(L{3})})});
  cs.push_back({"aten.adaptive_max_pool2d.default", {{F, {1, 3, 7, 6}}}, one({Arg(L{2, 2})})});
  cs.push_back({"aten.avg_pool1d.default", {{F, {2, 3, 9}}}, one({L{3}, L{2}, L{1}, false, true})});
  cs.push_back({"aten.avg_pool3d.default", {{F, {1, 2, 5, 6, 5}}}, one({L{2, 3, 2}, L{2, 2, 2}, L{0, 1, 1}, true, false})});
  cs.push_back({"aten.max_pool1d.default", {{F, {2, 3, 9}}}, one({L{3}, L{2}, L{1}, L{1}, false})});
  cs.push_back({"aten.max_pool3d.default", {{F, {1, 2, 5, 6, 5}}}, one({L{3, 3, 3}, L{2, 2, 2}, L{1, 1, 1}, L{1, 1, 1}, false})});
  cs.push_back({"aten.max_pool3d_with_indices.default", {{F, {1, 2, 4, 4, 4}}}, one({L{2, 2, 2}, L{2, 2, 2}})});
  // Padding modes, 1-d to 3-d.
  cs.push_back({"aten.reflection_pad1d.default", {{F, {2, 3, 6}}}, one({Arg(L{2, 1})})});
  cs.push_back({"aten.reflection_pad2d.default", {{F, {1, 2, 4, 5}}}, one({Arg(L{1, 2, 2, 0})})});
  cs.push_back({"aten.reflection_pad3d.default", {{F, {1, 1, 3, 4, 4}}}, one({Arg(L{1, 1, 2, 0, 1, 1})})});
  cs.push_back({"aten.replication_pad1d.default", {{F, {2, 3, 6}}}, one({Arg(L{3, 1})})});
  cs.push_back({"aten.replication_pad2d.default", {{F, {1, 2, 4, 5}}}, one({Arg(L{2, 2, 1, 3})})});
  cs.push_back({"aten.replication_pad3d.default", {{F, {1, 1, 3, 4, 4}}}, one({Arg(L{1, 0, 2, 1, 0, 2})})});
  // Every upsample overload: sizes or scale factors, corners aligned or not.
  cs.push_back({"aten.upsample_bilinear2d.default", {{F, {1, 2, 3, 4}}}, one({L{5, 7}, true})});
  cs.push_back({"aten.upsample_linear1d.default", {{F, {2, 3, 5}}}, one({L{9}, false})});
  cs.push_back({"aten.upsample_linear1d.vec", {{F, {2, 3, 5}}}, one({Arg(), true, L{2.0}})});
  cs.push_back({"aten.upsample_nearest1d.default", {{F, {2, 3, 5}}}, one({Arg(L{11})})});
  cs.push_back({"aten.upsample_nearest1d.vec", {{F, {2, 3, 5}}}, one({Arg(), L{3.0}})});
  cs.push_back({"aten.upsample_nearest2d.default", {{F, {1, 2, 3, 4}}}, one({Arg(L{6, 6})})});
  cs.push_back({"aten.upsample_nearest3d.default", {{F, {1, 2, 2, 3, 3}}}, one({Arg(L{4, 5, 6})})});
  cs.push_back({"aten.upsample_nearest3d.vec", {{F, {1, 2, 2, 3, 3}}}, one({Arg(), L{2.0, 2.0, 2.0}})});
  cs.push_back({"aten.upsample_trilinear3d.default", {{F, {1, 2, 2, 3, 3}}}, one({L{3, 5, 4}, false})});
  cs.push_back({"aten.upsample_trilinear3d.vec", {{F, {1, 2, 2, 3, 3}}}, one({Arg(), true, L{2.0, 2.0, 2.0}})});
  cs.push_back({"aten._upsample_nearest_exact2d.default", {{F, {1, 2, 3, 5}}}, one({Arg(L{7, 8})})});
  cs.push_back({"aten._upsample_nearest_exact2d.vec", {{F, {1, 2, 3, 5}}}, one({Arg(), L{2.0, 1.5}})});
  // Convolutions: 1-d and 3-d, string padding, transposed with output padding and groups.
  cs.push_back({"aten.conv1d.default", {{F, {2, 4, 9}}, {F, {6, 2, 3}}, {F, {6}}}, three({L{2}, L{1}, L{1}, 2}), {},
                -1, 1, 1e-4});
  cs.push_back({"aten.conv1d.padding", {{F, {2, 4, 9}}, {F, {5, 4, 4}}}, two({Arg(), L{1}, "same", L{2}, 1}), {}, -1, 1,
                1e-4});
  cs.push_back({"aten.conv2d.padding", {{F, {1, 3, 6, 7}}, {F, {4, 3, 3, 2}}}, two({Arg(), L{1, 1}, "same", L{1, 1}, 1}),
                {}, -1, 1, 1e-4});
  cs.push_back({"aten.conv3d.default", {{F, {1, 2, 4, 5, 5}}, {F, {3, 2, 3, 3, 3}}, {F, {3}}},
                three({L{1, 2, 2}, L{1, 1, 1}, L{1, 1, 1}, 1}), {}, -1, 1, 1e-4});
  cs.push_back({"aten.conv3d.padding", {{F, {1, 2, 4, 5, 5}}, {F, {2, 2, 2, 3, 3}}},
                two({Arg(), L{1, 1, 1}, "valid", L{1, 1, 1}, 1}), {}, -1, 1, 1e-4});
  cs.push_back({"aten.conv_transpose1d.default", {{F, {2, 4, 6}}, {F, {4, 3, 3}}, {F, {6}}},
                three({L{2}, L{1}, L{1}, 2, L{1}}), {}, -1, 1, 1e-4});
  cs.push_back({"aten.conv_transpose2d.input", {{F, {1, 4, 4, 5}}, {F, {4, 2, 3, 3}}},
                two({Arg(), L{2, 2}, L{1, 1}, L{1, 0}, 1, L{1, 1}}), {}, -1, 1, 1e-4});
  cs.push_back({"aten.conv_transpose3d.input", {{F, {1, 2, 3, 3, 3}}, {F, {2, 3, 2, 2, 2}}, {F, {3}}},
                three({L{2, 2, 2}, L{0, 0, 0}, L{0, 0, 0}, 1, L{1, 1, 1}}), {}, -1, 1, 1e-4});
  // Norms as the core-ATen form calls them (inference: running statistics, no update).
  cs.push_back({"aten.native_batch_norm.default", {{F, {2, 3, 4, 4}}, {F, {3}}, {F, {3}}, {F, {3}}, {F, {3}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], n[1], n[2], n[3], n[4], false, 0.1, 1e-5}; }, {},
                -3, 3, 1e-4, {{-3, 3}, {0.5, 2}, {-1, 1}, {-1, 1}, {0.5, 2}}});
  // Batch statistics, nothing to update (InstanceNorm on 1.13; BatchNorm without running stats).
  cs.push_back({"aten.native_batch_norm.default", {{F, {1, 6, 4, 5}}, {F, {6}}, {F, {6}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], n[1], n[2], Arg(), Arg(), true, 0.1, 1e-5}; }, {},
                -3, 3, 1e-4, {{-3, 3}, {0.5, 2}, {-1, 1}}});
  cs.push_back({"aten.batch_norm.default", {{F, {3, 4, 7}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], Arg(), Arg(), Arg(), Arg(), true, 0.1, 1e-5, false}; },
                {}, -3, 3, 1e-4});
  cs.push_back({"aten.native_group_norm.default", {{F, {2, 6, 3, 3}}, {F, {6}}, {F, {6}}},
                three({2, 6, 9, 3, 1e-5}), {}, -3, 3, 1e-4});
  // Shapes, views, factories, scatters.
  cs.push_back({"aten.concat.default", {{F, {2, 3}}, {F, {2, 2}}},
                [](const Nodes& n) { return std::vector<Arg>{L{n[0], n[1]}, -1}; }});
  cs.push_back({"aten.split.sizes", {{F, {7, 3}}}, one({L{2, 5}, 0})});
  cs.push_back({"aten.unbind.int", {{F, {3, 4}}}, one({1})});
  cs.push_back({"aten.squeeze.default", {{F, {1, 3, 1, 2}}}, one()});
  cs.push_back({"aten.reshape_as.default", {{F, {2, 6}}, {F, {3, 4}}}, two()});
  cs.push_back({"aten.view_as.default", {{F, {2, 6}}, {F, {4, 3}}}, two()});
  cs.push_back({"aten._unsafe_view.default", {{F, {2, 6}}}, one({Arg(L{3, 2, 2})})});
  cs.push_back({"aten.ones_like.default", {{F, {2, 5}}}, one()});
  cs.push_back({"aten.new_full.default", {{F, {2}}}, one({L{3, 2}, 1.25})});
  cs.push_back({"aten.fill.Tensor", {{F, {3, 2}}, {F, {}}}, two()});
  cs.push_back({"aten.ones.default", {}, [](const Nodes&) { return std::vector<Arg>{L{2, 3}}; }});
  cs.push_back({"aten.zeros.default", {}, [](const Nodes&) { return std::vector<Arg>{L{4}}; }});
  cs.push_back({"aten.lift_fresh.default", {{F, {3}}}, one()});
  cs.push_back({"aten.alpha_dropout.default", {{F, {3, 4}}}, one({0.5, false})});
  cs.push_back({"aten.feature_dropout.default", {{F, {2, 3, 4}}}, one({0.5, false})});
  auto scatter = [](Arg last) {
    return [=](const Nodes& n) { return std::vector<Arg>{n[0], 1, n[1], last.is_none() ? Arg(n[2]) : last}; };
  };
  cs.push_back({"aten.scatter.src", {{F, {3, 5}}, {I64, {3, 2}}, {F, {3, 2}}}, scatter(Arg()), {}, -3, 3, 1e-5,
                {{-3, 3}, {0, 4.9}, {-3, 3}}});
  cs.push_back({"aten.scatter.value", {{F, {3, 5}}, {I64, {2, 3}}}, scatter(Arg(2.5)), {}, -3, 3, 1e-5,
                {{-3, 3}, {0, 4.9}}});
  cs.push_back({"aten.scatter_add.default", {{F, {3, 5}}, {I64, {3, 4}}, {F, {3, 4}}}, scatter(Arg()), {}, -3, 3, 1e-5,
                {{-3, 3}, {0, 4.9}, {-3, 3}}});
  // embedding_bag's other entry points (same arguments as _embedding_bag; padding_idx unset).
  auto bag = [](bool padding_idx) {
    return [=](const Nodes& n) {
      std::vector<Arg> a{n[0], n[1], n[2], false, 1, false, Arg(), false};
      if (padding_idx) a.push_back(Arg());
      return a;
    };
  };
  // The rest of the tensor ops the fixtures reach only through whole models.
  cs.push_back({"aten.cos.default", {{F, {9}}}, one()});
  cs.push_back({"aten.ge.Scalar", {{F, {9}}}, one({0.0})});
  cs.push_back({"aten.lt.Scalar", {{I64, {9}}}, one({2})});
  cs.push_back({"aten.ne.Scalar", {{I64, {9}}}, one({1}), {}, 0, 3});
  cs.push_back({"aten.le.Tensor", {{F, {2, 4}}, {F, {4}}}, two()});
  cs.push_back({"aten.min.other", {{F, {2, 4}}, {F, {2, 1}}}, two()});
  cs.push_back({"aten.clamp_min.default", {{F, {9}}}, one({-0.5})});
  cs.push_back({"aten.where.Scalar", {{B, {3, 4}}}, one({1.5, -2.0}), {}, 0, 2});
  cs.push_back({"aten.where.ScalarOther", {{B, {3, 4}}, {F, {4}}}, two({0.25}), {}, -3, 3, 1e-5, {{0, 2}, {-3, 3}}});
  cs.push_back({"aten.expand_as.default", {{F, {3, 1}}, {F, {2, 3, 4}}}, two()});
  cs.push_back({"aten.narrow.default", {{F, {5, 6}}}, one({1, 2, 3})});
  cs.push_back({"aten.pad.default", {{F, {1, 2, 4, 5}}}, one({L{1, 2, 2, 1}, "reflect"})});
  cs.push_back({"aten.pad.default", {{F, {2, 3, 4}}}, one({L{2, 1}, "constant", 0.5})});
  cs.push_back({"aten.reshape.default", {{F, {2, 6}}}, one({Arg(L{3, -1})})});
  cs.push_back({"aten.unflatten.int", {{F, {2, 12}}}, one({1, L{3, -1}})});
  cs.push_back({"aten.type_as.default", {{F, {5}}, {I64, {2}}}, two(), {}, -9, 9});
  cs.push_back({"aten.alias.default", {{F, {4}}}, one()});
  cs.push_back({"aten.lift_fresh_copy.default", {{F, {4}}}, one()});
  cs.push_back({"aten.as_strided.default", {{F, {4, 6}}}, one({L{3, 8}, L{8, 1}, 0})});  // a contiguous re-layout
  cs.push_back({"aten.scalar_tensor.default", {}, [](const Nodes&) { return std::vector<Arg>{2.5}; }});
  cs.push_back({"aten.arange.default", {}, [](const Nodes&) { return std::vector<Arg>{7}; }});
  cs.push_back({"aten.new_ones.default", {{F, {2}}}, one({Arg(L{2, 3})})});
  cs.push_back({"aten.new_zeros.default", {{F, {2}}}, one({Arg(L{4})})});
  cs.push_back({"aten.linalg_vector_norm.default", {{F, {3, 5}}}, one({2, L{1}, true})});
  cs.push_back({"aten.norm.ScalarOpt_dim", {{F, {3, 5, 4}}}, one({2, L{1, 2}, false})});
  cs.push_back({"aten.norm.ScalarOpt_dim", {{F, {3, 5}}}, one({Arg(), L{-1}, true})});  // p None: 2
  const double inf = std::numeric_limits<double>::infinity();
  for (double p : {1.0, 3.0, 0.0, inf, -inf})
    cs.push_back({"aten.norm.ScalarOpt_dim", {{F, {3, 5, 4}}}, one({p, L{1}, false})});
  cs.push_back({"aten.batch_norm.default", {{F, {2, 3, 4}}, {F, {3}}, {F, {3}}, {F, {3}}, {F, {3}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], n[1], n[2], n[3], n[4], false, 0.1, 1e-5, false}; },
                {}, -3, 3, 1e-4, {{-3, 3}, {0.5, 2}, {-1, 1}, {-1, 1}, {0.5, 2}}});
  // Ops with hand-computed tests in converters_test.cpp, against PyTorch here as well.
  cs.push_back({"aten.addmm.default", {{F, {5}}, {F, {3, 4}}, {F, {4, 5}}}, three(), {}, -1, 1, 1e-4});
  cs.push_back({"aten.mm.default", {{F, {3, 4}}, {F, {4, 5}}}, two(), {}, -1, 1, 1e-4});
  cs.push_back({"aten.bmm.default", {{F, {2, 3, 4}}, {F, {2, 4, 5}}}, two(), {}, -1, 1, 1e-4});
  cs.push_back({"aten.matmul.default", {{F, {2, 3, 4}}, {F, {4}}}, two(), {}, -1, 1, 1e-4});
  cs.push_back({"aten.linear.default", {{F, {2, 3, 4}}, {F, {5, 4}}, {F, {5}}}, three(), {}, -1, 1, 1e-4});
  cs.push_back({"aten.conv2d.default", {{F, {1, 3, 6, 6}}, {F, {4, 3, 3, 3}}, {F, {4}}},
                three({L{2, 1}, L{1, 0}, L{1, 1}, 1}), {}, -1, 1, 1e-4});
  cs.push_back({"aten.any.dim", {{F, {3, 4}}}, one({0, true}), {}, 0, 1.3});
  cs.push_back({"aten.sum.default", {{F, {3, 4}}}, one(), {}, -1, 1, 1e-5});
  cs.push_back({"aten.arange.start", {}, [](const Nodes&) { return std::vector<Arg>{-3, 5}; }});
  cs.push_back({"aten.full.default", {}, [](const Nodes&) { return std::vector<Arg>{L{2, 3}, 0.75}; }});
  cs.push_back({"aten.full_like.default", {{F, {2, 3}}}, one({-1.5})});
  cs.push_back({"aten.zeros_like.default", {{I64, {4}}}, one()});
  cs.push_back({"aten.fill.Scalar", {{F, {3, 2}}}, one({4.0})});
  cs.push_back({"aten.chunk.default", {{F, {7, 2}}}, one({3, 0})});
  cs.push_back({"aten.split.Tensor", {{F, {2, 7}}}, one({3, 1})});
  cs.push_back({"aten.split_with_sizes.default", {{F, {6, 2}}}, one({L{1, 5}, 0})});
  cs.push_back({"aten.stack.default", {{F, {2, 3}}, {F, {2, 3}}},
                [](const Nodes& n) { return std::vector<Arg>{L{n[0], n[1]}, 1}; }});
  cs.push_back({"aten.clone.default", {{F, {3, 4}}}, one()});
  cs.push_back({"aten.contiguous.default", {{F, {3, 4}}}, one()});
  cs.push_back({"aten.detach.default", {{F, {3}}}, one()});
  cs.push_back({"aten.copy.default", {{F, {2, 3}}, {F, {3}}}, two()});
  cs.push_back({"aten.dropout.default", {{F, {3, 4}}}, one({0.5, false})});
  cs.push_back({"aten.elu.default", {{F, {9}}}, one({0.7})});
  // SELU's and CELU's elus (a scale; an input scale), CELU itself, and PReLU: one slope per
  // channel, one for all, a 1-d input.
  cs.push_back({"aten.elu.default", {{F, {3, 5}}}, one({1.6733, 1.0507, 1.0})});
  cs.push_back({"aten.elu.default", {{F, {3, 5}}}, one({0.5, 1.0, 2.0})});
  cs.push_back({"aten.celu.default", {{F, {3, 5}}}, one({0.7})});
  cs.push_back({"aten.prelu.default", {{F, {2, 3, 4, 4}}, {F, {3}}}, two()});
  cs.push_back({"aten.prelu.default", {{F, {2, 3, 4}}, {F, {1}}}, two()});
  cs.push_back({"aten.prelu.default", {{F, {6}}, {F, {1}}}, two()});
  cs.push_back({"aten.prelu.default", {{F, {5, 6}}, {F, {6}}}, two()});
  cs.push_back({"aten.hardtanh.default", {{F, {9}}}, one({-0.5, 2.0})});
  cs.push_back({"aten.erf.default", {{F, {9}}}, one()});
  cs.push_back({"aten.floor.default", {{F, {9}}}, one()});
  cs.push_back({"aten.eq.Scalar", {{I64, {9}}}, one({1}), {}, 0, 3});
  cs.push_back({"aten.gt.Scalar", {{F, {9}}}, one({0.5})});
  cs.push_back({"aten.gt.Tensor", {{F, {2, 4}}, {F, {4}}}, two()});
  cs.push_back({"aten.masked_fill.Scalar", {{F, {3, 4}}, {B, {4}}}, two({-2.0}), {}, -3, 3, 1e-5, {{-3, 3}, {0, 2}}});
  cs.push_back({"aten.embedding.default", {{F, {6, 3}}, {I64, {2, 4}}}, two(), {}, -3, 3, 1e-5, {{-3, 3}, {0, 5.9}}});
  cs.push_back({"aten.index_select.default", {{F, {5, 3}}, {I64, {4}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 0, n[1]}; }, {}, -3, 3, 1e-5, {{-3, 3}, {0, 4.9}}});
  cs.push_back({"aten.flatten.using_ints", {{F, {2, 3, 4, 5}}}, one({1, 2})});
  cs.push_back({"aten.view.default", {{F, {2, 6}}}, one({Arg(L{4, 3})})});
  cs.push_back({"aten.t.default", {{F, {2, 5}}}, one()});
  cs.push_back({"aten.transpose.int", {{F, {2, 3, 4}}}, one({0, 2})});
  cs.push_back({"aten.unsqueeze.default", {{F, {2, 3}}}, one({-1})});
  cs.push_back({"aten.to.dtype", {{F, {6}}}, one({Arg(ScalarType::Long)}), {}, -9, 9});
  cs.push_back({"aten.roll.default", {{F, {3, 4}}}, one({L{1, -2}, L{0, 1}})});
  cs.push_back({"aten.softmax.int", {{F, {3, 5}}}, one({0})});
  cs.push_back({"aten.layer_norm.default", {{F, {2, 3, 4}}, {F, {4}}, {F, {4}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], L{4}, n[1], n[2], 1e-5}; }, {}, -3, 3, 1e-4});
  cs.push_back({"aten.native_layer_norm.default", {{F, {2, 3, 4}}, {F, {3, 4}}, {F, {3, 4}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], L{3, 4}, n[1], n[2], 1e-5}; }, {}, -3, 3, 1e-4});
  cs.push_back({"aten.max_pool2d_with_indices.default", {{F, {1, 2, 5, 6}}}, one({L{2, 2}, L{2, 2}})});
  cs.push_back({"aten.select_scatter.default", {{F, {3, 4}}, {F, {4}}}, two({0, 1})});
  cs.push_back({"aten.slice_scatter.default", {{F, {5, 4}}, {F, {2, 4}}}, two({0, 1, 3, 1})});
  // unique: a data-dependent count of values (output 0 here; tests/python/test_unique.py checks the
  // inverse indices and counts as well).
  cs.push_back({"aten._unique2.default", {{I64, {3, 5}}}, one({true, true, true}), {}, -3, 3});
  cs.push_back({"aten._unique2.default", {{F, {7}}}, one({true, false, false}), {}, -2, 2});
  cs.push_back({"aten.unique_consecutive.default", {{I64, {12}}}, one({false, true}), {}, 0, 2});
  for (const char* op : {"aten.embedding_bag.default", "aten._embedding_bag_forward_only.default"})
    cs.push_back({op, {{F, {10, 4}}, {I64, {7}}, {I64, {3}}}, bag(false), {}, -3, 3, 1e-5, {{-3, 3}, {0, 9.9}, {0, 0}}});
  cs.push_back({"aten.embedding_bag.padding_idx", {{F, {10, 4}}, {I64, {7}}, {I64, {3}}}, bag(true), {}, -3, 3, 1e-5,
                {{-3, 3}, {0, 9.9}, {0, 0}}});
}

// Diagonals, windows, scans, losses and the smaller pointwise ops (issue 14's second sweep).
void structure_cases(std::vector<OracleCase>& cs) {
  auto args_of = [](std::vector<Arg> extra, size_t inputs = 1) { return inputs_then(inputs, std::move(extra)); };
  cs.push_back({"aten.diagonal.default", {{F, {4, 5}}}, args_of({1})});
  cs.push_back({"aten.diagonal.default", {{F, {2, 5, 3, 4}}}, args_of({-2, 3, 1})});  // dims out of order
  cs.push_back({"aten.diagonal.default", {{I64, {3, 3}}}, args_of({0, -1, -2}), {}, -9, 9});
  cs.push_back({"aten.diag_embed.default", {{F, {2, 3}}}, args_of({})});
  cs.push_back({"aten.diag_embed.default", {{F, {2, 3}}}, args_of({2, 0, 2})});
  cs.push_back({"aten.diag_embed.default", {{F, {4}}}, args_of({-1, 1, 0})});
  cs.push_back({"aten.diag.default", {{F, {4}}}, args_of({1})});
  cs.push_back({"aten.diag.default", {{F, {3, 5}}}, args_of({-1})});
  cs.push_back({"aten.trace.default", {{F, {4, 3}}}, args_of({})});
  cs.push_back({"aten.trace.default", {{I32, {3, 3}}}, args_of({}), {}, -9, 9});
  cs.push_back({"aten.linalg_cross.default", {{F, {4, 3}}, {F, {1, 3}}}, args_of({}, 2)});
  cs.push_back({"aten.linalg_cross.default", {{F, {3, 2}}, {F, {3, 2}}}, args_of({}, 2), {{"dim", 0}}});
  // cdist: every p (2 through the differences, and through a matrix multiply past 25 rows).
  for (double p : {0.0, 1.0, 2.0, 3.0, std::numeric_limits<double>::infinity()})
    cs.push_back({"aten._cdist_forward.default", {{F, {2, 4, 3}}, {F, {2, 5, 3}}}, args_of({p, Arg()}, 2), {}, -3, 3, 1e-4});
  cs.push_back({"aten._cdist_forward.default", {{F, {30, 8}}, {F, {7, 8}}}, args_of({2.0, Arg()}, 2), {}, -3, 3, 1e-4});
  cs.push_back({"aten._cdist_forward.default", {{F, {6, 8}}, {F, {7, 8}}}, args_of({2.0, 1}, 2), {}, -3, 3, 1e-4});
  for (double p : {0.0, 1.0, 2.0, 3.0, std::numeric_limits<double>::infinity()})
    cs.push_back({"aten._pdist_forward.default", {{F, {5, 3}}}, args_of({p}), {}, -3, 3, 1e-4});
  // Windows: padding, dilation and stride; unbatched; overlapping folds sum.
  cs.push_back({"aten.im2col.default", {{F, {2, 3, 6, 7}}}, args_of({L{3, 2}, L{1, 2}, L{1, 0}, L{2, 1}})});
  cs.push_back({"aten.im2col.default", {{F, {2, 5, 5}}}, args_of({L{2, 2}, L{1, 1}, L{0, 0}, L{2, 2}})});
  cs.push_back({"aten.col2im.default", {{F, {2, 12, 12}}}, args_of({L{5, 6}, L{2, 2}, L{1, 1}, L{1, 1}, L{2, 2}})});
  cs.push_back({"aten.col2im.default", {{F, {8, 6}}}, args_of({L{4, 5}, L{2, 2}, L{1, 2}, L{0, 0}, L{2, 1}})});
  cs.push_back({"aten.unfold.default", {{F, {2, 11}}}, args_of({1, 4, 3})});
  cs.push_back({"aten.unfold.default", {{F, {3, 8, 2}}}, args_of({-2, 2, 2})});
  cs.push_back({"aten.unfold.default", {{I64, {5}}}, args_of({0, 5, 1}), {}, -9, 9});
  // Scans: products (integers in i64, a dtype cast), and log-add-exp over values far apart.
  cs.push_back({"aten.cumprod.default", {{F, {3, 9}}}, args_of({1}), {}, 0.5, 1.5});
  cs.push_back({"aten.cumprod.default", {{I64, {4, 3}}}, args_of({0}), {}, -3, 3});
  cs.push_back({"aten.cumprod.default", {{I32, {6}}}, args_of({0}), {{"dtype", F}}, -3, 3});
  cs.push_back({"aten.logcumsumexp.default", {{F, {2, 17}}}, args_of({-1}), {}, -200, 200, 1e-4});
  cs.push_back({"aten.logcumsumexp.default", {{F, {5, 3}}}, args_of({0})});
  // nll_loss: each reduction, class weights, an ignored class (1 of 4), one sample, per pixel.
  auto nll = [](bool weighted, int64_t reduction, int64_t ignore) {
    return [=](const Nodes& n) { return std::vector<Arg>{n[0], n[1], weighted ? Arg(n[2]) : Arg(), reduction, ignore}; };
  };
  for (int64_t reduction : {0, 1, 2})
    for (bool weighted : {false, true})
      cs.push_back({"aten.nll_loss_forward.default", {{F, {6, 4}}, {I64, {6}}, {F, {4}}}, nll(weighted, reduction, 1),
                    {}, -3, 3, 1e-5, {{-3, 3}, {0, 4}, {0.5, 2}}});
  cs.push_back({"aten.nll_loss_forward.default", {{F, {5}}, {I64, {}}}, nll(false, 1, -100), {}, -3, 3, 1e-5, {{-3, 3}, {0, 5}}});
  cs.push_back({"aten.nll_loss2d_forward.default", {{F, {2, 3, 4, 5}}, {I64, {2, 4, 5}}, {F, {3}}}, nll(true, 1, 2), {},
                -3, 3, 1e-5, {{-3, 3}, {0, 3}, {0.5, 2}}});
  // Window functions: periodic and symmetric, one point, hamming's own coefficients.
  auto window = [](std::vector<Arg> a) { return [a](const Nodes&) { return a; }; };
  for (const char* kind : {"hann", "hamming", "blackman", "bartlett"}) {
    cs.push_back({std::string("aten.") + kind + "_window.default", {}, window({Arg(int64_t{9})})});
    cs.push_back({std::string("aten.") + kind + "_window.periodic", {}, window({Arg(int64_t{8}), false})});
    cs.push_back({std::string("aten.") + kind + "_window.periodic", {}, window({Arg(int64_t{1}), true})});
  }
  cs.push_back({"aten.linspace.default", {}, window({-1.5, 2.25, Arg(int64_t{7})})});
  cs.push_back({"aten.linspace.default", {}, window({Arg(int64_t{3}), Arg(int64_t{-4}), Arg(int64_t{10})})});
  cs.push_back({"aten.linspace.default", {}, window({0.5, 9.0, Arg(int64_t{1})})});
  cs.push_back({"aten.hamming_window.periodic_alpha", {}, window({Arg(int64_t{6}), true, 0.6})});
  cs.push_back({"aten.hamming_window.periodic_alpha_beta", {}, window({Arg(int64_t{7}), false, 0.5, 0.4})});
  // Order statistics (odd and even counts), NaN-skipping sums, counts, membership, running extremes.
  cs.push_back({"aten.median.dim", {{F, {3, 7}}}, args_of({1})});
  cs.push_back({"aten.median.dim", {{F, {4, 2, 3}}}, args_of({0, true})});
  cs.push_back({"aten.median.default", {{F, {3, 5}}}, args_of({})});
  cs.push_back({"aten.nanmedian.dim", {{F, {3, 6}}}, args_of({-1})});
  cs.push_back({"aten.nanmedian.default", {{F, {2, 5}}}, args_of({})});
  cs.push_back({"aten.kthvalue.default", {{F, {3, 7}}}, args_of({3, 1})});
  cs.push_back({"aten.kthvalue.default", {{F, {5, 2}}}, args_of({5, 0, true})});
  cs.push_back({"aten.nansum.default", {{F, {3, 7}}}, args_of({L{1}})});
  cs.push_back({"aten.nansum.default", {{I64, {3, 4}}}, args_of({}), {}, -9, 9});
  cs.push_back({"aten.count_nonzero.default", {{I64, {3, 7}}}, args_of({1}), {}, -2, 2});
  cs.push_back({"aten.count_nonzero.dim_IntList", {{F, {3, 4, 2}}}, args_of({L{0, 2}}), {}, -1, 1});
  cs.push_back({"aten.count_nonzero.default", {{B, {3, 4}}}, args_of({}), {}, 0, 2});
  cs.push_back({"aten.isin.Tensor_Tensor", {{I64, {3, 5}}, {I64, {2, 2}}}, args_of({}, 2), {}, -4, 4});
  cs.push_back({"aten.isin.Tensor_Tensor", {{I64, {6}}, {I64, {3}}}, args_of({}, 2), {{"invert", true}}, -4, 4});
  cs.push_back({"aten.isin.Tensor_Scalar", {{I64, {6}}}, args_of({int64_t{2}}), {}, -4, 4});
  cs.push_back({"aten.cummax.default", {{F, {3, 9}}}, args_of({1})});
  cs.push_back({"aten.cummin.default", {{I64, {10, 2}}}, args_of({0}), {}, -3, 3});  // ties: the last index
  cs.push_back({"aten.cummax.default", {{I32, {13}}}, args_of({0}), {}, -2, 2});
  // nn.Bilinear's _trilinear, and weight normalization along either end.
  cs.push_back({"aten._trilinear.default", {{F, {4, 3}}, {F, {5, 3, 6}}, {F, {4, 6}}},
                args_of({L{1, 3}, L{0}, L{1, 2}, L{2, 3}}, 3)});
  cs.push_back({"aten._weight_norm_interface.default", {{F, {6, 4, 3}}, {F, {6, 1, 1}}}, args_of({0}, 2)});
  cs.push_back({"aten._weight_norm_interface.default", {{F, {6, 4}}, {F, {1, 4}}}, args_of({1}, 2)});
  for (const char* shift : {"aten.__lshift__.Scalar", "aten.__rshift__.Scalar", "aten.bitwise_left_shift.Tensor_Scalar",
                            "aten.bitwise_right_shift.Tensor_Scalar"})
    cs.push_back({shift, {{I64, {3, 4}}}, args_of({int64_t{3}}), {}, -99, 99});
  cs.push_back({"aten.__rshift__.Scalar", {{I32, {6}}}, args_of({int64_t{1}}), {}, -99, 99});
  // Factories, rotations, block matrices, flat and filled indexing, affine grids.
  cs.push_back({"aten.eye.default", {}, window({Arg(int64_t{4})})});
  cs.push_back({"aten.eye.m", {}, window({Arg(int64_t{3}), Arg(int64_t{5})}), {{"dtype", I64}}});
  cs.push_back({"aten.tril_indices.default", {}, window({Arg(int64_t{4}), Arg(int64_t{3}), Arg(int64_t{-1})})});
  cs.push_back({"aten.triu_indices.default", {}, window({Arg(int64_t{3}), Arg(int64_t{5}), Arg(int64_t{1})})});
  for (int64_t k : {1, 2, 3, -1, 0})
    cs.push_back({"aten.rot90.default", {{F, {2, 3, 4}}}, args_of({k, L{2, 0}})});
  cs.push_back({"aten.block_diag.default", {{F, {2, 3}}, {F, {1, 1}}, {F, {2}}},
                [](const Nodes& n) { return std::vector<Arg>{L{n[0], n[1], n[2]}}; }});
  cs.push_back({"aten.take.default", {{F, {3, 4}}, {I64, {2, 2}}}, args_of({}, 2), {}, -3, 3, 1e-5, {{-3, 3}, {-12, 12}}});
  cs.push_back({"aten.index_fill.int_Scalar", {{F, {3, 5}}, {I64, {3}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 1, n[1], -2.5}; }, {}, -3, 3, 1e-5, {{-3, 3}, {-5, 5}}});
  cs.push_back({"aten.index_fill.int_Tensor", {{I64, {4, 2}}, {I64, {2}}, {I64, {}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 0, n[1], n[2]}; }, {}, -3, 3, 1e-5,
                {{-9, 9}, {0, 4}, {-9, 9}}});
  cs.push_back({"aten.aminmax.default", {{F, {3, 5}}}, args_of({}), {{"dim", 1}, {"keepdim", true}}});
  cs.push_back({"aten.aminmax.default", {{I64, {3, 5}}}, args_of({}), {}, -9, 9});
  for (bool corners : {false, true})
    cs.push_back({"aten.affine_grid_generator.default", {{F, {2, 2, 3}}}, args_of({L{2, 3, 4, 5}, corners}), {}, -1, 1});
  cs.push_back({"aten.heaviside.default", {{F, {3, 5}}, {F, {5}}}, args_of({}, 2), {}, -2, 2});
  cs.push_back({"aten.heaviside.default", {{I64, {3, 5}}, {I64, {}}}, args_of({}, 2), {}, -2, 2});  // zeros too
  cs.push_back({"aten.fmax.default", {{F, {3, 5}}, {F, {5}}}, args_of({}, 2)});
  cs.push_back({"aten.fmin.default", {{I64, {4}}, {I64, {4}}}, args_of({}, 2), {}, -9, 9});
  // Antialiased resizing: shrinking and growing, corners aligned or not, sizes and scale factors.
  for (const char* mode : {"bilinear", "bicubic"}) {
    const std::string vec = std::string("aten._upsample_") + mode + "2d_aa.vec";
    const std::string plain = std::string("aten._upsample_") + mode + "2d_aa.default";
    cs.push_back({vec, {{F, {1, 2, 16, 20}}}, args_of({L{5, 7}, false, Arg()})});
    cs.push_back({vec, {{F, {2, 1, 8, 8}}}, args_of({L{13, 11}, true, Arg()})});
    cs.push_back({vec, {{F, {1, 2, 9, 12}}}, args_of({Arg(), false, L{0.5, 0.75}})});
    cs.push_back({plain, {{F, {1, 2, 10, 9}}}, args_of({L{4, 6}, false})});
  }
  // Special functions: lgamma and digamma across the poles' neighbourhood and far out, erfinv in (-1, 1).
  cs.push_back({"aten.lgamma.default", {{F, {4, 25}}}, args_of({}), {}, -4.9, 30, 1e-4});
  cs.push_back({"aten.digamma.default", {{F, {4, 25}}}, args_of({}), {}, -4.9, 30, 1e-4});
  cs.push_back({"aten.digamma.default", {{I64, {3, 4}}}, args_of({}), {}, 1, 9, 1e-5});
  cs.push_back({"aten.erfinv.default", {{F, {4, 25}}}, args_of({}), {}, -0.999, 0.999, 1e-5});
  // Pointwise.
  cs.push_back({"aten.threshold.default", {{F, {3, 5}}}, args_of({0.5, -2.0})});
  cs.push_back({"aten.hardshrink.default", {{F, {3, 5}}}, args_of({1.0})});
  cs.push_back({"aten.softshrink.default", {{F, {3, 5}}}, args_of({0.7})});
  cs.push_back({"aten.rrelu.default", {{F, {3, 5}}}, args_of({0.1, 0.3})});
  cs.push_back({"aten.rrelu_with_noise.default", {{F, {3, 5}}, {F, {3, 5}}}, args_of({0.2, 0.4}, 2)});
  cs.push_back({"aten.logit.default", {{F, {3, 5}}}, args_of({}), {}, 0.01, 0.99});
  cs.push_back({"aten.logit.default", {{F, {3, 5}}}, args_of({0.1}), {}, -0.5, 1.5});
  cs.push_back({"aten.deg2rad.default", {{F, {3, 5}}}, args_of({}), {}, -400, 400});
  cs.push_back({"aten.rad2deg.default", {{F, {3, 5}}}, args_of({}), {}, -7, 7, 1e-4});
  cs.push_back({"aten.round.decimals", {{F, {4, 5}}}, args_of({}), {{"decimals", 2}}, -30, 30});
  cs.push_back({"aten.round.decimals", {{F, {4, 5}}}, args_of({}), {{"decimals", -1}}, -300, 300});
  cs.push_back({"aten.sinc.default", {{F, {3, 5}}}, args_of({}), {}, -2, 2});
  cs.push_back({"aten.xlogy.Tensor", {{F, {3, 5}}, {F, {5}}}, args_of({}, 2), {}, 0, 3});
  cs.push_back({"aten.xlogy.Tensor", {{I64, {3, 5}}, {F, {3, 5}}}, args_of({}, 2), {}, 0, 3});  // zeros in x
  cs.push_back({"aten.xlogy.Scalar_Other", {{F, {3, 5}}}, args_of({2.5})});
  cs.push_back({"aten.special_xlog1py.default", {{F, {3, 5}}, {F, {3, 5}}}, args_of({}, 2), {}, 0, 3});
  cs.push_back({"aten.logaddexp.default", {{F, {3, 5}}, {F, {5}}}, args_of({}, 2), {}, -100, 100});
}

std::vector<OracleCase> cases() {
  std::vector<OracleCase> cs;
  // Binary ops over dtype pairs and broadcasts.
  for (const char* op : {"aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.div.Tensor", "aten.maximum.default",
                         "aten.minimum.default", "aten.eq.Tensor", "aten.lt.Tensor", "aten.ge.Tensor",
                         "aten.remainder.Tensor", "aten.floor_divide.default"}) {
    const bool divlike = std::string(op).find("div") != std::string::npos || std::string(op).find("remainder") != std::string::npos;
    const double lo = divlike ? 1 : -3;
    cs.push_back({op, {{F, {2, 3, 4}}, {F, {3, 1}}}, two(), {}, lo, 4});
    cs.push_back({op, {{I64, {4, 5}}, {I64, {5}}}, two(), {}, lo, 9});
    cs.push_back({op, {{I64, {6}}, {F, {6}}}, two(), {}, lo, 9});
    cs.push_back({op, {{I32, {2, 2}}, {I64, {2, 2}}}, two(), {}, lo, 9});
  }
  // Arithmetic on two bools stays bool in PyTorch: mul is and, add is or, maximum/minimum or/and.
  for (const char* op : {"aten.add.Tensor", "aten.mul.Tensor", "aten.maximum.default", "aten.minimum.default"})
    cs.push_back({op, {{B, {2, 3}}, {B, {3}}}, two(), {}, 0, 2});
  for (const char* op : {"aten.add.Scalar", "aten.mul.Scalar", "aten.div.Scalar", "aten.sub.Scalar", "aten.pow.Tensor_Scalar"}) {
    cs.push_back({op, {{F, {3, 4}}}, one({2.5}), {}, 0.5, 3});
    cs.push_back({op, {{I64, {3, 4}}}, one({3}), {}, 1, 5});
    cs.push_back({op, {{I64, {5}}}, one({0.5}), {}, 1, 5});
  }
  cs.push_back({"aten.add.Tensor", {{F, {4}}, {F, {4}}}, two(), {{"alpha", 3}}});
  cs.push_back({"aten.rsub.Scalar", {{F, {4}}}, one({1.0, 2.0})});
  cs.push_back({"aten.div.Tensor_mode", {{F, {8}}, {F, {8}}}, two(), {{"rounding_mode", "trunc"}}, -6, 6, 1e-4});
  cs.push_back({"aten.logical_and.default", {{B, {6}}, {B, {6}}}, two()});
  cs.push_back({"aten.where.self", {{B, {3, 1}}, {F, {3, 4}}, {I64, {4}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], n[1], n[2]}; }});
  // Unary / activations on floats and ints.
  for (const char* op : {"aten.exp.default", "aten.sigmoid.default", "aten.tanh.default", "aten.sqrt.default",
                         "aten.abs.default", "aten.neg.default", "aten.relu.default", "aten.sign.default",
                         "aten.log.default", "aten.rsqrt.default", "aten.sin.default", "aten.ceil.default"}) {
    const bool pos = std::string(op).find("sqrt") != std::string::npos || std::string(op).find("log") != std::string::npos;
    cs.push_back({op, {{F, {2, 7}}}, one(), {}, pos ? 0.1 : -3, 3, 1e-5});
    cs.push_back({op, {{I64, {5}}}, one(), {}, pos ? 1.0 : -3.0, 4, 1e-5});
  }
  cs.push_back({"aten.gelu.default", {{F, {3, 5}}}, one()});
  cs.push_back({"aten.gelu.default", {{F, {3, 5}}}, one(), {{"approximate", "tanh"}}});
  cs.push_back({"aten.hardswish.default", {{F, {16}}}, one(), {}, -5, 5});
  cs.push_back({"aten.hardsigmoid.default", {{F, {16}}}, one(), {}, -5, 5});
  cs.push_back({"aten.silu.default", {{F, {16}}}, one()});
  cs.push_back({"aten.leaky_relu.default", {{F, {16}}}, one({0.1})});
  cs.push_back({"aten.clamp.default", {{I64, {9}}}, one({-1, 2}), {}, -5, 5});
  cs.push_back({"aten.clamp.default", {{F, {9}}}, one({Arg(), 0.3})});
  cs.push_back({"aten.softplus.default", {{F, {9}}}, one({2.0, 1.0})});
  // Reductions, softmax, norms.
  cs.push_back({"aten.sum.dim_IntList", {{F, {3, 4, 5}}}, one({L{0, 2}, true})});
  cs.push_back({"aten.sum.dim_IntList", {{I32, {3, 4}}}, one({Arg(L{1})})});
  cs.push_back({"aten.sum.dim_IntList", {{B, {3, 4}}}, one({Arg(L{1})})});
  cs.push_back({"aten.mean.dim", {{F, {2, 3, 4}}}, one({Arg(L{-1})})});
  cs.push_back({"aten.amax.default", {{F, {2, 3, 4}}}, one({L{1}, true})});
  cs.push_back({"aten.argmax.default", {{F, {2, 3, 4}}}, one({})});
  cs.push_back({"aten.argmin.default", {{F, {2, 3, 4}}}, one({2, true})});
  cs.push_back({"aten.prod.dim_int", {{F, {3, 4}}}, one({1})});
  cs.push_back({"aten.var.correction", {{F, {4, 6}}}, one({Arg(L{1})}), {{"correction", 0}}});
  cs.push_back({"aten.cumsum.default", {{I32, {3, 4}}}, one({1})});
  cs.push_back({"aten._softmax.default", {{F, {2, 9}}}, one({-1, false})});
  cs.push_back({"aten._log_softmax.default", {{F, {4, 3}}}, one({0, false})});
  cs.push_back({"aten.group_norm.default", {{F, {2, 4, 3, 3}}, {F, {4}}, {F, {4}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 2, n[1], n[2], 1e-5}; }, {}, -3, 3, 1e-4});
  // Shapes and indexing.
  cs.push_back({"aten.expand.default", {{I64, {3, 1}}}, one({Arg(L{2, 3, 4})})});
  cs.push_back({"aten.permute.default", {{F, {2, 3, 4}}}, one({Arg(L{1, 2, 0})})});
  cs.push_back({"aten.slice.Tensor", {{F, {5, 6}}}, one({1, -5, -1, 2})});
  cs.push_back({"aten.select.int", {{F, {5, 6}}}, one({0, -2})});
  cs.push_back({"aten.squeeze.dim", {{F, {1, 3, 1, 2}}}, one({2})});
  cs.push_back({"aten.cat.default", {{F, {2, 3}}, {I64, {1, 3}}},
                [](const Nodes& n) { return std::vector<Arg>{L{n[0], n[1]}, 0}; }});
  cs.push_back({"aten.gather.default", {{F, {4, 5}}, {I64, {4, 2}}}, two({}), {}, 0, 4});
  cs.back().args = [](const Nodes& n) { return std::vector<Arg>{n[0], 1, n[1]}; };
  cs.push_back({"aten.constant_pad_nd.default", {{F, {2, 3, 3}}}, one({L{1, 2, 0, 1}, 0.5})});
  cs.push_back({"aten.upsample_bilinear2d.vec", {{F, {1, 2, 3, 4}}}, one({L{6, 7}, false, Arg()})});
  cs.push_back({"aten.upsample_bilinear2d.vec", {{F, {1, 2, 3, 4}}}, one({Arg(), true, L{2.0, 2.0}})});
  cs.push_back({"aten.upsample_nearest2d.vec", {{F, {1, 2, 3, 4}}}, one({L{5, 9}, Arg()})});
  // bicubic: sizes, scale factors (up and down), corners aligned, and the non-vec overload.
  cs.push_back({"aten.upsample_bicubic2d.vec", {{F, {2, 3, 7, 5}}}, one({L{11, 4}, false, Arg()}), {}, -3, 3, 1e-5});
  cs.push_back({"aten.upsample_bicubic2d.vec", {{F, {1, 2, 4, 6}}}, one({Arg(), false, L{1.7, 0.5}}), {}, -3, 3, 1e-5});
  cs.push_back({"aten.upsample_bicubic2d.vec", {{F, {1, 2, 4, 6}}}, one({L{9, 13}, true, Arg()}), {}, -3, 3, 1e-5});
  cs.push_back({"aten.upsample_bicubic2d.default", {{F, {1, 2, 5, 5}}}, one({L{10, 10}, false}), {}, -3, 3, 1e-5});
  cs.push_back({"aten.avg_pool2d.default", {{F, {1, 2, 5, 5}}}, one({L{3, 3}, L{2, 2}, L{1, 1}, true, false})});
  cs.push_back({"aten.max_pool2d.default", {{F, {1, 2, 5, 5}}}, one({L{3, 3}, L{2, 2}, L{1, 1}, L{1, 1}, true})});
  cs.push_back({"aten.adaptive_avg_pool2d.default", {{F, {1, 2, 7, 5}}}, one({Arg(L{3, 2})})});
  cs.push_back({"aten.convolution.default", {{F, {1, 4, 5, 5}}, {F, {4, 2, 3, 3}}},
                [](const Nodes& n) {
                  return std::vector<Arg>{n[0], n[1], Arg(), L{1, 1}, L{1, 1}, L{1, 1}, true, L{0, 0}, 2};
                }, {}, -1, 1, 1e-4});
  cs.push_back({"aten._to_copy.default", {{F, {7}}}, one(), {{"dtype", ScalarType::Int}}, -9, 9});
  cs.push_back({"aten.arange.start_step", {}, [](const Nodes&) { return std::vector<Arg>{0.5, 3.0, 0.25}; }});
  // Composite ops.
  cs.push_back({"aten.repeat.default", {{F, {2, 3}}}, one({Arg(L{2, 1, 2})})});
  cs.push_back({"aten.flip.default", {{F, {3, 4, 2}}}, one({Arg(L{0, -1})})});
  cs.push_back({"aten.triu.default", {{F, {2, 4, 5}}}, one({1})});
  cs.push_back({"aten.tril.default", {{I64, {5, 3}}}, one({-1})});
  cs.push_back({"aten.pixel_shuffle.default", {{F, {1, 8, 2, 3}}}, one({2})});
  cs.push_back({"aten.pixel_unshuffle.default", {{F, {2, 3, 4, 6}}}, one({2})});
  cs.push_back({"aten.channel_shuffle.default", {{F, {2, 6, 3, 2}}}, one({3})});
  cs.push_back({"aten.channel_shuffle.default", {{I64, {1, 8, 5}}}, one({2})});
  cs.push_back({"aten.atan2.default", {{F, {4, 5}}, {F, {5}}}, two()});
  cs.push_back({"aten.hypot.default", {{F, {3, 4}}, {F, {3, 4}}}, two()});
  cs.push_back({"aten.frac.default", {{F, {3, 5}}}, one(), {}, -9, 9});
  // index_add: repeated positions accumulate (indices drawn from [0, 3) over 5 slices).
  cs.push_back({"aten.index_add.default", {{F, {4, 3}}, {I64, {5}}, {F, {5, 3}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 0, n[1], n[2]}; }, {{"alpha", 0.5}}, -3, 3, 1e-5,
                {{-3, 3}, {0, 3}, {-3, 3}}});
  cs.push_back({"aten.index_add.default", {{F, {2, 6, 3}}, {I64, {4}}, {F, {2, 4, 3}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], 1, n[1], n[2]}; }, {}, -3, 3, 1e-5,
                {{-3, 3}, {0, 6}, {-3, 3}}});
  // scatter_reduce, every reduction, with and without self; indices in [0, 3) over 5 rows: repeats.
  for (const char* reduce : {"sum", "mean", "amax", "amin", "prod"})
    for (bool include_self : {true, false})
      cs.push_back({"aten.scatter_reduce.two", {{F, {4, 3}}, {I64, {5, 3}}, {F, {5, 3}}},
                    [=](const Nodes& n) { return std::vector<Arg>{n[0], 0, n[1], n[2], Arg(reduce)}; },
                    {{"include_self", include_self}}, -3, 3, 1e-5, {{-3, 3}, {0, 3}, {-3, 3}}});
  for (const char* reduce : {"amax", "amin", "prod"})  // integers, along dim 1
    cs.push_back({"aten.scatter_reduce.two", {{I64, {3, 4}}, {I64, {3, 6}}, {I64, {3, 6}}},
                  [=](const Nodes& n) { return std::vector<Arg>{n[0], 1, n[1], n[2], Arg(reduce)}; },
                  {{"include_self", false}}, -3, 3, 1e-5, {{-9, 9}, {0, 4}, {-9, 9}}});
  cs.push_back({"aten.var_mean.correction", {{F, {3, 5, 4}}}, one({L{1}}), {{"correction", 0}, {"keepdim", true}}});
  cs.push_back({"aten.std_mean.correction", {{F, {3, 5}}}, one({L{-1}})});
  cs.push_back({"aten.nan_to_num.default", {{F, {3, 4}}}, one({1.0, 5.0, -5.0})});
  cs.push_back({"aten.addcmul.default", {{F, {4}}, {F, {4}}, {F, {4}}},
                [](const Nodes& n) { return std::vector<Arg>{n[0], n[1], n[2]}; }, {{"value", 0.5}}});
  cs.push_back({"aten.lerp.Scalar", {{F, {4}}, {F, {4}}}, two({0.3})});
  cs.push_back({"aten.logsumexp.default", {{F, {3, 5}}}, one({Arg(L{1})})});
  cs.push_back({"aten.glu.default", {{F, {3, 6}}}, one({-1})});
  // einsum: attention's two contractions (subscripts spaced and upper-case, as MaxViT writes
  // them), an implicit output, a broadcast ellipsis, an outer product, a sum over a subscript
  // only one operand has, a full contraction to a scalar, and three operands.
  auto einsum = [](const char* equation, size_t operands) {
    return [=](const Nodes& n) {
      L l(n.begin(), n.begin() + static_cast<std::ptrdiff_t>(operands));
      return std::vector<Arg>{Arg(equation), l};
    };
  };
  cs.push_back({"aten.einsum.default", {{F, {2, 3, 4, 5}}, {F, {2, 3, 6, 5}}}, einsum("bhid,bhjd->bhij", 2)});
  cs.push_back({"aten.einsum.default", {{F, {2, 2, 3, 4, 6}}, {F, {2, 2, 3, 6, 5}}},
                einsum("B G H I J, B G H J D -> B G H I D", 2)});
  cs.push_back({"aten.einsum.default", {{F, {3, 4}}, {F, {4, 5}}}, einsum("ij,jk", 2)});
  cs.push_back({"aten.einsum.default", {{F, {2, 3, 4}}, {F, {4, 5}}}, einsum("...ij,...jk->...ik", 2)});
  cs.push_back({"aten.einsum.default", {{F, {2, 1, 3, 4}}, {F, {5, 4, 2}}}, einsum("...ij,...jk->...ik", 2)});
  cs.push_back({"aten.einsum.default", {{F, {3}}, {F, {4}}}, einsum("i,j->ij", 2)});
  cs.push_back({"aten.einsum.default", {{F, {2, 3, 4}}}, einsum("bij->ji", 1)});
  cs.push_back({"aten.einsum.default", {{F, {3, 4}}, {F, {5, 4}}}, einsum("ij,kj->", 2)});
  cs.push_back({"aten.einsum.default", {{F, {3, 4}}, {F, {3, 4, 2}}}, einsum("ij,ijk->ik", 2)});
  cs.push_back({"aten.einsum.default", {{F, {2, 3, 4}}, {F, {4, 5}}, {F, {5, 6}}}, einsum("abc,cd,de->abe", 3)});
  cs.push_back({"aten.einsum.default", {{F, {2, 4}}, {F, {3, 4, 5}}, {F, {2, 5}}}, einsum("bn,anm,bm->ba", 3)});
  // movedim (and moveaxis, which lowering renames to it); zero (tensor.zero_() made functional).
  cs.push_back({"aten.movedim.int", {{F, {2, 3, 4, 5}}}, one({1, -1})});
  cs.push_back({"aten.movedim.intlist", {{F, {2, 3, 4, 5}}}, one({L{0, 1}, L{3, 0}})});
  cs.push_back({"aten.zero.default", {{F, {3, 4}}}, one()});
  cs.back().reference = "aten.zeros_like.default";
  // grid_sample: bilinear, nearest and bicubic, each padding mode, both corner conventions; the grid
  // reaches past the image ([-1.3, 1.3]) so that out-of-range taps, borders and reflections count.
  auto sampler = [](int64_t mode, int64_t padding, bool align) {
    return [=](const Nodes& n) { return std::vector<Arg>{n[0], n[1], mode, padding, align}; };
  };
  for (int64_t mode : {0, 1, 2})  // bilinear, nearest, bicubic
    for (int64_t padding : {0, 1, 2})
      for (bool align : {false, true})
        cs.push_back({"aten.grid_sampler_2d.default", {{F, {2, 3, 5, 7}}, {F, {2, 4, 6, 2}}}, sampler(mode, padding, align),
                      {}, -3, 3, 1e-5, {{-3, 3}, {-1.3, 1.3}}});
  cs.push_back({"aten.grid_sampler.default", {{F, {1, 2, 4, 4}}, {F, {1, 3, 3, 2}}}, sampler(0, 0, false), {}, -3, 3,
                1e-5, {{-3, 3}, {-1, 1}}});
  // masked_select: a data-dependent count of elements; masks broadcast against the input and back.
  cs.push_back({"aten.masked_select.default", {{F, {3, 4}}, {B, {3, 4}}}, two(), {}, -3, 3, 1e-5, {{-3, 3}, {0, 2}}});
  cs.push_back({"aten.masked_select.default", {{F, {2, 3, 5}}, {B, {3, 1}}}, two(), {}, -3, 3, 1e-5, {{-3, 3}, {0, 2}}});
  cs.push_back({"aten.masked_select.default", {{I64, {4}}, {B, {2, 1}}}, two(), {}, -3, 3, 1e-5, {{-9, 9}, {0, 2}}});
  // embedding_bag (what F.embedding_bag and nn.EmbeddingBag call): bags cut by offsets, sum / mean /
  // max, an empty bag, the last offset included, per-sample weights (sum only).
  auto bag = [](int64_t mode, bool last, bool weighted) {
    return [=](const Nodes& n) {
      return std::vector<Arg>{n[0], n[1], n[2], false, mode, false, weighted ? Arg(n[3]) : Arg(), last};
    };
  };
  // (include_last_offset needs its last offset equal to the number of indices, which random offsets
  // are not; PyTorch writes past its output otherwise: tests/python/test_embedding_bag.py covers it.)
  for (int64_t mode : {0, 1, 2})
    cs.push_back({"aten._embedding_bag.default", {{F, {10, 4}}, {I64, {7}}, {I64, {3}}}, bag(mode, false, false), {},
                  -3, 3, 1e-5, {{-3, 3}, {0, 9.9}, {0, 0}}});  // offsets all 0: two empty bags then one of 7
  cs.push_back({"aten._embedding_bag.default", {{F, {10, 4}}, {I64, {7}}, {I64, {3}}, {F, {7}}}, bag(0, false, true),
                {}, -3, 3, 1e-5, {{-3, 3}, {0, 9.9}, {0, 0}, {-1, 1}}});
  // Issue 14: the attention-mask ops transformers' GPT-2 / Llama exports hold.
  mask_op_cases(cs);
  breadth_cases(cs);
  structure_cases(cs);
  return cs;
}

TEST(Oracle, ConvertersMatchPyTorch) {
  register_builtin_converters();
  for (const OracleCase& oc : cases())
    for (uint32_t seed : {1u, 2u}) {
      try {
        run_case(oc, seed);
      } catch (const std::exception& e) {
        ADD_FAILURE() << oc.target << ": " << e.what();
      }
    }
}

// The coverage gate (ggml's test-backend-ops in spirit): every registered converter target has a
// case above, or a line in tests/conversion/untested_converters.txt saying why not (symbolic-size
// arithmetic, uninitialized factories, ops this PyTorch does not have). A converter added without
// a case fails here; so does an allow-list line whose target has a case now or is gone.
TEST(Oracle, EveryConverterTargetHasACaseOrAReason) {
  register_builtin_converters();
  std::set<std::string> with_case;
  for (const OracleCase& oc : cases()) with_case.insert(oc.target);
  std::map<std::string, std::string> reasons;
  std::ifstream list(std::string(KILN_TEST_DATA) + "/../conversion/untested_converters.txt");
  ASSERT_TRUE(list) << "tests/conversion/untested_converters.txt is missing";
  for (std::string line; std::getline(list, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.find_first_of(" \t");
    const std::string target = line.substr(0, space);
    const size_t text = space == std::string::npos ? std::string::npos : line.find_first_not_of(" \t", space);
    EXPECT_NE(text, std::string::npos) << target << ": an allow-list line needs its reason";
    reasons[target] = text == std::string::npos ? "" : line.substr(text);
  }
  std::set<std::string> registered;
  for (const std::string& t : ConverterRegistry::global().targets()) {
    registered.insert(t);
    EXPECT_TRUE(with_case.count(t) || reasons.count(t))
        << t << ": a registered converter with no oracle case and no reason in untested_converters.txt";
  }
  for (const auto& [target, reason] : reasons) {
    EXPECT_TRUE(registered.count(target)) << target << ": listed in untested_converters.txt but not registered";
    EXPECT_FALSE(with_case.count(target)) << target << ": has an oracle case now; take it off the allow-list";
  }
  std::cerr << "[coverage] " << registered.size() << " converter targets: " << with_case.size()
            << " with oracle cases, " << reasons.size() << " on the reasoned allow-list\n";
}
#endif

}  // namespace
}  // namespace kiln::conversion
