// Each lowering pass alone, on small hand-built graphs: what it changed, and that the graph still
// verifies.
#include <gtest/gtest.h>

#include <limits>
#include <sstream>

#include "filecheck.h"
#include "ir/schema.h"
#include "lowering/passes.h"

namespace kiln::lowering {
namespace {

using ir::Argument;
using ir::Node;
using ir::NodeKind;

ir::ValueMeta tensor(std::vector<ir::SymInt> sizes, ir::ScalarType dt = ir::ScalarType::Float) {
  ir::TensorMeta m;
  m.dtype = dt;
  m.sizes = std::move(sizes);
  return ir::ValueMeta::of_tensor(m);
}

struct G {
  ir::ExportedProgram p;
  Node* input(const std::string& name, std::vector<ir::SymInt> sizes) {
    Node* n = p.graph.create(NodeKind::Placeholder, name, name);
    n->meta = tensor(std::move(sizes));
    return n;
  }
  Node* call(const std::string& name, const std::string& target, std::vector<Argument> args,
             ir::ValueMeta meta, std::vector<std::pair<std::string, Argument>> kwargs = {}) {
    Node* n = p.graph.create(NodeKind::CallFunction, name, target, std::move(args), std::move(kwargs));
    n->meta = std::move(meta);
    return n;
  }
  Node* weight(const std::string& name, std::vector<int64_t> dims) {
    auto buf = std::make_shared<std::vector<float>>();
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    for (int64_t i = 0; i < n; ++i) buf->push_back(static_cast<float>(i));
    auto st = std::make_shared<ir::Storage>();
    st->data = reinterpret_cast<const uint8_t*>(buf->data());
    st->size = buf->size() * 4;
    st->owner = buf;
    ir::Weight w;
    w.name = name;
    w.meta = tensor({dims.begin(), dims.end()}).tensor;
    std::vector<ir::SymInt> strides(dims.size(), 1);
    for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1].value * dims[i + 1];
    w.meta.strides = strides;
    w.storage = st;
    p.weights[name] = w;
    Node* g = p.graph.create(NodeKind::GetAttr, name, name);
    g->meta = ir::ValueMeta::of_tensor(w.meta);
    return g;
  }
  void output(std::vector<Node*> outs) {
    Argument::List l;
    for (Node* o : outs) l.push_back(o);
    p.graph.create(NodeKind::Output, "output", "output", {Argument(l)});
    p.graph.verify();
  }
};

TEST(CanonicalizeAliases, NumpySpellingsBecomeTheOpsTheyAre) {
  G g;
  Node* x = g.input("x", {2, 3, 4});
  Node* s = g.call("swap", "aten.swapaxes.default", {x}, tensor({4, 3, 2}), {{"axis0", int64_t{0}}, {"axis1", int64_t{2}}});
  Node* c = g.call("clip", "aten.clip.default", {s, -1.0, 1.0}, tensor({4, 3, 2}));
  Node* m = g.call("mul_", "aten.multiply_.Tensor", {c, c}, tensor({4, 3, 2}));
  Node* mv = g.call("move", "aten.moveaxis.int", {m, 0, -1}, tensor({3, 2, 4}));
  Node* d = g.call("dunder", "aten.__iand__.Tensor", {mv, mv}, tensor({3, 2, 4}));  // not an alias
  g.output({d});
  EXPECT_EQ(canonicalize_aliases(g.p), 4u);
  g.p.graph.verify();
  // swapaxes' axis0/axis1 are transpose's dim0/dim1; in place stays in place (for
  // inplace_to_functional); a dunder is no alias.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK:      %swap : call_function[target=aten.transpose.int](args = (%x,), kwargs = {dim0: 0, dim1: 2})
    CHECK-NEXT: %clip : call_function[target=aten.clamp.default](args = (%swap, -1.0, 1.0), kwargs = {})
    CHECK-NEXT: %mul_ : call_function[target=aten.mul_.Tensor](args = (%clip, %clip), kwargs = {})
    CHECK-NEXT: %move : call_function[target=aten.movedim.int](args = (%mul_, 0, -1), kwargs = {})
    CHECK-NEXT: %dunder : call_function[target=aten.__iand__.Tensor](args = (%move, %move), kwargs = {})
  )"));
}

TEST(RemoveNoops, DropsIdentitiesAndAsserts) {
  G g;
  Node* x = g.input("x", {2, 3});
  Node* cl = g.call("clone", "aten.clone.default", {x}, tensor({2, 3}));
  Node* dr = g.call("dropout", "aten.dropout.default", {cl, 0.1, false}, tensor({2, 3}));
  Node* dt = g.call("dropout_1", "aten.dropout.default", {dr, 0.1, true}, tensor({2, 3}));  // training: kept
  Node* r = g.call("relu", "aten.relu.default", {dt}, tensor({2, 3}));
  g.call("assert", "aten._assert_tensor_metadata.default", {r}, ir::ValueMeta{});
  g.output({r});
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK:      %clone : call_function[target=aten.clone.default](args = (%x,), kwargs = {})
    CHECK-NEXT: %dropout : call_function[target=aten.dropout.default](args = (%clone, 0.1, False), kwargs = {})
    CHECK-NEXT: %dropout_1 : call_function[target=aten.dropout.default](args = (%dropout, 0.1, True), kwargs = {})
    CHECK-NEXT: %relu :
    CHECK-NEXT: %assert : call_function[target=aten._assert_tensor_metadata.default](args = (%relu,), kwargs = {})
  )"));
  EXPECT_EQ(remove_noops(g.p), 3u);
  g.p.graph.verify();
  // The clone, the eval dropout and the assert are gone; the training dropout stays.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK:      graph():
    CHECK-NEXT: %x : [num_users=1] = placeholder[target=x]
    CHECK-NEXT: %dropout_1 : call_function[target=aten.dropout.default](args = (%x, 0.1, True), kwargs = {})
    CHECK-NEXT: %relu : call_function[target=aten.relu.default](args = (%dropout_1,), kwargs = {})
    CHECK-NEXT: return (%relu,)
  )"));
}

