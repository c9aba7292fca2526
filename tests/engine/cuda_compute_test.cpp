// CUDA backend vs CPU backend: matmul, convolution, pooling, reduce, softmax, normalization,
// attention (the layers with arithmetic beyond one element).
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>

#include "cuda_test_util.h"
#include "engine/builder.h"
#include "test_networks.h"

namespace kiln::engine::cputest {
namespace {

Layer* matmul(Network& n, Tensor* a, Tensor* b, Tensor* bias, bool ta, bool tb, std::optional<ActivationParams> act) {
  MatMulParams p;
  p.transpose_a = ta;
  p.transpose_b = tb;
  p.has_bias = bias != nullptr;
  p.activation = act;
  std::vector<Tensor*> ins{a, b};
  if (bias) ins.push_back(bias);
  return n.add_layer("mm", ins, p);
}

TEST(CudaCompute, MatMul) {
  REQUIRE_GPU();
  struct Case { std::vector<int64_t> a, b; bool ta, tb; };
  const Case cases[] = {
      {{16, 32}, {32, 24}, false, false}, {{32, 16}, {32, 24}, true, false}, {{16, 32}, {24, 32}, false, true},
      {{3, 16, 32}, {32, 8}, false, false}, {{3, 16, 32}, {3, 32, 8}, false, false}, {{16, 32}, {3, 32, 8}, false, false},
      {{2, 1, 5, 7}, {1, 3, 7, 4}, false, false}, {{2, 3, 7, 5}, {2, 3, 4, 7}, true, true}, {{1, 64}, {64, 1}, false, false},
      {{256, 320}, {384, 320}, false, true}, {{4, 96, 64}, {4, 64, 200}, false, false}};
  // Both ways of choosing cuBLASLt's algorithm: the fastest of its heuristic's candidates timed on
  // this GPU (auto), and the heuristic's first choice.
  for (const char* tactic : {"auto", "heuristic"})
  for (DataType t : kFloats)
    for (const Case& c : cases) {
      ::setenv("KILN_GEMM_TACTIC", tactic, 1);
      Host a = random_host(t, c.a, 21), b = random_host(t, c.b, 22);
      check("matmul " + std::string(tactic) + " " + to_string(t), [&](Network& n) {
        Tensor* x0 = input(n, a, "a");
        Tensor* x1 = input(n, b, "b");
        n.mark_output(matmul(n, x0, x1, nullptr, c.ta, c.tb, std::nullopt)->output(), "y");
      }, {a, b}, 2);
    }
  ::unsetenv("KILN_GEMM_TACTIC");
  // Epilogues: vector bias + relu / gelu-tanh (cuBLASLt), gelu-erf and a full bias (pointwise pass).
  for (DataType t : kFloats)
    for (ActivationOp op : {ActivationOp::kRelu, ActivationOp::kGeluTanh, ActivationOp::kGeluErf, ActivationOp::kSilu}) {
      Host a = random_host(t, {4, 8, 32}, 23), b = random_host(t, {32, 48}, 24), bias = random_host(t, {48}, 25),
           bias2 = random_host(t, {8, 48}, 26);
      check("matmul epilogue " + std::string(to_string(op)) + " " + to_string(t), [&](Network& n) {
        ActivationParams ap{op};
        std::vector<Tensor*> x{input(n, a, "a"), input(n, b, "b"), input(n, bias, "c"), input(n, a, "a2"),
                               input(n, b, "b2"), input(n, bias2, "c2")};
        n.mark_output(matmul(n, x[0], x[1], x[2], false, false, ap)->output(), "y");
        n.mark_output(matmul(n, x[3], x[4], x[5], false, false, ap)->output(), "z");
      }, {a, b, bias, a, b, bias2}, 2);
    }
}

// A residual (same shape as the output) added after the bias, before the activation: cuBLASLt's
// C operand. Relu fused by cuBLASLt, silu after it; one tall GEMM, a strided batch of GEMMs.
TEST(CudaCompute, MatMulResidual) {
  REQUIRE_GPU();
  struct Case { std::vector<int64_t> a, b, y; };
  for (DataType t : kFloats)
    for (const Case& c : {Case{{4, 8, 32}, {32, 48}, {4, 8, 48}}, Case{{3, 16, 32}, {3, 32, 8}, {3, 16, 8}}})
      for (ActivationOp op : {ActivationOp::kRelu, ActivationOp::kSilu}) {
        Host a = random_host(t, c.a, 27), b = random_host(t, c.b, 28), bias = random_host(t, {c.y.back()}, 29),
             r = random_host(t, c.y, 30);
        check("matmul residual " + std::string(to_string(op)) + " " + to_string(t), [&](Network& n) {
          MatMulParams p;
          p.has_bias = true;
          p.has_residual = true;
          p.activation = ActivationParams{op};
          Tensor* xa = input(n, a, "a");
          Tensor* xb = input(n, b, "b");
          Tensor* xc = input(n, bias, "c");
          Tensor* xr = input(n, r, "r");
          n.mark_output(n.add_layer("mm", {xa, xb, xc, xr}, p)->output(), "y");
        }, {a, b, bias, r}, 2);
      }
}

TEST(CudaCompute, Convolution) {
  REQUIRE_GPU();
  struct Case { std::vector<int64_t> x, w; ConvolutionParams p; };
  auto cp = [](std::vector<int64_t> s, std::vector<int64_t> pad, std::vector<int64_t> d, int64_t g, bool tr = false,
               std::vector<int64_t> op = {}) {
    ConvolutionParams p;
    p.stride = s; p.padding = pad; p.dilation = d; p.groups = g; p.transposed = tr;
    p.output_padding = op.empty() ? std::vector<int64_t>(s.size(), 0) : op;
    return p;
  };
  const Case cases[] = {
      {{2, 8, 12, 12}, {16, 8, 3, 3}, cp({1, 1}, {1, 1}, {1, 1}, 1)},
      {{1, 8, 13, 11}, {8, 2, 3, 3}, cp({2, 2}, {1, 0}, {2, 1}, 4)},
      {{2, 6, 20}, {4, 6, 5}, cp({2}, {2}, {1}, 1)},
      {{1, 4, 6, 6, 6}, {8, 4, 3, 3, 3}, cp({1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1)},
      {{1, 8, 7, 7}, {8, 4, 3, 3}, cp({2, 2}, {1, 1}, {1, 1}, 1, true, {1, 1})},
      {{2, 32, 8, 8}, {32, 1, 3, 3}, cp({1, 1}, {1, 1}, {1, 1}, 32)}};
  for (DataType t : {DataType::kFloat32, DataType::kFloat16})
    for (const Case& c : cases)
      for (bool bias_act : {false, true}) {
        Host x = random_host(t, c.x, 31), w = random_host(t, c.w, 32, -0.5, 0.5);
        int64_t cout = c.p.transposed ? c.w[1] * c.p.groups : c.w[0];
        Host b = random_host(t, {cout}, 33);
        check("conv " + std::string(to_string(t)), [&](Network& n) {
          ConvolutionParams p = c.p;
          p.has_bias = bias_act;
          if (bias_act) p.activation = ActivationParams{ActivationOp::kRelu};
          std::vector<Tensor*> ins{input(n, x, "x"), input(n, w, "w")};
          if (bias_act) ins.push_back(input(n, b, "b"));
          n.mark_output(n.add_layer("conv", ins, p)->output(), "y");
        }, bias_act ? std::vector<Host>{x, w, b} : std::vector<Host>{x, w}, 3);
      }
}

TEST(CudaCompute, Pooling) {
  REQUIRE_GPU();
  auto pp = [](PoolType t, std::vector<int64_t> k, std::vector<int64_t> s, std::vector<int64_t> pad, bool ceil,
               bool cip = true) {
    PoolingParams p;
    p.type = t; p.kernel = k; p.stride = s; p.padding = pad; p.ceil_mode = ceil; p.count_include_pad = cip;
    p.dilation = std::vector<int64_t>(k.size(), 1);
    return p;
  };
  std::vector<std::pair<std::vector<int64_t>, PoolingParams>> cases = {
      {{2, 3, 9, 9}, pp(PoolType::kMax, {3, 3}, {2, 2}, {1, 1}, false)},
      {{2, 3, 10, 9}, pp(PoolType::kMax, {3, 2}, {2, 2}, {0, 1}, true)},
      {{2, 3, 9, 9}, pp(PoolType::kAverage, {3, 3}, {2, 2}, {1, 1}, false, true)},
      {{2, 3, 9, 9}, pp(PoolType::kAverage, {3, 3}, {2, 2}, {1, 1}, true, false)},
      {{2, 4, 11}, pp(PoolType::kMax, {3}, {2}, {1}, false)},
      {{1, 2, 5, 6, 7}, pp(PoolType::kAverage, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, false)}};
  PoolingParams dil = pp(PoolType::kMax, {3, 3}, {1, 1}, {1, 1}, false);
  dil.dilation = {2, 2};
  cases.push_back({{1, 2, 9, 9}, dil});
  PoolingParams div = pp(PoolType::kAverage, {2, 2}, {2, 2}, {0, 0}, false);
  div.divisor_override = 3;
  cases.push_back({{1, 2, 8, 8}, div});
  PoolingParams ad;
  ad.type = PoolType::kAverage;
  ad.adaptive_output = {3, 5};
  cases.push_back({{2, 3, 10, 11}, ad});
  PoolingParams adm = ad;
  adm.type = PoolType::kMax;
  adm.adaptive_output = {1, 1};
  cases.push_back({{2, 3, 7, 7}, adm});
  // channels-last 2-d windows: 16 channels take the 8-channel vector kernel, 3 the general one
  for (const PoolingParams& base : {cases[0].second, cases[1].second, cases[2].second, cases[3].second, dil, div})
    for (int64_t channels : {16, 3}) {
      PoolingParams nhwc = base;
      nhwc.channels_last = true;
      cases.push_back({{2, 10, 9, channels}, nhwc});
    }
  for (DataType t : {DataType::kFloat32, DataType::kFloat16})
    for (auto& kase : cases) {
      // Not a structured binding: clang 14 cannot capture one in the lambda below.
      const auto& dims = kase.first;
      const auto& p = kase.second;
      Host x = random_host(t, dims, 41);
      check("pool " + std::string(to_string(t)),
            [&](Network& n) { n.mark_output(n.add_pooling("p", input(n, x, "x"), p)->output(), "y"); }, {x});
    }
}

TEST(CudaCompute, Reduce) {
  REQUIRE_GPU();
  std::vector<std::vector<int64_t>> axes = {{2}, {0}, {1, 2}, {0, 2}, {0, 1, 2}, {1}};
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kInt32})
    for (int op = 0; op < enum_count<ReduceOp>(); ++op)
      for (auto& ax : axes)
        for (bool keep : {false, true}) {
          ReduceOp rop = ReduceOp(op);
          if ((rop == ReduceOp::kArgMax || rop == ReduceOp::kArgMin) && ax.size() != 1) continue;
          if (!is_floating(t) && (rop == ReduceOp::kMean || rop == ReduceOp::kVar || rop == ReduceOp::kNorm2)) continue;
          Host x = random_host(t, {5, 6, 70}, 51, rop == ReduceOp::kProd ? 0.5 : -2, rop == ReduceOp::kProd ? 1.5 : 2);
          ReduceParams p;
          p.op = rop;
          p.axes = ax;
          p.keep_dims = keep;
          p.correction = 1;
          Network probe;
          try {
            probe.add_reduce("r", input(probe, x, "x"), p);
          } catch (const NetworkError&) {
            continue;  // combination refused by the network (e.g. var of ints)
          }
          check("reduce " + std::string(to_string(t)) + " op " + std::to_string(op),
                [&](Network& n) { n.mark_output(n.add_reduce("r", input(n, x, "x"), p)->output(), "y"); }, {x}, 3);
        }
}

TEST(CudaCompute, SoftmaxAndNorms) {
  REQUIRE_GPU();
  for (DataType t : kFloats) {
    Host x = random_host(t, {3, 10, 33}, 61, -4, 4);
    for (int64_t axis : {2, 1, 0})
      for (bool log : {false, true})
        check("softmax", [&](Network& n) { n.mark_output(n.add_softmax("s", input(n, x, "x"), axis, log)->output(), "y"); },
              {x}, 2);
    Host big = random_host(t, {4, 3000}, 62, -4, 4);
    check("softmax long", [&](Network& n) { n.mark_output(n.add_softmax("s", input(n, big, "x"), 1)->output(), "y"); }, {big}, 2);
    // layer norm over the last one or two dims
    for (int64_t first : {2, 1}) {
      std::vector<int64_t> nd(x.dims.begin() + first, x.dims.end());
      Host g = random_host(t, nd, 63), b = random_host(t, nd, 64);
      check("layernorm", [&](Network& n) {
        NormalizationParams p;
        p.kind = NormKind::kLayer; p.first_axis = first; p.has_scale = p.has_bias = true; p.epsilon = 1e-5;
        n.mark_output(n.add_normalization("ln", {input(n, x, "x"), input(n, g, "g"), input(n, b, "b")}, p)->output(), "y");
      }, {x, g, b}, 2);
    }
    // rows of a transformer (warp-per-row kernel, 24 values per lane) and wider than 1024 (block per row)
    for (int64_t width : {768, 200, 1500, 1024, 40, 36}) {
      Host rowsx = random_host(t, {37, width}, 160, -4, 4), g = random_host(t, {width}, 161), b = random_host(t, {width}, 162);
      check("layernorm width " + std::to_string(width), [&](Network& n) {
        NormalizationParams p;
        p.kind = NormKind::kLayer; p.first_axis = 1; p.has_scale = p.has_bias = true; p.epsilon = 1e-5;
        n.mark_output(n.add_normalization("ln", {input(n, rowsx, "x"), input(n, g, "g"), input(n, b, "b")}, p)->output(), "y");
      }, {rowsx, g, b}, 2);
    }
    Host img = random_host(t, {2, 6, 5, 4}, 65);
    Host mean = random_host(t, {6}, 66), var = random_host(t, {6}, 67, 0.5, 2), sc = random_host(t, {6}, 68),
         bi = random_host(t, {6}, 69);
    check("batchnorm", [&](Network& n) {
      NormalizationParams p;
      p.kind = NormKind::kBatch; p.has_scale = p.has_bias = true; p.epsilon = 1e-5;
      n.mark_output(n.add_normalization("bn", {input(n, img, "x"), input(n, mean, "m"), input(n, var, "v"),
                                               input(n, sc, "s"), input(n, bi, "b")}, p)->output(), "y");
    }, {img, mean, var, sc, bi}, 2);
    check("groupnorm", [&](Network& n) {
      NormalizationParams p;
      p.kind = NormKind::kGroup; p.groups = 3; p.has_scale = p.has_bias = true; p.epsilon = 1e-5;
      n.mark_output(n.add_normalization("gn", {input(n, img, "x"), input(n, sc, "s"), input(n, bi, "b")}, p)->output(), "y");
    }, {img, sc, bi}, 2);
  }
}

TEST(CudaCompute, Attention) {
  REQUIRE_GPU();
  struct Case { std::vector<int64_t> q, k, v; bool causal; int mask; };  // mask: 0 none, 1 bool, 2 float
  const Case cases[] = {{{2, 3, 17, 16}, {2, 3, 17, 16}, {2, 3, 17, 16}, false, 0},
                        {{2, 3, 40, 64}, {2, 3, 40, 64}, {2, 3, 40, 64}, true, 0},
                        {{1, 2, 9, 32}, {1, 2, 70, 32}, {1, 2, 70, 48}, false, 1},
                        {{2, 4, 33, 64}, {2, 4, 33, 64}, {2, 4, 33, 64}, false, 2},
                        {{3, 20, 128}, {3, 20, 128}, {3, 20, 128}, true, 0},
                        // Longer than one 64-key tile, ragged edges, padded head sizes (40, 96 -> 64,
                        // 128), Lq != Lk: in fp16/bf16 these take the tensor-core kernel.
                        {{2, 3, 130, 64}, {2, 3, 130, 64}, {2, 3, 130, 64}, true, 0},
                        {{1, 2, 50, 64}, {1, 2, 150, 64}, {1, 2, 150, 64}, true, 0},
                        {{2, 2, 77, 40}, {2, 2, 77, 40}, {2, 2, 77, 40}, false, 2},
                        {{1, 2, 100, 96}, {1, 2, 200, 96}, {1, 2, 200, 64}, false, 1},
                        {{1, 1, 65, 128}, {1, 1, 129, 128}, {1, 1, 129, 128}, false, 0},
                        // Tiles wholly below the causal diagonal (no element masked) and cut ones.
                        {{1, 2, 300, 128}, {1, 2, 300, 128}, {1, 2, 300, 128}, true, 0}};
  for (DataType t : kFloats)
    for (const Case& c : cases) {
      Host q = random_host(t, c.q, 71), k = random_host(t, c.k, 72), v = random_host(t, c.v, 73);
      std::vector<int64_t> md{c.q[c.q.size() - 2], c.k[c.k.size() - 2]};
      Host m = c.mask == 1 ? random_host(DataType::kBool, md, 74) : random_host(t, md, 75);
      if (c.mask == 1)  // keep the diagonal so no row is fully masked
        for (int64_t i = 0; i < md[0]; ++i) m.set(i * md[1] + (i % md[1]), 1);
      check("attention " + std::string(to_string(t)), [&](Network& n) {
        AttentionParams p;
        p.causal = c.causal;
        p.has_mask = c.mask != 0;
        std::vector<Tensor*> x{input(n, q, "q"), input(n, k, "k"), input(n, v, "v")};
        Tensor* mt = c.mask ? input(n, m, "m") : nullptr;
        n.mark_output(n.add_attention("sdpa", x[0], x[1], x[2], mt, p)->output(), "y");
      }, c.mask ? std::vector<Host>{q, k, v, m} : std::vector<Host>{q, k, v}, 3);
    }
}

// Rows with no key kept (a bool mask all false: zeros, as the CPU) and rows masked with a float
// mask's lowest finite value (Hugging Face's padding mask; in bf16 that is -3.39e38: a uniform
// average, not an overflow to -inf), on both kernels (head 64: tensor cores in fp16/bf16).
TEST(CudaCompute, AttentionFullyMaskedRows) {
  REQUIRE_GPU();
  for (DataType t : kFloats) {
    Host q = random_host(t, {1, 2, 70, 64}, 180), k = random_host(t, {1, 2, 70, 64}, 181),
         v = random_host(t, {1, 2, 70, 64}, 182);
    Host keep = random_host(DataType::kBool, {70, 70}, 183);
    for (int64_t j = 0; j < 70; ++j) keep.set(3 * 70 + j, 0);  // row 3 keeps nothing
    const double lowest = t == DataType::kBFloat16 ? -3.38953139e38 : t == DataType::kFloat16 ? -65504.0 : -3.4028e38;
    Host add = random_host(t, {70, 70}, 184);
    for (int64_t j = 0; j < 70; ++j) add.set(5 * 70 + j, lowest);  // row 5: every key at the lowest value
    for (const Host* m : {&keep, &add})
      check("fully masked rows " + std::string(to_string(t)), [&](Network& n) {
        AttentionParams p;
        p.has_mask = true;
        // Inputs in statements: argument evaluation order is unspecified, and inputs bind by order.
        Tensor* xq = input(n, q, "q");
        Tensor* xk = input(n, k, "k");
        Tensor* xv = input(n, v, "v");
        Tensor* xm = input(n, *m, "m");
        n.mark_output(n.add_attention("sdpa", xq, xk, xv, xm, p)->output(), "y");
      }, {q, k, v, *m}, 3);
  }
}

// q, k, v cut from one fused projection by slices and head permutes, read in place by the
// attention layer (builder views), its output written in the head-merged layout: head 16 takes
// the tensor-core kernel in fp16/bf16 (row stride 96, offsets 32 and 64 elements), head 12 the
// CUDA-core one (offsets not 16-byte aligned). The CPU reference runs the same rewritten network
// (builder_test checks that one against the unrewritten network).
TEST(CudaCompute, AttentionThroughViews) {
  REQUIRE_GPU();
  for (DataType t : kFloats)
    for (int64_t head : {16, 12}) {
      const int64_t heads = 2, width = heads * head;
      Host qkv = random_host(t, {2, 70, 3 * width}, 76);
      check("attention through views " + std::string(to_string(t)) + " head " + std::to_string(head), [&](Network& n) {
        add_qkv_attention(n, input(n, qkv, "qkv"), heads, head);
        ASSERT_EQ(passes::absorb_attention_views(n), 1u);
        passes::eliminate_dead_layers(n);
        for (Layer* l : n.layers()) ASSERT_FALSE(l->as<SliceParams>()) << "slice " << l->name() << " left";
      }, {qkv}, 3);
    }
}

// The builder's channels-last rewrite (cuDNN NHWC convolutions, transposes cancelled through the
// residual add) on a residual block, fp16 and bf16: strided, grouped and 1x1 (cuBLASLt) convolutions, fused
// bias + residual + relu epilogues on NHWC outputs, max and average pooling in NHWC.
TEST(CudaCompute, ChannelsLastConvolutions) {
  REQUIRE_GPU();
  for (DataType t : {DataType::kFloat16, DataType::kBFloat16}) {
    Host x = random_host(t, {2, 16, 9, 9}, 170);
    std::vector<Host> ws{random_host(t, {16, 16, 3, 3}, 171, -0.3, 0.3), random_host(t, {16, 4, 3, 3}, 172, -0.3, 0.3),
                         random_host(t, {32, 16, 1, 1}, 173, -0.3, 0.3), random_host(t, {24, 32, 1, 1}, 175, -0.3, 0.3),
                         random_host(t, {8, 24, 1, 1}, 176, -0.3, 0.3)};
    Host bias = random_host(t, {16}, 174), bias24 = random_host(t, {24}, 177), res24 = random_host(t, {2, 24, 5, 5}, 178);
    check("channels last " + std::string(to_string(t)), [&](Network& n) {
      auto constant = [&](const Host& h, const std::string& name) {
        return n.add_constant(name, Weights::copy_of(h.dtype, h.dims, h.bytes.data()))->output();
      };
      Tensor* in = input(n, x, "x");
      Tensor* res = input(n, res24, "res");
      // 3x3 + residual (the input itself) + relu: cuDNN, then one epilogue pass
      ConvolutionParams p3;
      p3.padding = {1};
      p3.activation = ActivationParams{ActivationOp::kRelu};
      p3.has_residual = true;
      Tensor* a = n.add_layer("c1", {in, constant(ws[0], "w1"), in}, p3)->output();
      p3.has_residual = false;
      ConvolutionParams grouped = p3;
      grouped.groups = 4;
      grouped.has_bias = true;
      grouped.activation.reset();
      Tensor* b = n.add_convolution("c2", a, constant(ws[1], "w2"), constant(bias, "b2"), grouped)->output();
      Tensor* r = n.add_activation("relu", n.add_elementwise("add", b, a, BinaryOp::kAdd)->output(), ActivationOp::kRelu)->output();
      // pooling runs channels last too (max, then average without the padding counted)
      PoolingParams pool;
      pool.kernel = {3, 3};
      pool.stride = {1, 1};
      pool.padding = {1, 1};
      r = n.add_pooling("maxpool", r, pool)->output();
      pool.type = PoolType::kAverage;
      pool.count_include_pad = false;
      r = n.add_pooling("avgpool", r, pool)->output();
      ConvolutionParams strided;
      strided.stride = {2, 2};
      Tensor* c = n.add_convolution("c3", r, constant(ws[2], "w3"), nullptr, strided)->output();
      // 1x1 with unit stride: cuBLASLt over rows of channels, bias + residual + relu in its
      // epilogue, silu after
      ConvolutionParams pointwise;
      pointwise.has_bias = true;
      pointwise.has_residual = true;
      pointwise.activation = ActivationParams{ActivationOp::kRelu};
      Tensor* d = n.add_layer("c4", {c, constant(ws[3], "w4"), constant(bias24, "b4"), res}, pointwise)->output();
      pointwise.has_bias = false;
      pointwise.has_residual = false;
      pointwise.activation = ActivationParams{ActivationOp::kSilu};
      n.mark_output(n.add_convolution("c5", d, constant(ws[4], "w5"), nullptr, pointwise)->output(), "y");
      passes::to_channels_last(n);
      passes::fold_constants(n);
      passes::eliminate_dead_layers(n);
    }, {x, res24}, 3);
  }
}

// kiln's NHWC depthwise kernel (KILN_CONV_TACTIC=kiln makes any other choice an error, so each case
// proves it ran): 8-channel vectors and single channels, unit and wider strides, dilation, odd sizes,
// bias + residual + activation fused in its store; fp32 (direct NHWC layers), fp16 and bf16.
TEST(CudaCompute, DepthwiseNhwcKernel) {
  REQUIRE_GPU();
  struct Case { int64_t n, c, h, w, k, stride, pad, dil; bool bias, residual; std::optional<ActivationOp> act; };
  const Case cases[] = {
      {2, 16, 9, 11, 3, 1, 1, 1, true, false, ActivationOp::kSilu},
      {1, 24, 14, 14, 7, 1, 3, 1, true, true, std::nullopt},
      {2, 8, 13, 10, 5, 2, 2, 1, true, false, ActivationOp::kHardSwish},
      {1, 12, 8, 9, 3, 2, 1, 1, false, false, ActivationOp::kRelu},   // 12 % 8 != 0: single channels
      {1, 3, 10, 10, 3, 1, 2, 2, true, true, ActivationOp::kGeluErf},  // dilation 2
      {3, 40, 5, 7, 3, 1, 0, 1, false, true, std::nullopt},            // no padding
      {1, 16, 3, 3, 7, 1, 3, 1, true, false, std::nullopt},            // window wider than the image
      {2, 20, 11, 13, 7, 2, 3, 1, true, true, ActivationOp::kSilu},    // 4-channel groups, partial 4x4 tiles
      {1, 36, 17, 6, 5, 1, 2, 1, false, false, ActivationOp::kRelu},   // 9 groups of 4 channels
  };
  for (const char* tactic : {"kiln", "kiln-tiled", "kiln-tiled-short", "kiln-tiled-pair", "kiln-tiled-pixel", "kiln-generic"})
  for (DataType t : kFloats)
    for (const Case& c : cases) {
      ::setenv("KILN_CONV_TACTIC", tactic, 1);
      const int64_t oh = (c.h + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
      const int64_t ow = (c.w + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
      Host x = random_host(t, {c.n, c.h, c.w, c.c}, 61), w = random_host(t, {c.c, c.k, c.k, 1}, 62, -0.5, 0.5);
      Host b = random_host(t, {c.c}, 63), r = random_host(t, {c.n, oh, ow, c.c}, 64);
      std::vector<Host> ins{x, w};
      if (c.bias) ins.push_back(b);
      if (c.residual) ins.push_back(r);
      check(std::string(tactic) + " depthwise " + std::string(to_string(t)) + " c" + std::to_string(c.c) + " k" + std::to_string(c.k),
            [&](Network& n) {
              const ConvolutionParams p = conv2d_params(c.stride, c.pad, c.dil, c.c, true, c.bias, c.residual,
                                                        c.act ? std::optional(ActivationParams{*c.act}) : std::nullopt);
              std::vector<Tensor*> in{input(n, x, "x"), input(n, w, "w")};
              if (c.bias) in.push_back(input(n, b, "b"));
              if (c.residual) in.push_back(input(n, r, "r"));
              n.mark_output(n.add_layer("dw", in, p)->output(), "y");
            },
            ins, 3);
    }
  ::unsetenv("KILN_CONV_TACTIC");
}

// Convolutions through cuDNN's graph API (KILN_CONV_TACTIC=cudnn-graph makes any other choice an
// error, so each case proves a graph engine ran; =cudnn-graph-fused also requires the bias,
// residual and activation fused into the graph, which cuDNN's runtime fusion does in NHWC): NHWC
// and NCHW, dense, grouped
// and depthwise, strides, dilation, 3-channel inputs, activations cuDNN fuses and one it does not
// (hardswish: a separate pass after the graph), fp16 and bf16.
TEST(CudaCompute, GraphApiConvolutions) {
  REQUIRE_GPU();
  struct Case {
    int64_t n, cin, cout, h, w, k, stride, pad, dil, groups;
    bool bias, residual;
    std::optional<ActivationOp> act;
    bool channels_last;
  };
  const Case cases[] = {
      {2, 16, 32, 9, 9, 3, 1, 1, 1, 1, true, true, ActivationOp::kRelu, true},
      {2, 32, 32, 8, 8, 3, 2, 1, 1, 4, true, false, ActivationOp::kSilu, true},       // grouped, strided
      {1, 24, 24, 14, 14, 7, 1, 3, 1, 24, true, false, std::nullopt, true},           // depthwise 7x7
      {2, 16, 16, 10, 10, 3, 1, 2, 2, 1, false, false, ActivationOp::kGeluErf, true},  // dilation 2
      {1, 8, 16, 12, 12, 5, 1, 2, 1, 1, true, false, ActivationOp::kHardSwish, true},  // not fusable
      {1, 3, 16, 16, 16, 3, 2, 1, 1, 1, true, false, ActivationOp::kRelu, true},      // 3-channel stem
      {2, 16, 8, 9, 7, 3, 1, 1, 1, 1, true, true, ActivationOp::kRelu, false},        // NCHW
      {1, 8, 8, 6, 6, 3, 1, 1, 1, 1, false, false, std::nullopt, true},               // no epilogue
  };
  for (const char* tactic : {"cudnn-graph", "cudnn-graph-fused"})
    for (DataType t : {DataType::kFloat16, DataType::kBFloat16})
      for (const Case& c : cases) {
        if (!c.channels_last && std::string(tactic) == "cudnn-graph-fused") continue;
        ::setenv("KILN_CONV_TACTIC", tactic, 1);
        const int64_t oh = (c.h + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
        const int64_t ow = (c.w + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
        const int64_t cg = c.cin / c.groups;
        Host x = c.channels_last ? random_host(t, {c.n, c.h, c.w, c.cin}, 81) : random_host(t, {c.n, c.cin, c.h, c.w}, 81);
        Host w = c.channels_last ? random_host(t, {c.cout, c.k, c.k, cg}, 82, -0.3, 0.3)
                                 : random_host(t, {c.cout, cg, c.k, c.k}, 82, -0.3, 0.3);
        Host b = random_host(t, {c.cout}, 83);
        Host r = c.channels_last ? random_host(t, {c.n, oh, ow, c.cout}, 84) : random_host(t, {c.n, c.cout, oh, ow}, 84);
        std::vector<Host> ins{x, w};
        if (c.bias) ins.push_back(b);
        if (c.residual) ins.push_back(r);
        check(std::string(tactic) + " " + std::string(to_string(t)) + " c" + std::to_string(c.cin) + "->" +
                  std::to_string(c.cout) + " k" + std::to_string(c.k) + " g" + std::to_string(c.groups),
              [&](Network& n) {
                const ConvolutionParams p =
                    conv2d_params(c.stride, c.pad, c.dil, c.groups, c.channels_last, c.bias, c.residual,
                                  c.act ? std::optional(ActivationParams{*c.act}) : std::nullopt);
                std::vector<Tensor*> in{input(n, x, "x"), input(n, w, "w")};
                if (c.bias) in.push_back(input(n, b, "b"));
                if (c.residual) in.push_back(input(n, r, "r"));
                n.mark_output(n.add_layer("conv", in, p)->output(), "y");
              },
              ins, 3);
      }
  ::unsetenv("KILN_CONV_TACTIC");
}

// Global pooling (adaptive to 1x1, or a window covering the plane) and long reductions over a
// non-innermost axis run as tiled column reductions, split across blocks when there are few outputs:
// batch 1 and 32, NHWC and NCHW, mean and max, planes up to 112x112.
TEST(CudaCompute, GlobalPoolingAndLongColumnReductions) {
  REQUIRE_GPU();
  for (DataType t : {DataType::kFloat32, DataType::kFloat16})
    for (int64_t batch : {1, 4})
      for (int64_t side : {7, 56, 112})
        for (bool nhwc : {true, false})
          for (PoolType type : {PoolType::kAverage, PoolType::kMax}) {
            const int64_t c = 24;
            Host x = random_host(t, nhwc ? std::vector<int64_t>{batch, side, side, c} : std::vector<int64_t>{batch, c, side, side}, 71);
            PoolingParams p;
            p.type = type;
            p.adaptive_output = {1, 1};
            p.channels_last = nhwc;
            check("global pool " + std::to_string(side),
                  [&](Network& n) { n.mark_output(n.add_pooling("p", input(n, x, "x"), p)->output(), "y"); }, {x}, 3);
            PoolingParams window;
            window.type = type;
            window.kernel = {side, side};
            window.stride = {side, side};
            window.padding = {0, 0};
            window.dilation = {1, 1};
            window.channels_last = nhwc;
            check("full-window pool " + std::to_string(side),
                  [&](Network& n) { n.mark_output(n.add_pooling("p", input(n, x, "x"), window)->output(), "y"); }, {x}, 3);
          }
  // Float sum/mean/max/min over a middle run of dims with 8-channel rows: the vectorized kernel,
  // split (few outputs) and not (many).
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16})
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMin})
      for (const std::vector<int64_t>& dims : {std::vector<int64_t>{2, 3000, 16}, std::vector<int64_t>{64, 5, 7, 40}}) {
        ReduceParams p;
        p.op = op;
        p.axes = dims.size() == 3 ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 2};
        p.keep_dims = true;
        Host x = random_host(t, dims, 73);
        check("vector column reduce", [&](Network& n) {
          n.mark_output(n.add_reduce("r", input(n, x, "x"), p)->output(), "y");
        }, {x}, 3);
      }
  // Contiguous rows with many outputs (a norm's mean over the hidden dim): one warp per row; rows
  // whose bytes are no multiple of 16 and few rows take the block-per-row kernel.
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16})
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kNorm2})
      for (const std::vector<int64_t>& dims :
           {std::vector<int64_t>{4, 512, 256}, std::vector<int64_t>{2048, 24}, std::vector<int64_t>{1030, 20}, std::vector<int64_t>{3, 4096}}) {
        ReduceParams p;
        p.op = op;
        p.axes = {-1};
        p.keep_dims = true;
        Host x = random_host(t, dims, 74);
        check("row reduce", [&](Network& n) { n.mark_output(n.add_reduce("r", input(n, x, "x"), p)->output(), "y"); },
              {x}, 3);
      }
  // Reductions over a middle axis with few outputs, every op: the split path and its combine.
  for (int op = 0; op < enum_count<ReduceOp>(); ++op) {
    ReduceParams p;
    p.op = ReduceOp(op);
    p.axes = {1};
    p.correction = 1;
    Host x = random_host(DataType::kFloat32, {2, 5000, 3}, 72, p.op == ReduceOp::kProd ? 0.999 : -2,
                         p.op == ReduceOp::kProd ? 1.001 : 2);
    check("long column reduce op " + std::to_string(op),
          [&](Network& n) { n.mark_output(n.add_reduce("r", input(n, x, "x"), p)->output(), "y"); }, {x}, 3);
  }
  // Whole-tensor and few-row reductions of long rows (a check like isinf(x).any(), a loss's mean):
  // the rows split over many blocks and reduce_finish combines their states, every op.
  // Rows of whole 16-byte vectors take the vectorized kernel, the odd length the element-wise one.
  for (int op = 0; op < enum_count<ReduceOp>(); ++op)
    for (int64_t length : {40000, 40001})
    for (const std::vector<int64_t>& axes : {std::vector<int64_t>{0, 1}, std::vector<int64_t>{1}}) {
      ReduceParams p;
      p.op = ReduceOp(op);
      p.axes = axes;
      p.correction = 1;
      if ((p.op == ReduceOp::kArgMax || p.op == ReduceOp::kArgMin) && axes.size() != 1) continue;
      const bool logical = p.op == ReduceOp::kAny || p.op == ReduceOp::kAll;
      Host x = random_host(DataType::kFloat32, {3, length}, 75, p.op == ReduceOp::kProd ? 0.9999 : -2,
                           p.op == ReduceOp::kProd ? 1.0001 : 2);
      if (logical) {  // one element decides: the last one of the tensor, found only if every chunk counts
        x = Host(DataType::kBool, {3, length});
        for (int64_t i = 0; i < x.numel(); ++i) x.set(i, p.op == ReduceOp::kAll);
        x.set(x.numel() - 1, p.op != ReduceOp::kAll);
      }
      check("long row reduce op " + std::to_string(op) + " length " + std::to_string(length) + " over " +
                std::to_string(axes.size()) + " axes",
            [&](Network& n) { n.mark_output(n.add_reduce("r", input(n, x, "x"), p)->output(), "y"); }, {x}, 3);
    }
}

