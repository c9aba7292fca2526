// fold_movement: permutes, reshapes, slices, pads and concatenations read through index arithmetic
// (gathered loads) compute exactly what the copies computed. Each network is built twice, as
// written (no pass) and with the pass forced on the CPU backend (whose interpreter evaluates the
// same index nodes the CUDA kernels compile), and on the GPU where there is one.
#include <gtest/gtest.h>

#include <functional>
#include <array>
#include <numeric>
#include <random>

#include "engine/backend.h"
#include "engine/builder.h"
#include "engine/index_expr.h"
#include "engine/network_internal.h"
#include "filecheck.h"
#include "runtime_test_util.h"

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;

size_t gathering_layers(const Network& net) {
  size_t n = 0;
  for (const Layer* l : net.layers())
    if (auto* f = l->as<FusedPointwiseParams>(); f && f->gather) ++n;
  return n;
}

Tensor* permute(Network& net, const std::string& name, Tensor* x, std::vector<int64_t> perm) {
  return detail::add_permute(net, name, x, std::move(perm));
}
Tensor* reshape(Network& net, const std::string& name, Tensor* x, std::vector<int64_t> dims) {
  ShuffleParams p;
  Shape s;
  for (int64_t d : dims) s.push_back(DimExpr(d));
  p.reshape = s;
  return net.add_shuffle(name, x, p)->output();
}
Tensor* slice(Network& net, const std::string& name, Tensor* x, size_t dim, int64_t start, int64_t size, int64_t stride = 1) {
  SliceParams p;
  for (size_t d = 0; d < x->rank(); ++d) {
    const bool here = d == dim;
    p.start.push_back(DimExpr(here ? start : 0));
    p.size.push_back(here ? DimExpr(size) : x->shape()[d]);
    p.stride.push_back(DimExpr(here ? stride : 1));
  }
  return net.add_slice(name, x, p)->output();
}
// torch.roll along one dim: the last `shift` elements first.
Tensor* roll(Network& net, const std::string& name, Tensor* x, size_t dim, int64_t shift) {
  const int64_t n = *x->shape()[dim].constant();
  Tensor* tail = slice(net, name + "_tail", x, dim, n - shift, shift);
  Tensor* head = slice(net, name + "_head", x, dim, 0, n - shift);
  return net.add_concat(name, {tail, head}, int64_t(dim))->output();
}
Tensor* pad(Network& net, const std::string& name, Tensor* x, std::vector<int64_t> pre, std::vector<int64_t> post,
            double value) {
  PadParams p;
  p.pre = std::move(pre);
  p.post = std::move(post);
  p.value = value;
  return net.add_pad(name, x, p)->output();
}
Tensor* constant(Network& net, const std::string& name, std::vector<int64_t> dims, uint32_t seed) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return net.add_constant(name, weights(dims, random_floats(size_t(n), seed)))->output();
}

using MakeNet = std::function<Network()>;

// Runs `make` as written and folded (CPU; and CUDA where there is a GPU); returns how many
// gathering layers the folded CPU plan has.
size_t expect_same(const MakeNet& make, const std::vector<int64_t>& in_dims, size_t min_gathering, uint32_t seed = 7,
                   bool on_gpu = true) {
  const size_t n = size_t(std::accumulate(in_dims.begin(), in_dims.end(), int64_t{1}, std::multiplies<>()));
  std::map<std::string, HostTensor> inputs{{"x", {in_dims, random_floats(n, seed)}}};
  const std::vector<HostTensor> want = run_plan(build(make(), no_opt()), inputs);

  BuilderConfig folded = no_opt();
  folded.fold_movement = true;
  Plan plan = build(make(), folded);
  EXPECT_GE(gathering_layers(plan.network()), min_gathering) << plan.network().str();
  const size_t gathering = gathering_layers(plan.network());
  const std::vector<HostTensor> got = run_plan(plan, inputs);
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) expect_close(got[i], want[i], 0);

  if (!on_gpu || !cuda_available()) return gathering;
  for (bool fused : {false, true}) {
    BuilderConfig gpu = fused ? BuilderConfig{} : no_opt();
    gpu.device = DeviceKind::kCUDA;
    gpu.fold_movement = true;
    Plan p = build(make(), gpu);
    EXPECT_GE(gathering_layers(p.network()), min_gathering) << p.network().str();
    const std::vector<HostTensor> g = run_plan(p, inputs, std::shared_ptr<Backend>(make_cuda_backend()));
    for (size_t i = 0; i < g.size(); ++i) expect_close(g[i], want[i], 1e-5f);
  }
  return gathering;
}