TEST(InplaceToFunctional, FreshIntermediateBecomesFunctional) {
  G g;
  Node* x = g.input("x", {4});
  Node* r = g.call("relu", "aten.relu.default", {x}, tensor({4}));
  Node* a = g.call("add_", "aten.add_.Tensor", {r, x}, tensor({4}));
  Node* m = g.call("mul", "aten.mul.Tensor", {r, 2.0}, tensor({4}));  // reads the mutated r
  Node* h = g.call("hardswish_", "aten.hardswish_.default", {x}, tensor({4}));  // mutates a user input: kept
  g.output({a, m, h});
  EXPECT_EQ(inplace_to_functional(g.p), 1u);
  g.p.graph.verify();
  // Later readers of relu see the add's result; the hardswish mutating a user input stays in place.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK:      %add_ : call_function[target=aten.add.Tensor](args = (%relu, %x), kwargs = {})
    CHECK-NEXT: %mul : call_function[target=aten.mul.Tensor](args = (%add_, 2.0), kwargs = {})
    CHECK-NEXT: %hardswish_ : call_function[target=aten.hardswish_.default](args = (%x,), kwargs = {})
  )"));
}

TEST(RunPasses, MutatedCloneOfAWeightBecomesAScatterNotAWeightMutation) {
  // torchvision's Swin v2: qkv_bias.clone(); bias[n:2n].zero_(); linear(x, w, bias).
  G g;
  Node* x = g.input("x", {2, 6});
  Node* w = g.weight("w", {6});
  Node* c = g.call("clone", "aten.clone.default", {w}, tensor({6}));
  Node* s = g.call("slice", "aten.slice.Tensor", {c, int64_t{0}, int64_t{2}, int64_t{4}}, tensor({2}));
  g.call("zero_", "aten.zero_.default", {s}, tensor({2}));
  Node* y = g.call("add", "aten.add.Tensor", {x, c}, tensor({2, 6}));
  g.output({y});
  run_passes(g.p);
  // The clone is gone (a copy no one mutates now), the zeroing is functional, and the add reads
  // the weight with the zeros scattered in: the weight itself is never written.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK-NOT:  aten.clone.default
    CHECK-NOT:  aten.zero_.default
    CHECK:      %slice : call_function[target=aten.slice.Tensor](args = (%w, 0, 2, 4), kwargs = {})
    CHECK-NEXT: %zero_ : call_function[target=aten.zero.default](args = (%slice,), kwargs = {})
    CHECK-NEXT: %slice_scatter : call_function[target=aten.slice_scatter.default]
    CHECK-SAME:   (args = (%w, %zero_, 0, 2, 4, 1), kwargs = {})
    CHECK-NEXT: %add : call_function[target=aten.add.Tensor](args = (%x, %slice_scatter), kwargs = {})
    CHECK-NEXT: return (%add,)
  )"));
}

TEST(InplaceToFunctional, MutationThroughContiguousIsKept) {
  // contiguous() of a contiguous tensor is that tensor: a mutation through it reaches the input.
  G g;
  Node* x = g.input("x", {4});
  Node* r = g.call("relu", "aten.relu.default", {x}, tensor({4}));
  Node* c = g.call("contiguous", "aten.contiguous.default", {r}, tensor({4}));
  Node* a = g.call("add_", "aten.add_.Tensor", {c, 1.0}, tensor({4}));
  g.output({a, r});
  EXPECT_EQ(inplace_to_functional(g.p), 0u);
  EXPECT_EQ(a->target, "aten.add_.Tensor");
}

TEST(InplaceToFunctional, MutationThroughAViewIsKept) {
  G g;
  Node* x = g.input("x", {4});
  Node* r = g.call("relu", "aten.relu.default", {x}, tensor({4}));
  Node* v = g.call("view", "aten.view.default", {r, Argument::List{2, 2}}, tensor({2, 2}));
  Node* a = g.call("relu_", "aten.relu_.default", {r}, tensor({4}));
  g.output({a, v});
  EXPECT_EQ(inplace_to_functional(g.p), 0u);
}

TEST(InplaceToFunctional, MutationThroughSliceChainBecomesScatters) {
  // m = zeros(3, 4); m[:, 1:3][0].fill_(5); relu(m)   (what TRAINING exports of masks look like)
  G g;
  Node* x = g.input("x", {3, 4});
  Node* z = g.call("zeros_like", "aten.zeros_like.default", {x}, tensor({3, 4}));
  Node* v1 = g.call("slice", "aten.slice.Tensor", {z, 1, 1, 3}, tensor({3, 2}));
  Node* v2 = g.call("select", "aten.select.int", {v1, 0, 0}, tensor({2}));
  Node* f = g.call("fill_", "aten.fill_.Scalar", {v2, 5.0}, tensor({2}));
  Node* r = g.call("relu", "aten.relu.default", {z}, tensor({3, 4}));
  g.output({r, f});
  EXPECT_EQ(inplace_to_functional(g.p), 1u);
  g.p.graph.verify();
  // The fill is functional; its row goes back into the slice, the slice into m, and relu reads that.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK:      %fill_ : call_function[target=aten.fill.Scalar](args = (%select, 5.0), kwargs = {})
    CHECK-NEXT: %select_scatter : call_function[target=aten.select_scatter.default]
    CHECK-SAME:   (args = (%slice, %fill_, 0, 0), kwargs = {})
    CHECK-NEXT: %slice_scatter : call_function[target=aten.slice_scatter.default]
    CHECK-SAME:   (args = (%zeros_like, %select_scatter, 1, 1, 3, 1), kwargs = {})
    CHECK-NEXT: %relu : call_function[target=aten.relu.default](args = (%slice_scatter,), kwargs = {})
  )"));
}