// cuDNN's fused flash attention (cudnn_sdpa.h) against the CPU: KILN_ATTENTION_TACTIC=cudnn runs it
// wherever cuDNN takes the shape (cudnn_attention_executions() proves it ran, and that it did not
// where kiln must keep the shape), =auto (the default) lets each shape take the faster of it and
// kiln's kernel after checking cuDNN's output against kiln's. fp16 and bf16; head sizes 64 and
// 128; causal or not, with Lq below and above Lk; grouped-query heads (batch dims [B, Hk, group],
// keys broadcast over the group) and one shared key/value head; additive masks broadcast over
// the batch or over the heads. Kept on kiln's kernel: head size 20 (not a multiple of 8), fp32,
// bool masks.
TEST(CudaCompute, CudnnFusedAttention) {
  REQUIRE_GPU_RUN();  // asserts which kernel ran
  struct Case {
    std::vector<int64_t> q, k, v, mask;  // mask empty: none
    bool causal;
    bool cudnn;  // whether cuDNN must take it under KILN_ATTENTION_TACTIC=cudnn
    const char* what;
  };
  const Case cases[] = {
      {{2, 4, 96, 64}, {2, 4, 96, 64}, {2, 4, 96, 64}, {}, false, true, "head 64"},
      {{2, 3, 130, 128}, {2, 3, 130, 128}, {2, 3, 130, 128}, {}, true, true, "head 128, causal"},
      {{1, 4, 64, 128}, {1, 4, 200, 128}, {1, 4, 200, 128}, {}, false, true, "Lq < Lk"},
      {{1, 2, 150, 64}, {1, 2, 70, 64}, {1, 2, 70, 64}, {}, false, true, "Lq > Lk"},
      {{1, 2, 50, 64}, {1, 2, 150, 64}, {1, 2, 150, 64}, {}, true, true, "causal, Lq < Lk"},
      {{1, 2, 150, 128}, {1, 2, 50, 128}, {1, 2, 50, 128}, {}, true, true, "causal, Lq > Lk"},
      {{2, 2, 3, 80, 64}, {2, 2, 1, 80, 64}, {2, 2, 1, 80, 64}, {}, true, true, "grouped-query heads"},
      {{2, 4, 33, 128}, {2, 1, 33, 128}, {2, 1, 33, 128}, {}, false, true, "one key/value head"},
      {{2, 4, 77, 64}, {2, 4, 77, 64}, {2, 4, 77, 64}, {77, 77}, false, true, "mask over every batch"},
      {{2, 4, 77, 64}, {2, 4, 77, 64}, {2, 4, 77, 64}, {2, 1, 77, 77}, true, true, "mask per batch, causal"},
      {{2, 2, 40, 20}, {2, 2, 40, 20}, {2, 2, 40, 20}, {}, false, false, "head 20"},
  };
  for (const char* tactic : {"cudnn", "auto"})
    for (DataType t : {DataType::kFloat16, DataType::kBFloat16})
      for (const Case& c : cases) {
        ::setenv("KILN_ATTENTION_TACTIC", tactic, 1);
        Host q = random_host(t, c.q, 91), k = random_host(t, c.k, 92), v = random_host(t, c.v, 93),
             m = random_host(t, c.mask.empty() ? std::vector<int64_t>{1} : c.mask, 94);
        const std::string what = std::string(tactic) + " " + to_string(t) + " " + c.what;
        const uint64_t before = cudnn_attention_executions();
        check(what, [&](Network& n) {
          AttentionParams p;
          p.causal = c.causal;
          p.has_mask = !c.mask.empty();
          Tensor* xq = input(n, q, "q");
          Tensor* xk = input(n, k, "k");
          Tensor* xv = input(n, v, "v");
          Tensor* xm = p.has_mask ? input(n, m, "m") : nullptr;
          n.mark_output(n.add_attention("sdpa", xq, xk, xv, xm, p)->output(), "y");
        }, c.mask.empty() ? std::vector<Host>{q, k, v} : std::vector<Host>{q, k, v, m}, 3);
        if (std::string(tactic) != "cudnn") continue;
        // bf16 masks stay on kiln's kernel (see CudnnFusedAttentionFullyMaskedRows)
        if (c.cudnn && !(t == DataType::kBFloat16 && !c.mask.empty()))
          EXPECT_GT(cudnn_attention_executions(), before) << what << ": cuDNN's fused attention did not run it";
        else
          EXPECT_EQ(cudnn_attention_executions(), before) << what << ": cuDNN ran a shape it cannot take";
      }
  // fp32 and a bool mask stay on kiln's kernel even when cuDNN is forced.
  ::setenv("KILN_ATTENTION_TACTIC", "cudnn", 1);
  for (bool bool_mask : {false, true}) {
    const DataType t = bool_mask ? DataType::kFloat16 : DataType::kFloat32;
    Host q = random_host(t, {2, 2, 48, 64}, 95), k = random_host(t, {2, 2, 48, 64}, 96),
         v = random_host(t, {2, 2, 48, 64}, 97), keep = random_host(DataType::kBool, {48, 48}, 98);
    for (int64_t i = 0; i < 48; ++i) keep.set(i * 48 + i, 1);  // no row without a key
    const uint64_t before = cudnn_attention_executions();
    check(bool_mask ? "forced cudnn, bool mask" : "forced cudnn, fp32", [&](Network& n) {
      AttentionParams p;
      p.has_mask = bool_mask;
      Tensor* xq = input(n, q, "q");
      Tensor* xk = input(n, k, "k");
      Tensor* xv = input(n, v, "v");
      Tensor* xm = bool_mask ? input(n, keep, "m") : nullptr;
      n.mark_output(n.add_attention("sdpa", xq, xk, xv, xm, p)->output(), "y");
    }, bool_mask ? std::vector<Host>{q, k, v, keep} : std::vector<Host>{q, k, v}, 3);
    EXPECT_EQ(cudnn_attention_executions(), before) << (bool_mask ? "bool mask" : "fp32") << " ran on cuDNN";
  }
  ::unsetenv("KILN_ATTENTION_TACTIC");
}