TEST(FoldMovement, PermuteThenAddReadsThroughThePermute) {
  for (std::vector<int64_t> perm : {std::vector<int64_t>{0, 2, 3, 1}, {3, 1, 0, 2}, {0, 1, 3, 2}}) {
    auto make = [&] {
      Network net;
      Tensor* x = net.add_input("x", DataType::kFloat32, {2, 3, 5, 8});
      Tensor* p = permute(net, "p", x, perm);
      std::vector<int64_t> bias_dims(4, 1);
      bias_dims[3] = *p->shape()[3].constant();
      Tensor* y = net.add_elementwise("add", p, constant(net, "b", bias_dims, 3), BinaryOp::kAdd)->output();
      net.mark_output(y, "y");
      return net;
    };
    expect_same(make, {2, 3, 5, 8}, 1);
  }
}

TEST(FoldMovement, RollPadAndCropBecomeBoundsNotCopies) {
  auto make = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {2, 7, 9, 8});
    Tensor* r = roll(net, "roll_h", x, 1, 3);
    r = roll(net, "roll_w", r, 2, 5);
    Tensor* p = pad(net, "pad", r, {0, 1, 0, 0}, {0, 2, 3, 0}, 1.5);
    Tensor* c = slice(net, "crop", p, 2, 1, 10);
    net.mark_output(net.add_activation("relu", c, ActivationOp::kRelu)->output(), "y");
    return net;
  };
  expect_same(make, {2, 7, 9, 8}, 1);
  // As written: each roll a pair of slices and a concatenation, then the pad and the crop.
  EXPECT_TRUE(filecheck(build(make(), no_opt()).network().str(), R"(
    CHECK-COUNT-2: = Slice[
    CHECK-NEXT:    %roll_h: f32[2, 7, 9, 8] = Concat[axis=1](%roll_h_tail, %roll_h_head)
    CHECK-COUNT-2: = Slice[
    CHECK-NEXT:    %roll_w: f32[2, 7, 9, 8] = Concat[axis=2](%roll_w_tail, %roll_w_head)
    CHECK-NEXT:    %pad: f32[2, 10, 12, 8] = Pad[constant pre=0,1,0,0 post=0,2,3,0 value=1.5](%roll_w)
    CHECK-NEXT:    %crop: f32[2, 10, 10, 8] = Slice[start=[0, 0, 1, 0] size=[2, 10, 10, 8]
    CHECK-NEXT:    %relu: f32[2, 10, 10, 8] = Activation[relu](%crop)
  )"));
  // Folded: the relu reads x itself, the rolls, the pad and the crop its index arithmetic.
  BuilderConfig folded = no_opt();
  folded.fold_movement = true;
  Plan plan = build(make(), folded);
  EXPECT_TRUE(filecheck(plan.network().str(), R"(
    CHECK:      input %x: f32[2, 7, 9, 8]
    CHECK-NEXT: %gather_relu: f32[2, 10, 10, 8] = FusedPointwise[1 instrs, gathered loads (
    CHECK-SAME: index nodes)](%x)
    CHECK-NEXT: output y = %gather_relu
  )"));
}

// Swin's shifted-window attention around its matmul: pad to whole windows, roll, partition into
// windows (reshape, permute, reshape) before; merge windows, roll back, crop and add the residual
// after.
Network shifted_windows(int64_t b, int64_t h, int64_t w, int64_t c, int64_t win, int64_t shift) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {b, h, w, c});
  const int64_t hp = (h + win - 1) / win * win, wp = (w + win - 1) / win * win;
  Tensor* t = pad(net, "pad", x, {0, 0, 0, 0}, {0, hp - h, wp - w, 0}, 0.0);
  t = roll(net, "shift_h", t, 1, hp - shift);
  t = roll(net, "shift_w", t, 2, wp - shift);
  t = reshape(net, "split", t, {b, hp / win, win, wp / win, win, c});
  t = permute(net, "windows", t, {0, 1, 3, 2, 4, 5});
  t = reshape(net, "tokens", t, {b * (hp / win) * (wp / win), win * win, c});
  t = net.add_matmul("proj", t, constant(net, "w", {c, c}, 5))->output();
  t = reshape(net, "unsplit", t, {b, hp / win, wp / win, win, win, c});
  t = permute(net, "merge", t, {0, 1, 3, 2, 4, 5});
  t = reshape(net, "image", t, {b, hp, wp, c});
  t = roll(net, "unshift_h", t, 1, shift);
  t = roll(net, "unshift_w", t, 2, shift);
  t = slice(net, "crop_h", t, 1, 0, h);
  t = slice(net, "crop_w", t, 2, 0, w);
  net.mark_output(net.add_elementwise("residual", x, t, BinaryOp::kAdd)->output(), "y");
  return net;
}

TEST(FoldMovement, ShiftedWindowsFoldIntoOneCopyBeforeTheMatmulAndTheResidualAfter) {
  for (auto [h, w, win, shift] : {std::array<int64_t, 4>{14, 14, 7, 3}, {9, 12, 4, 2}, {8, 8, 8, 0}, {5, 7, 3, 1}}) {
    auto make = [&] { return shifted_windows(2, h, w, 16, win, shift); };
    expect_same(make, {2, h, w, 16}, 2);
    BuilderConfig folded = no_opt();
    folded.fold_movement = true;
    Plan plan = build(make(), folded);
    // The pad, rolls and window partition are one gathering copy of x (its reshape to tokens an
    // alias); the merge, reverse rolls and crops are the residual add's index arithmetic.
    EXPECT_TRUE(filecheck(plan.network().str(), R"(
      CHECK:      input %x
      CHECK-NEXT: %w:
      CHECK-NEXT: %gather_windows:
      CHECK-SAME: = FusedPointwise[0 instrs, gathered loads (
      CHECK-SAME: index nodes)](%x)
      CHECK-NEXT: %tokens:
      CHECK-SAME: = Shuffle[reshape=
      CHECK-SAME:](%gather_windows)
      CHECK-NEXT: %proj:
      CHECK-SAME: = MatMul[a b](%tokens, %w)
      CHECK-NEXT: %gather_residual:
      CHECK-SAME: = FusedPointwise[1 instrs, gathered loads (
      CHECK-SAME: index nodes)](%x, %proj)
      CHECK-NEXT: output y = %gather_residual
    )"));
  }
}

// transformers' repeat_kv (grouped-query attention): k [b, kv, s, d] -> unsqueeze -> expand to
// [b, kv, rep, s, d] (x + zeros) -> reshape [b, kv*rep, s, d]; the zeros are never written.
TEST(FoldMovement, ExpandedHeadsReadTheirSourceWithoutZeros) {
  auto make = [] {
    Network net;
    Tensor* x = net.add_input("x", DataType::kFloat32, {2, 3, 5, 8});
    Tensor* k = permute(net, "heads", x, {0, 2, 1, 3});  // [2, 5, 3, 8]
    k = reshape(net, "unsqueeze", k, {2, 5, 1, 3, 8});
    FillParams f;
    f.dims = {DimExpr(2), DimExpr(5), DimExpr(4), DimExpr(3), DimExpr(8)};
    k = net.add_elementwise("expand", k, net.add_fill("zeros", f)->output(), BinaryOp::kAdd)->output();
    k = reshape(net, "merge", k, {2, 20, 3, 8});
    net.mark_output(net.add_matmul("scores", k, k, false, true)->output(), "y");
    return net;
  };
  expect_same(make, {2, 3, 5, 8}, 1);
  // As written (the fill folded to a constant): a permute, and an add of zeros to expand.
  EXPECT_TRUE(filecheck(build(make(), no_opt()).network().str(), R"(
    CHECK:      %heads: f32[2, 5, 3, 8] = Shuffle[perm=0,2,1,3](%x)
    CHECK-NEXT: %unsqueeze: f32[2, 5, 1, 3, 8] = Shuffle[reshape=[2, 5, 1, 3, 8]](%heads)
    CHECK-NEXT: %zeros_1: f32[2, 5, 4, 3, 8] = Constant[f32[2,5,4,3,8]]()
    CHECK-NEXT: %expand: f32[2, 5, 4, 3, 8] = Elementwise[add](%unsqueeze, %zeros_1)
    CHECK-NEXT: %merge: f32[2, 20, 3, 8] = Shuffle[reshape=[2, 20, 3, 8]](%expand)
  )"));
  // Folded: one gathering copy of x in front of the matmul (which cannot take gathered loads).
  BuilderConfig folded = no_opt();
  folded.fold_movement = true;
  Plan plan = build(make(), folded);
  EXPECT_TRUE(filecheck(plan.network().str(), R"(
    CHECK:      input %x: f32[2, 3, 5, 8]
    CHECK-NEXT: %gather_expand: f32[2, 5, 4, 3, 8] = FusedPointwise[0 instrs, gathered loads (
    CHECK-SAME: index nodes)](%x)
    CHECK-NEXT: %merge: f32[2, 20, 3, 8] = Shuffle[reshape=[2, 20, 3, 8]](%gather_expand)
    CHECK-NEXT: %scores: f32[2, 20, 3, 3] = MatMul[a bT](%merge, %merge)
    CHECK-NEXT: output y = %scores
  )"));
}

// Random chains of movement ops ending in a pointwise op or a network output: the index
// arithmetic's simplifications (index_expr.h) on shapes no model happens to have.
TEST(FoldMovement, RandomChainsMatchTheCopies) {
  std::mt19937 rng(12345);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  int folded = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const size_t rank = size_t(pick(1, 4));
    std::vector<int64_t> in_dims;
    for (size_t d = 0; d < rank; ++d) in_dims.push_back(pick(1, 6));
    std::vector<std::pair<int, std::vector<int64_t>>> ops;  // (kind, random draws)
    const int n_ops = int(pick(1, 5));
    for (int k = 0; k < n_ops; ++k) {
      std::vector<int64_t> draws;
      for (int i = 0; i < 12; ++i) draws.push_back(pick(0, 1 << 20));
      ops.push_back({int(pick(0, 7)), draws});
    }
    const bool end_pointwise = pick(0, 1);
    auto make = [&] {
      Network net;
      Tensor* t = net.add_input("x", DataType::kFloat32, Shape(in_dims.begin(), in_dims.end()));
      int i = 0;
      for (const auto& [kind, r] : ops) {
        const std::string name = "op" + std::to_string(i++);
        const std::vector<int64_t> dims = *detail::static_dims(t);
        const size_t rk = dims.size();
        const size_t d = size_t(r[0] % int64_t(rk));
        switch (kind) {
          case 0: {  // permute
            std::vector<int64_t> perm(rk);
            std::iota(perm.begin(), perm.end(), 0);
            std::shuffle(perm.begin(), perm.end(), std::mt19937(uint32_t(r[1])));
            t = permute(net, name, t, perm);
            break;
          }
          case 1: {  // reshape: split a dim in two, or merge two neighbours
            std::vector<int64_t> nd = dims;
            if (r[1] % 2 == 0 && rk < 6) {
              std::vector<int64_t> f;
              for (int64_t q = 1; q <= dims[d]; ++q)
                if (dims[d] % q == 0) f.push_back(q);
              const int64_t q = f[size_t(r[2]) % f.size()];
              nd[d] = q;
              nd.insert(nd.begin() + long(d) + 1, dims[d] / q);
            } else if (rk >= 2) {
              const size_t e = std::min(d, rk - 2);
              nd[e] = dims[e] * dims[e + 1];
              nd.erase(nd.begin() + long(e) + 1);
            }
            t = reshape(net, name, t, nd);
            break;
          }
          case 2: {  // slice with a stride (negative sometimes)
            const int64_t n = dims[d];
            const int64_t stride = (r[1] % 3 + 1) * (r[2] % 4 == 0 ? -1 : 1);
            const int64_t start = stride > 0 ? r[3] % n : n - 1 - r[3] % n;
            const int64_t room = stride > 0 ? (n - start + stride - 1) / stride : start / -stride + 1;
            t = slice(net, name, t, d, start, 1 + r[4] % room, stride);
            break;
          }
          case 3: {  // pad (a negative side crops)
            std::vector<int64_t> pre(rk, 0), post(rk, 0);
            pre[d] = r[1] % 4 - (dims[d] > 1 ? r[2] % 2 : 0);
            post[d] = r[3] % 3;
            t = pad(net, name, t, pre, post, double(r[4] % 5) - 2);
            break;
          }
          case 4:  // roll
            if (dims[d] > 1) t = roll(net, name, t, d, 1 + r[1] % (dims[d] - 1));
            break;
          case 6: {  // gather by a constant index: a roll, a flip, or a random pick (many runs)
            const int64_t n = dims[d];
            std::vector<int64_t> idx(static_cast<size_t>(n), 0);
            std::iota(idx.begin(), idx.end(), 0);
            if (r[1] % 3 == 0) std::rotate(idx.begin(), idx.begin() + r[2] % n, idx.end());
            else if (r[1] % 3 == 1) std::reverse(idx.begin(), idx.end());
            else for (int64_t& v : idx) v = r[3 + (&v - idx.data()) % 8] % n;
            Tensor* ix = net.add_constant(name + "_idx", Weights::copy_of(DataType::kInt64, {n}, idx.data()))->output();
            t = net.add_gather(name, t, ix, GatherMode::kAxis, int64_t(d))->output();
            break;
          }
          case 7: {  // expand a size-1 dim (x + zeros), after making one where there is none
            if (dims[d] != 1) {
              std::vector<int64_t> nd = dims;
              nd.insert(nd.begin() + long(d), 1);
              t = reshape(net, name + "_unsq", t, nd);
            }
            std::vector<int64_t> big = *detail::static_dims(t);
            big[d] = 1 + r[1] % 3;
            FillParams f;
            for (int64_t v : big) f.dims.push_back(DimExpr(v));
            t = net.add_elementwise(name, t, net.add_fill(name + "_zeros", f)->output(), BinaryOp::kAdd)->output();
            break;
          }
          default: {  // concat with a slice of itself
            Tensor* part = slice(net, name + "_part", t, d, 0, 1 + r[1] % dims[d]);
            t = net.add_concat(name, r[2] % 2 ? std::vector<Tensor*>{t, part} : std::vector<Tensor*>{part, t},
                               int64_t(d))->output();
          }
        }
      }
      if (end_pointwise) t = net.add_activation("out", t, ActivationOp::kRelu)->output();
      net.mark_output(t, "y");
      return net;
    };
    SCOPED_TRACE("trial " + std::to_string(trial));
    // Every 16th on the GPU too: each CUDA plan compiles its kernels with NVRTC (~0.3 s).
    folded += expect_same(make, in_dims, 0, uint32_t(trial), trial % 16 == 0) > 0;
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(folded, 200) << "most chains should fold";
}

TEST(FoldMovement, GatheredLoadsSurviveAPlanRoundTrip) {
  BuilderConfig folded = no_opt();
  folded.fold_movement = true;
  Plan plan = build(shifted_windows(1, 9, 12, 8, 4, 2), folded);
  ASSERT_TRUE(filecheck(plan.network().str(), R"(
    CHECK-COUNT-2: gathered loads
    CHECK-NOT:     gathered loads
  )"));
  const std::vector<uint8_t> bytes = plan.serialize();
  Plan loaded = Plan::deserialize(bytes.data(), bytes.size());
  EXPECT_EQ(loaded.network().str(), plan.network().str());
  std::map<std::string, HostTensor> inputs{{"x", {{1, 9, 12, 8}, random_floats(9 * 12 * 8, 3)}}};
  expect_close(run_plan(loaded, inputs)[0], run_plan(plan, inputs)[0], 0);
}

// The generated gathering kernels compile (NVRTC needs no GPU): fp16 and fp32, with and without
// groups of 8 along the innermost dim.
TEST(FoldMovement, GatheringKernelsCompileForHopper) {
  const std::vector<int> archs = cuda_supported_archs();
  if (std::find(archs.begin(), archs.end(), 90) == archs.end()) GTEST_SKIP() << "no NVRTC for sm_90 in this build";
  for (int64_t c : {16, 6}) {
    for (Precision p : {Precision::kFP32, Precision::kFP16}) {
      BuilderConfig cfg;
      cfg.device = DeviceKind::kCUDA;
      cfg.cuda_arch = 90;
      cfg.precision = p;
      Plan plan = build(shifted_windows(2, 9, 12, c, 4, 2), cfg);
      EXPECT_GE(gathering_layers(plan.network()), 2u) << plan.network().str();
    }
  }
}

// The loader's checks: a plan's index nodes may only read earlier nodes and divide by positives.
TEST(FoldMovement, MalformedGatheredLoadsAreRefused) {
  GatherLoads g;
  g.out_dims = {4};
  g.nodes = {{IndexNode::Op::kCoord, -1, -1, 0}, {IndexNode::Op::kFloorDiv, 0, -1, 0}};
  g.registers = {{LoadPiece{0, 0, 0, {}}}};
  EXPECT_NE(index_expr::check(g, {DataType::kFloat32}).find("divides by 0"), std::string::npos);
  g.nodes[1] = {IndexNode::Op::kAdd, 0, 1, 0};
  EXPECT_NE(index_expr::check(g, {DataType::kFloat32}).find("not before it"), std::string::npos);
  g.nodes.pop_back();
  g.registers = {{LoadPiece{3, 0, 0, {}}}};
  EXPECT_NE(index_expr::check(g, {DataType::kFloat32}).find("reads input 3"), std::string::npos);
  g.registers = {{LoadPiece{0, 0, 0, {}}}};
  EXPECT_EQ(index_expr::check(g, {DataType::kFloat32}), "");
}

}  // namespace
}  // namespace kiln::engine