TEST(FoldWeightConstants, TransposeOfWeightBecomesAStridedWeight) {
  G g;
  Node* x = g.input("x", {2, 3});
  Node* w = g.weight("fc.weight", {4, 3});
  Node* b = g.weight("fc.bias", {4});
  Node* t = g.call("t", "aten.t.default", {w}, tensor({3, 4}));
  Node* mm = g.call("addmm", "aten.addmm.default", {b, x, t}, tensor({2, 4}));
  g.output({mm});
  const auto original_storage = g.p.weights.at("fc.weight").storage;
  EXPECT_EQ(fold_weight_constants(g.p), 1u);
  g.p.graph.verify();
  // The addmm reads a new weight, the transposed view; the transpose and fc.weight are unread.
  ASSERT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK-NOT:  aten.t.default
    CHECK-NOT:  fc.weight
    CHECK:      %t_folded : [num_users=1] = get_attr[target=_folded.t]
    CHECK-NEXT: %addmm : call_function[target=aten.addmm.default](args = (%fc.bias, %x, %t_folded), kwargs = {})
    CHECK-NOT:  aten.t.default
  )"));
  Node* folded = mm->args[2].node();
  const ir::Weight& fw = g.p.weights.at(folded->target);
  EXPECT_EQ(fw.meta.sizes, (std::vector<ir::SymInt>{3, 4}));
  EXPECT_EQ(fw.meta.strides, (std::vector<ir::SymInt>{1, 3}));
  EXPECT_FALSE(fw.is_contiguous());
  EXPECT_EQ(fw.storage, original_storage);  // a view: shares the original bytes
  EXPECT_EQ(g.p.weights.count("fc.weight"), 0u);  // no longer read
  // Element [i][j] of the transposed view is w[j][i] = j*3 + i.
  const float* d = reinterpret_cast<const float*>(fw.data());
  EXPECT_EQ(d[2 * 1 + 1 * 3], 1 * 3 + 2);  // [i=2][j=1] -> w[1][2]
}

TEST(FoldWeightConstants, OpsOnActivationsAreLeftAlone) {
  G g;
  Node* x = g.input("x", {2, 3});
  Node* t = g.call("t", "aten.t.default", {x}, tensor({3, 2}));
  g.output({t});
  EXPECT_EQ(fold_weight_constants(g.p), 0u);
}

TEST(CanonicalizeSymbolic, ConstantSizesBecomeInts) {
  G g;
  ir::SymInt s0(ir::SymExpr::symbol("s0"));
  Node* x = g.input("x", {s0, 6});
  ir::ValueMeta sym6;
  sym6.kind = ir::ValueMeta::Kind::SymInt;
  sym6.sym = ir::SymInt(int64_t{6});
  ir::ValueMeta syms0;
  syms0.kind = ir::ValueMeta::Kind::SymInt;
  syms0.sym = s0;
  Node* d1 = g.call("sym_size_1", "aten.sym_size.int", {x, 1}, sym6);
  Node* d0 = g.call("sym_size", "aten.sym_size.int", {x, 0}, syms0);
  Node* v = g.call("view", "aten.view.default", {x, Argument::List{d0, d1}}, tensor({s0, 6}));
  g.output({v});
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK: %view : call_function[target=aten.view.default](args = (%x, [%sym_size, %sym_size_1]), kwargs = {})
  )"));
  EXPECT_EQ(canonicalize_symbolic(g.p), 1u);
  g.p.graph.verify();
  // The static size is the int it always is; the dynamic one stays a node.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK-NOT:  %sym_size_1
    CHECK:      %view : call_function[target=aten.view.default](args = (%x, [%sym_size, 6]), kwargs = {})
  )"));
}

// GPT-2's gelu_new as exported: 0.5*x * (1 + tanh(0.79788 * (x + 0.044715 * x^3))), operands in
// either order; with an intermediate used elsewhere it stays written out.
Node* gelu_new(G& g, Node* x, bool swap, const std::string& p) {
  auto t = [] { return tensor({4, 8}); };
  Node* half = g.call(p + "half", "aten.mul.Tensor", swap ? std::vector<Argument>{0.5, x} : std::vector<Argument>{x, 0.5}, t());
  Node* cube = g.call(p + "pow", "aten.pow.Tensor_Scalar", {x, 3.0}, t());
  Node* k = g.call(p + "k", "aten.mul.Tensor", {cube, 0.044715}, t());
  Node* inner = g.call(p + "inner", "aten.add.Tensor", swap ? std::vector<Argument>{k, x} : std::vector<Argument>{x, k}, t());
  Node* scaled = g.call(p + "scaled", "aten.mul.Tensor", {inner, 0.7978845608028654}, t());
  Node* th = g.call(p + "tanh", "aten.tanh.default", {scaled}, t());
  Node* one = g.call(p + "one", "aten.add.Tensor", {th, 1.0}, t());
  return g.call(p + "gelu", "aten.mul.Tensor", swap ? std::vector<Argument>{one, half} : std::vector<Argument>{half, one}, t());
}