// cuDNN's fused attention reading q, k and v in place from one fused projection (builder views:
// row stride 3 * heads * head, offsets of whole head blocks) and writing its output in the
// head-merged layout [B, L, H, D] (a permuted output), head 64 and 128, fp16 and bf16.
TEST(CudaCompute, CudnnFusedAttentionThroughViews) {
  REQUIRE_GPU_RUN();  // asserts which kernel ran
  ::setenv("KILN_ATTENTION_TACTIC", "cudnn", 1);
  for (DataType t : {DataType::kFloat16, DataType::kBFloat16})
    for (int64_t head : {64, 128}) {
      const int64_t heads = 2;
      Host qkv = random_host(t, {2, 70, 3 * heads * head}, 99);
      const std::string what = std::string("cudnn attention through views ") + to_string(t) + " head " +
                               std::to_string(head);
      const uint64_t before = cudnn_attention_executions();
      check(what, [&](Network& n) {
        add_qkv_attention(n, input(n, qkv, "qkv"), heads, head);
        ASSERT_EQ(passes::absorb_attention_views(n), 1u);
        passes::eliminate_dead_layers(n);
      }, {qkv}, 3);
      EXPECT_GT(cudnn_attention_executions(), before) << what << ": cuDNN's fused attention did not run it";
    }
  ::unsetenv("KILN_ATTENTION_TACTIC");
}