TEST(FuseGeluTanh, WrittenOutGeluBecomesOneOp) {
  for (bool swap : {false, true}) {
    G g;
    Node* x = g.input("x", {4, 8});
    Node* y = gelu_new(g, x, swap, "");
    g.output({y});
    EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
      CHECK:      %pow : call_function[target=aten.pow.Tensor_Scalar](args = (%x, 3.0), kwargs = {})
      CHECK:      %tanh : call_function[target=aten.tanh.default](args = (%scaled,), kwargs = {})
      CHECK:      %gelu : call_function[target=aten.mul.Tensor]
    )"));
    EXPECT_EQ(fuse_gelu_tanh(g.p), 1u);
    g.p.graph.verify();
    EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
      CHECK:      graph():
      CHECK-NEXT: %x : [num_users=1] = placeholder[target=x]
      CHECK-NEXT: %gelu : call_function[target=aten.gelu.default](args = (%x,), kwargs = {approximate: tanh})
      CHECK-NEXT: return (%gelu,)
    )"));
  }
  G g;  // the tanh is also an output: nothing changes
  Node* x = g.input("x", {4, 8});
  Node* y = gelu_new(g, x, false, "");
  Node* th = nullptr;
  for (Node* n : g.p.graph.nodes())
    if (n->target == "aten.tanh.default") th = n;
  g.output({y, th});
  EXPECT_EQ(fuse_gelu_tanh(g.p), 0u);
}

// softmax(q @ kᵀ * c + mask) @ v, as eager attention exports: one sdpa node with the scale and
// the mask; without a mask and scaled by a division too. Not when the scores are used elsewhere,
// the softmax is over another dim, or the mask broadcasts the scores up.
TEST(FuseEagerAttention, WrittenOutAttentionBecomesSdpa) {
  struct Case { bool mask, divide, shared_scores, other_dim, wide_mask; size_t fused; };
  for (const Case& c : {Case{true, false, false, false, false, 1}, Case{false, true, false, false, false, 1},
                        Case{true, false, true, false, false, 0}, Case{false, false, false, true, false, 0},
                        Case{true, false, false, false, true, 0}}) {
    G g;
    const int64_t h = c.wide_mask ? 1 : 4;
    Node* q = g.input("q", {2, h, 8, 16});
    Node* k = g.input("k", {2, h, 8, 16});
    Node* v = g.input("v", {2, h, 8, 16});
    Node* kt = g.call("kt", "aten.transpose.int", {k, int64_t(-1), int64_t(-2)}, tensor({2, h, 16, 8}));
    Node* s = g.call("qk", "aten.matmul.default", {q, kt}, tensor({2, h, 8, 8}));
    Node* scaled = g.call("scaled", c.divide ? "aten.div.Tensor" : "aten.mul.Tensor", {s, 4.0}, tensor({2, h, 8, 8}));
    Node* x = scaled;
    if (c.mask) {
      Node* m = g.input("m", {2, c.wide_mask ? int64_t(4) : int64_t(1), 8, 8});
      x = g.call("masked", "aten.add.Tensor", {scaled, m}, tensor({2, 4, 8, 8}));
    }
    Node* p = g.call("p", "aten.softmax.int", {x, c.other_dim ? int64_t(-2) : int64_t(-1)},
                     tensor({2, c.wide_mask ? int64_t(4) : h, 8, 8}));
    Node* y = g.call("y", "aten.matmul.default", {p, v}, tensor({2, h, 8, 16}));
    std::vector<Node*> outs{y};
    if (c.shared_scores) outs.push_back(s);
    g.output(outs);
    EXPECT_EQ(fuse_eager_attention(g.p), c.fused);
    g.p.graph.verify();
    if (!c.fused) {
      EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
        CHECK:     %p : call_function[target=aten.softmax.int]
        CHECK-NOT: scaled_dot_product_attention
      )"));
      continue;
    }
    // y is the one sdpa of q, k, v and the mask (None without one); the scores, the softmax and
    // the transpose of k are gone.
    const std::string sdpa = std::string("%y : call_function[target=aten.scaled_dot_product_attention.default]") +
                             "(args = (%q, %k, %v, " + (c.mask ? "%m" : "None") + "), kwargs = {scale: " +
                             (c.divide ? "0.25" : "4.0") + "})";
    EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
      CHECK-NOT:  aten.transpose.int
      CHECK-NOT:  aten.matmul.default
      CHECK-NOT:  aten.softmax.int
      CHECK:      )" + sdpa + R"(
      CHECK-NEXT: return (%y,)
    )"));
  }
}

// a @ b for rank-4 [2, 4, ., .] operands as core ATen writes it:
// view(bmm(view(expand(a), [8, ...]), view(expand(b), [8, ...])), out).
Node* decomposed_matmul(G& g, const std::string& n, Node* a, Node* b, std::vector<ir::SymInt> out) {
  auto flat = [&](Node* x, const std::string& tag) {
    std::vector<ir::SymInt> s = x->meta.tensor.sizes;
    Node* e = g.call(n + "_e" + tag, "aten.expand.default",
                     {x, Argument::List{s[0].value, s[1].value, s[2].value, s[3].value}}, tensor(s));
    return g.call(n + "_v" + tag, "aten.view.default", {e, Argument::List{int64_t(8), s[2].value, s[3].value}},
                  tensor({8, s[2], s[3]}));
  };
  Node* m = g.call(n + "_bmm", "aten.bmm.default", {flat(a, "a"), flat(b, "b")}, tensor({8, out[2], out[3]}));
  return g.call(n, "aten.view.default", {m, Argument::List{out[0].value, out[1].value, out[2].value, out[3].value}},
                tensor(out));
}

// fuse_eager_attention made `y` one sdpa of q, k, v, and the graph still verifies.
void expect_fused_sdpa(G& g, Node* y, Node* q, Node* k, Node* v) {
  EXPECT_EQ(fuse_eager_attention(g.p), 1u);
  g.p.graph.verify();
  EXPECT_EQ(y->target, "aten.scaled_dot_product_attention.default");
  ASSERT_GE(y->args.size(), 3u);
  EXPECT_EQ(y->args[0].node(), q);
  EXPECT_EQ(y->args[1].node(), k);
  EXPECT_EQ(y->args[2].node(), v);
}

// Half-precision eager attention with its softmax in fp32, both spellings: softmax(x.float())
// .to(half) (T5) and softmax(x, dtype=float32).to(half) (Llama, Qwen2, Mistral); core ATen's
// _to_copy too. Not when the probabilities stay fp32 into P·V.
TEST(FuseEagerAttention, HalfModelsWithAnFp32Softmax) {
  const auto H = ir::ScalarType::Half, F32 = ir::ScalarType::Float;
  struct Case { bool dtype_arg, core_aten, stays_fp32; };
  for (const Case& c : {Case{false, false, false}, Case{true, false, false}, Case{false, true, false},
                        Case{false, false, true}}) {
    SCOPED_TRACE(std::string(c.dtype_arg ? "softmax(dtype=)" : "softmax(x.float())") + (c.core_aten ? ", _to_copy" : ""));
    G g;
    Node* q = g.input("q", {2, 4, 8, 16});
    Node* k = g.input("k", {2, 4, 8, 16});
    Node* v = g.input("v", {2, 4, 8, 16});
    Node* m = g.input("m", {1, 4, 8, 8});
    for (Node* n : {q, k, v, m}) n->meta = tensor(n->meta.tensor.sizes, H);
    Node* kt = g.call("kt", "aten.transpose.int", {k, int64_t(-1), int64_t(-2)}, tensor({2, 4, 16, 8}, H));
    Node* s = g.call("qk", "aten.matmul.default", {q, kt}, tensor({2, 4, 8, 8}, H));
    Node* x = g.call("masked", "aten.add.Tensor", {s, m}, tensor({2, 4, 8, 8}, H));
    const std::string cast = c.core_aten ? "aten._to_copy.default" : "aten.to.dtype";
    auto to = [&](const std::string& name, Node* in, ir::ScalarType t) {
      Node* n = c.core_aten ? g.call(name, cast, {in}, tensor({2, 4, 8, 8}, t))
                            : g.call(name, cast, {in, int64_t(static_cast<int>(t))}, tensor({2, 4, 8, 8}, t));
      if (c.core_aten) n->kwargs.emplace_back("dtype", Argument(int64_t(static_cast<int>(t))));
      return n;
    };
    Node* p32 = c.dtype_arg
                    ? g.call("p", "aten.softmax.int", {x, int64_t(-1), int64_t(static_cast<int>(F32))}, tensor({2, 4, 8, 8}, F32))
                    : g.call("p", "aten.softmax.int", {to("x32", x, F32), int64_t(-1)}, tensor({2, 4, 8, 8}, F32));
    Node* p = c.stays_fp32 ? p32 : to("p16", p32, H);
    Node* y = g.call("y", "aten.matmul.default", {p, v}, tensor({2, 4, 8, 16}, c.stays_fp32 ? F32 : H));
    g.output({y});
    if (c.stays_fp32) {
      EXPECT_EQ(fuse_eager_attention(g.p), 0u);
      continue;
    }
    expect_fused_sdpa(g, y, q, k, v);
    ASSERT_EQ(y->args.size(), 4u);
    EXPECT_EQ(y->args[3].node(), m);
  }
}

// The same in core ATen's spelling: each matmul is view(bmm(view(expand(a)), view(expand(b))))
// back to the batch dims, the softmax `_softmax(x, -1, False)`.
TEST(FuseEagerAttention, DecomposedMatmulsToo) {
  G g;
  Node* q = g.input("q", {2, 4, 8, 16});
  Node* k = g.input("k", {2, 4, 8, 16});
  Node* v = g.input("v", {2, 4, 8, 16});
  Node* kt = g.call("kt", "aten.permute.default", {k, Argument::List{int64_t(0), int64_t(1), int64_t(3), int64_t(2)}},
                    tensor({2, 4, 16, 8}));
  Node* s = decomposed_matmul(g, "qk", q, kt, {2, 4, 8, 8});
  Node* scaled = g.call("scaled", "aten.mul.Tensor", {s, 0.25}, tensor({2, 4, 8, 8}));
  Node* p = g.call("p", "aten._softmax.default", {scaled, int64_t(-1), false}, tensor({2, 4, 8, 8}));
  Node* y = decomposed_matmul(g, "pv", p, v, {2, 4, 8, 16});
  g.output({y});
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK-COUNT-2: call_function[target=aten.bmm.default]
    CHECK:         %pv : call_function[target=aten.view.default](args = (%pv_bmm, [2, 4, 8, 16])
  )"));
  expect_fused_sdpa(g, y, q, k, v);
  // Both matmuls, their expands and views, and the softmax are gone into the sdpa.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK-NOT:  bmm
    CHECK-NOT:  expand
    CHECK-NOT:  softmax
    CHECK:      %pv : call_function[target=aten.scaled_dot_product_attention.default]
    CHECK-SAME:   (args = (%q, %k, %v, None), kwargs = {scale: 0.25})
    CHECK-NEXT: return (%pv,)
  )"));
}