// Rows every key of which an additive mask hides: the mask's lowest finite value (Hugging Face's
// padding mask) gives the row's uniform average, -inf gives zeros (PyTorch's safe softmax, as
// kiln's kernel and the CPU), whichever kernel runs them.
TEST(CudaCompute, CudnnFusedAttentionFullyMaskedRows) {
  REQUIRE_GPU_RUN();  // asserts which kernel ran
  ::setenv("KILN_ATTENTION_TACTIC", "cudnn", 1);
  for (DataType t : {DataType::kFloat16, DataType::kBFloat16})
    for (bool infinite : {false, true}) {
      Host q = random_host(t, {1, 2, 70, 64}, 180), k = random_host(t, {1, 2, 70, 64}, 181),
           v = random_host(t, {1, 2, 70, 64}, 182), add = random_host(t, {70, 70}, 184);
      const double lowest = t == DataType::kBFloat16 ? -3.38953139e38 : -65504.0;
      for (int64_t j = 0; j < 70; ++j) add.set(5 * 70 + j, infinite ? -INFINITY : lowest);
      const std::string what =
          std::string("cudnn fully masked rows ") + to_string(t) + (infinite ? " -inf" : " lowest");
      const uint64_t before = cudnn_attention_executions();
      check(what, [&](Network& n) {
        AttentionParams p;
        p.has_mask = true;
        Tensor* xq = input(n, q, "q");
        Tensor* xk = input(n, k, "k");
        Tensor* xv = input(n, v, "v");
        Tensor* xm = input(n, add, "m");
        n.mark_output(n.add_attention("sdpa", xq, xk, xv, xm, p)->output(), "y");
      }, {q, k, v, add}, 3);
      // cuDNN zeroes a row masked at bf16's lowest (near the float range's end): bf16 masks are
      // declined and run on kiln's kernel; fp16's lowest is far from that end.
      if (t == DataType::kFloat16)
        EXPECT_GT(cudnn_attention_executions(), before) << what << ": cuDNN's fused attention did not run it";
      else
        EXPECT_EQ(cudnn_attention_executions(), before) << what << ": a bf16 mask ran on cuDNN";
    }
  ::unsetenv("KILN_ATTENTION_TACTIC");
}

}  // namespace
}  // namespace kiln::engine::cputest