// bmm views that do not just merge the batch dims ([1,1,2,2] viewed [4,1,1]: an elementwise
// product) are no matmul: nothing fuses.
TEST(FuseEagerAttention, ViewsThatReshapeTheMatricesAreNoMatmul) {
  G g;
  Node* q = g.input("q", {1, 1, 2, 2});
  Node* k = g.input("k", {1, 1, 2, 2});
  Node* v = g.input("v", {1, 1, 2, 2});
  Node* kt = g.call("kt", "aten.transpose.int", {k, int64_t(-1), int64_t(-2)}, tensor({1, 1, 2, 2}));
  Node* vq = g.call("vq", "aten.view.default", {q, Argument::List{int64_t(4), int64_t(1), int64_t(1)}}, tensor({4, 1, 1}));
  Node* vk = g.call("vk", "aten.view.default", {kt, Argument::List{int64_t(4), int64_t(1), int64_t(1)}}, tensor({4, 1, 1}));
  Node* m = g.call("m", "aten.bmm.default", {vq, vk}, tensor({4, 1, 1}));
  Node* s = g.call("s", "aten.view.default", {m, Argument::List{int64_t(1), int64_t(1), int64_t(2), int64_t(2)}},
                   tensor({1, 1, 2, 2}));
  Node* p = g.call("p", "aten._softmax.default", {s, int64_t(-1), false}, tensor({1, 1, 2, 2}));
  Node* y = g.call("y", "aten.matmul.default", {p, v}, tensor({1, 1, 2, 2}));
  g.output({y});
  EXPECT_EQ(fuse_eager_attention(g.p), 0u);
}

// sdpa as core ATen decomposes it (PyTorch 2.11): q and kᵀ each scaled by sqrt(scale), the safe
// softmax written out (rows of -inf give zeros, as the fused kernel does), the scores read by both
// the softmax and its -inf test: back to one sdpa with the product of the two scales.
TEST(FuseEagerAttention, DecomposedSdpaWithItsSafeSoftmax) {
  G g;
  Node* q = g.input("q", {2, 4, 8, 16});
  Node* k = g.input("k", {2, 4, 8, 16});
  Node* v = g.input("v", {2, 4, 8, 16});
  Node* qs = g.call("qs", "aten.mul.Scalar", {q, 0.5}, tensor({2, 4, 8, 16}));
  Node* kt = g.call("kt", "aten.permute.default", {k, Argument::List{int64_t(0), int64_t(1), int64_t(3), int64_t(2)}},
                    tensor({2, 4, 16, 8}));
  Node* kts = g.call("kts", "aten.mul.Scalar", {kt, 0.5}, tensor({2, 4, 16, 8}));
  Node* s = decomposed_matmul(g, "qk", qs, kts, {2, 4, 8, 8});
  Node* sm = g.call("sm", "aten._softmax.default", {s, int64_t(-1), false}, tensor({2, 4, 8, 8}));
  Node* eq = g.call("eq", "aten.eq.Scalar", {s, -std::numeric_limits<double>::infinity()}, tensor({2, 4, 8, 8}, ir::ScalarType::Bool));
  Node* kept = g.call("kept", "aten.logical_not.default", {eq}, tensor({2, 4, 8, 8}, ir::ScalarType::Bool));
  Node* any = g.call("any", "aten.any.dim", {kept, int64_t(-1), true}, tensor({2, 4, 8, 1}, ir::ScalarType::Bool));
  Node* none = g.call("none", "aten.logical_not.default", {any}, tensor({2, 4, 8, 1}, ir::ScalarType::Bool));
  Node* zeros = g.call("zeros", "aten.full_like.default", {sm, int64_t(0)}, tensor({2, 4, 8, 8}));
  Node* p = g.call("p", "aten.where.self", {none, zeros, sm}, tensor({2, 4, 8, 8}));
  Node* y = decomposed_matmul(g, "pv", p, v, {2, 4, 8, 16});
  g.output({y});
  expect_fused_sdpa(g, y, q, k, v);
  EXPECT_TRUE(y->args[3].is_none());
  EXPECT_DOUBLE_EQ(y->kwarg("scale")->as<double>(), 0.25);
  for (Node* n : g.p.graph.nodes()) EXPECT_NE(n->target, "aten._softmax.default");
}

// nn.MultiheadAttention's packed projection in core ATen (PyTorch 2.11): the activation is
// transposed to [L, B, E], so x @ Wᵀ became a bmm over L copies of Wᵀ. It turns back into one
// matmul with Wᵀ; a right operand that is really batched, or a broadcast of a smaller matrix, stays.
TEST(UnbroadcastMatmulWeights, ExpandedMatrixBecomesABroadcastOperand) {
  G g;
  Node* x = g.input("x", {2, 17, 64});
  Node* w = g.weight("w", {192, 64});
  Node* row = g.weight("row", {1, 192});
  Node* batched = g.input("batched", {17, 64, 192});
  Node* xt = g.call("xt", "aten.permute.default", {x, Argument::List{int64_t(1), int64_t(0), int64_t(2)}}, tensor({17, 2, 64}));
  Node* wt = g.call("wt", "aten.permute.default", {w, Argument::List{int64_t(1), int64_t(0)}}, tensor({64, 192}));
  auto bmm_with = [&](const std::string& name, Node* right_source, bool expand) {
    Node* xe = g.call(name + "_xe", "aten.expand.default", {xt, Argument::List{int64_t(17), int64_t(2), int64_t(64)}},
                      tensor({17, 2, 64}));
    Node* xv = g.call(name + "_xv", "aten.view.default", {xe, Argument::List{int64_t(17), int64_t(2), int64_t(64)}},
                      tensor({17, 2, 64}));
    Node* re = expand ? g.call(name + "_re", "aten.expand.default",
                               {right_source, Argument::List{int64_t(17), int64_t(64), int64_t(192)}}, tensor({17, 64, 192}))
                      : right_source;
    Node* rv = g.call(name + "_rv", "aten.view.default", {re, Argument::List{int64_t(17), int64_t(64), int64_t(192)}},
                      tensor({17, 64, 192}));
    return g.call(name, "aten.bmm.default", {xv, rv}, tensor({17, 2, 192}));
  };
  Node* proj = bmm_with("proj", wt, true);
  Node* really_batched = bmm_with("really_batched", batched, false);
  Node* row_ex = g.call("row_ex", "aten.expand.default", {row, Argument::List{int64_t(64), int64_t(192)}}, tensor({64, 192}));
  Node* broadcast_row = bmm_with("broadcast_row", row_ex, true);
  g.output({proj, really_batched, broadcast_row});
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK: %proj_re : call_function[target=aten.expand.default](args = (%wt, [17, 64, 192]), kwargs = {})
    CHECK: %proj : call_function[target=aten.bmm.default](args = (%proj_xv, %proj_rv), kwargs = {})
  )"));
  EXPECT_EQ(unbroadcast_matmul_weights(g.p), 2u);  // proj, and broadcast_row's [64, 192] row_ex
  g.p.graph.verify();
  // proj is a matmul with Wᵀ, its expanded copy gone; the really batched bmm stays; broadcast_row
  // reads row_ex, its own [1, 192] -> [64, 192] expand.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK-NOT: %proj_re
    CHECK:     %proj : call_function[target=aten.matmul.default](args = (%proj_xv, %wt), kwargs = {})
    CHECK:     %really_batched : call_function[target=aten.bmm.default](args = (%really_batched_xv, %really_batched_rv)
    CHECK:     %row_ex : call_function[target=aten.expand.default](args = (%row, [64, 192]), kwargs = {})
    CHECK:     %broadcast_row : call_function[target=aten.matmul.default](args = (%broadcast_row_xv, %row_ex)
  )"));
}

TEST(InplaceToFunctional, AugmentedMaskOperatorsBecomeFunctional) {
  G g;  // transformers' `mask &= other`: aten.__iand__.Tensor
  Node* x = g.input("x", {4});
  Node* m = g.call("gt", "aten.gt.Scalar", {x, 0.0}, tensor({4}, ir::ScalarType::Bool));
  Node* a = g.call("__iand__", "aten.__iand__.Tensor", {m, m}, tensor({4}, ir::ScalarType::Bool));
  g.output({a});
  EXPECT_EQ(inplace_to_functional(g.p), 1u);
  g.p.graph.verify();
  EXPECT_EQ(a->target, "aten.__and__.Tensor");
}

TEST(TruncateDouble, Float64ProgramComputesInFloat32WithBoundaryCasts) {
  G g;
  Node* w = g.weight("w", {2, 3});  // an f32 weight stands in; re-stored below as f64
  {
    auto buf = std::make_shared<std::vector<double>>(std::vector<double>{0.5, 1, 2, 3, 4, 1e300});
    auto st = std::make_shared<ir::Storage>();
    st->data = reinterpret_cast<const uint8_t*>(buf->data());
    st->size = buf->size() * 8;
    st->owner = buf;
    g.p.weights["w"].storage = st;
    g.p.weights["w"].meta.dtype = ir::ScalarType::Double;
    w->meta.tensor.dtype = ir::ScalarType::Double;
  }
  Node* x = g.input("x", {2, 3});
  x->meta.tensor.dtype = ir::ScalarType::Double;
  Node* y = g.input("y", {2});  // f32 input: untouched
  Node* a = g.call("add", "aten.add.Tensor", {x, w}, tensor({2, 3}, ir::ScalarType::Double));
  Node* c = g.call("to", "aten._to_copy.default", {a}, tensor({2, 3}, ir::ScalarType::Double),
                   {{"dtype", Argument(ir::ScalarType::Double)}});
  g.output({c, x, y});
  std::ostringstream warn;
  EXPECT_GT(truncate_double(g.p, &warn), 0u);
  g.p.graph.verify();
  // x is cast to float32 on the way in, the program's own cast now says float32, and the float64
  // result is cast back on the way out; inputs passed through are returned as they are.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK:      %x_f32 : call_function[target=aten._to_copy.default](args = (%x,), kwargs = {dtype: torch.float32})
    CHECK-NEXT: %add : call_function[target=aten.add.Tensor](args = (%x_f32, %w), kwargs = {})
    CHECK-NEXT: %to : call_function[target=aten._to_copy.default](args = (%add,), kwargs = {dtype: torch.float32})
    CHECK-NEXT: %to_f64 : call_function[target=aten._to_copy.default](args = (%to,), kwargs = {dtype: torch.float64})
    CHECK-NEXT: return (%to_f64, %x, %y)
  )"));
  EXPECT_NE(warn.str().find("float64 program computed in float32"), std::string::npos) << warn.str();
  const ir::Weight& wt = g.p.weights.at("w");
  EXPECT_EQ(wt.meta.dtype, ir::ScalarType::Float);
  const float* f = reinterpret_cast<const float*>(wt.data());
  EXPECT_EQ(f[0], 0.5f);
  EXPECT_EQ(f[4], 4.0f);
  // The value types the printout leaves out.
  EXPECT_EQ(x->meta.tensor.dtype, ir::ScalarType::Double);  // callers still pass float64
  EXPECT_EQ(a->args[0].node()->meta.tensor.dtype, ir::ScalarType::Float);
  EXPECT_EQ(a->meta.tensor.dtype, ir::ScalarType::Float);
  EXPECT_EQ(g.p.graph.output_values()[0].node()->meta.tensor.dtype, ir::ScalarType::Double);
  // A float32 program is left alone, silently.
  G h;
  Node* z = h.input("z", {2});
  h.output({h.call("relu", "aten.relu.default", {z}, tensor({2}))});
  std::ostringstream quiet;
  EXPECT_EQ(truncate_double(h.p, &quiet), 0u);
  EXPECT_TRUE(quiet.str().empty());
}

TEST(ComplexAsReal, RotaryEmbeddingBecomesRealOps) {
  constexpr auto C = ir::ScalarType::ComplexFloat;
  G g;
  Node* w = g.weight("freqs", {4, 3, 2});  // f32 pairs stand in for a complex [4, 3] weight
  g.p.weights["freqs"].meta = tensor({4, 3}, C).tensor;
  g.p.weights["freqs"].meta.strides = {3, 1};
  w->meta = tensor({4, 3}, C);
  Node* x = g.input("x", {2, 4, 3, 2});
  Node* z = g.call("z", "aten.view_as_complex.default", {x}, tensor({2, 4, 3}, C));
  Node* f = g.call("f", "aten.slice.Tensor", {w, int64_t{-2}, int64_t{0}, int64_t{4}}, tensor({4, 3}, C));
  Node* v = g.call("v", "aten.view.default", {f, Argument::List{int64_t{1}, int64_t{4}, int64_t{3}}}, tensor({1, 4, 3}, C));
  Node* m = g.call("m", "aten.mul.Tensor", {z, v}, tensor({2, 4, 3}, C));
  Node* t = g.call("t", "aten.transpose.int", {m, int64_t{-1}, int64_t{0}}, tensor({3, 4, 2}, C));
  Node* r = g.call("r", "aten.view_as_real.default", {t}, tensor({3, 4, 2, 2}));
  g.output({r});
  EXPECT_GT(complex_as_real(g.p), 0u);
  remove_noops(g.p);
  g.p.graph.eliminate_dead_code();
  g.p.graph.verify();
  // Dims counted from the complex rank, sizes with the pair dim, the product written out.
  EXPECT_TRUE(filecheck(g.p.graph.str(), R"(
    CHECK:      %f : call_function[target=aten.slice.Tensor](args = (%freqs, 0, 0, 4, 1), kwargs = {})
    CHECK-NEXT: %v : call_function[target=aten.view.default](args = (%f, [1, 4, 3, 2]), kwargs = {})
    CHECK:      aten.select.int
    CHECK:      aten.sub.Tensor
    CHECK:      aten.stack.default
    CHECK:      %t : call_function[target=aten.transpose.int](args = (%m_pair, 2, 0), kwargs = {})
    CHECK-NEXT: return (%t,)
  )")) << g.p.graph.str();
  for (Node* n : g.p.graph.nodes())
    if (n->meta.is_tensor()) EXPECT_NE(n->meta.tensor.dtype, C) << n->str();
  EXPECT_EQ(g.p.weights.at("freqs").meta.dtype, ir::ScalarType::Float);
  EXPECT_EQ(g.p.weights.at("freqs").meta.sizes.size(), 3u);
}

TEST(ComplexAsReal, ComplexInputsOutputsAndUnknownOpsLeaveTheProgramAlone) {
  constexpr auto C = ir::ScalarType::ComplexFloat;
  auto program = [&](int variant) {
    auto g = std::make_unique<G>();
    Node* x = g->input("x", {4, 2});
    if (variant == 0) x->meta = tensor({4}, C);  // a complex input
    Node* z = variant == 0 ? x : g->call("z", "aten.view_as_complex.default", {x}, tensor({4}, C));
    Node* y = g->call("y", variant == 2 ? "aten.exp.default" : "aten.mul.Tensor",
                      variant == 2 ? std::vector<Argument>{z} : std::vector<Argument>{z, z}, tensor({4}, C));
    g->output({variant == 1 ? y : g->call("r", "aten.view_as_real.default", {y}, tensor({4, 2}))});
    return g;
  };
  for (int variant : {0, 1, 2}) {  // complex input; complex output; exp of a complex (not covered)
    auto g = program(variant);
    const std::string before = g->p.graph.str();
    EXPECT_EQ(complex_as_real(g->p), 0u) << variant;
    EXPECT_EQ(g->p.graph.str(), before);
  }
}

TEST(RunPasses, ReportsEveryPass) {
  G g;
  Node* x = g.input("x", {2});
  Node* c = g.call("contiguous", "aten.contiguous.default", {x}, tensor({2}));
  Node* r = g.call("relu", "aten.relu.default", {c}, tensor({2}));
  g.output({r});
  auto report = run_passes(g.p);
  ASSERT_EQ(report.size(), 11u);  // (a second remove_noops follows complex_as_real only where it changed something)
  EXPECT_EQ(report[0].pass, "canonicalize_aliases");
  EXPECT_EQ(report[2].pass, "remove_noops");
  EXPECT_EQ(report[3].pass, "complex_as_real");
  EXPECT_EQ(report[2].changes, 1u);
}

}  // namespace
}  // namespace kiln::lowering
