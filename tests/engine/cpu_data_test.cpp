// CPU kernels that move data: shuffle, concat, slice (symbolic start bound at run time), gather,
// scatter, pad (all modes), resize (nearest, nearest-exact, linear with align_corners both ways
// and given scales), fill/arange, shape, identity, constant and plugins.
#include <algorithm>

#include "cpu_test_util.h"

namespace kiln::engine::cputest {
namespace {

TEST(CpuShuffle, PermuteReshapePermute) {
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kInt8, DataType::kInt64}) {
    Host x = random_host(t, {2, 3, 4}, 1);
    ShuffleParams p;
    p.first_perm = {2, 0, 1};        // [4, 2, 3]
    p.reshape = Shape{4, 6};
    p.second_perm = {1, 0};          // [6, 4]
    auto make = [&](Network& net) {
      auto* in = net.add_input("x", t, {2, 3, 4});
      net.mark_output(net.add_shuffle("sh", in, p)->output(), "y");
    };
    auto out = run_both(make, {x});
    ASSERT_EQ(out[0].dims, (std::vector<int64_t>{6, 4}));
    std::vector<double> want;
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t c = 0; c < 4; ++c) {
        // y[r][c] = reshaped[c][r]; reshaped[c] flat r -> permuted [c][r/3][r%3] = x[r/3][r%3][c]
        want.push_back(x.get(((r / 3) * 3 + r % 3) * 4 + c));
      }
    expect_close(out[0], want, 0, 0, std::string("shuffle ") + to_string(t));
  }
}

// Every permutation of a 4-d tensor larger than the copy's 32x32 tiles (channels-last conversions
// among them: the tiled transpose path), for each element size.
TEST(CpuShuffle, EveryPermutationAcrossTiles) {
  // Tiles, and short last dims that move as one wider element when they stay last (2 floats, 4
  // halves, 2 int8s; 3 does not widen).
  for (const std::vector<int64_t>& dims : std::vector<std::vector<int64_t>>{{2, 5, 37, 40}, {3, 7, 35, 2}, {2, 9, 33, 4},
                                                                          {2, 3, 40, 3}})
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kInt8, DataType::kInt64}) {
    Host x = random_host(t, dims, 3);
    std::vector<int64_t> perm{0, 1, 2, 3};
    do {
      ShuffleParams p;
      p.first_perm = perm;
      auto make = [&](Network& net) {
        auto* in = net.add_input("x", t, shape_of(dims));
        net.mark_output(net.add_shuffle("sh", in, p)->output(), "y");
      };
      auto out = run_both(make, {x});
      std::vector<int64_t> od(4), in_strides{dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1};
      for (int d = 0; d < 4; ++d) od[d] = dims[perm[d]];
      std::vector<double> want;
      for (int64_t a = 0; a < od[0]; ++a)
        for (int64_t b = 0; b < od[1]; ++b)
          for (int64_t c = 0; c < od[2]; ++c)
            for (int64_t e = 0; e < od[3]; ++e)
              want.push_back(x.get(a * in_strides[perm[0]] + b * in_strides[perm[1]] + c * in_strides[perm[2]] +
                                   e * in_strides[perm[3]]));
      expect_close(out[0], want, 0, 0,
                   std::string("permute ") + to_string(t) + " " + std::to_string(perm[0]) + std::to_string(perm[1]) +
                       std::to_string(perm[2]) + std::to_string(perm[3]));
    } while (std::next_permutation(perm.begin(), perm.end()));
  }
}

TEST(CpuConcat, AxesAndEmpty) {
  for (int64_t axis : {0, 1, 2}) {
    std::vector<int64_t> a{2, 3, 4}, b{2, 3, 4}, c{2, 3, 4};
    a[axis] = 1;
    b[axis] = 0;
    c[axis] = 2;
    Host ha = random_host(DataType::kFloat32, a, 1), hb = random_host(DataType::kFloat32, b, 2), hc = random_host(DataType::kFloat32, c, 3);
    auto make = [&](Network& net) {
      auto* x = net.add_input("a", DataType::kFloat32, shape_of(a));
      auto* y = net.add_input("b", DataType::kFloat32, shape_of(b));
      auto* z = net.add_input("c", DataType::kFloat32, shape_of(c));
      net.mark_output(net.add_concat("cat", {x, y, z}, axis)->output(), "o");
    };
    auto out = run_both(make, {ha, hb, hc});
    std::vector<double> want;
    for (int64_t i = 0; i < out[0].numel(); ++i) {
      auto idx = unravel(i, out[0].dims);
      if (idx[axis] < 1) want.push_back(ha.get(ravel(idx, a)));
      else { idx[axis] -= 1; want.push_back(hc.get(ravel(idx, c))); }
    }
    expect_close(out[0], want, 0, 0, "concat axis " + std::to_string(axis));
  }
}

TEST(CpuSlice, StridedNegativeAndSymbolicStart) {
  Host x = random_host(DataType::kFloat32, {5, 8}, 1);
  {
    SliceParams p{Shape{0, 7}, Shape{3, 3}, Shape{2, -3}};  // rows 0,2,4; cols 7,4,1
    auto make = [&](Network& net) {
      auto* in = net.add_input("x", DataType::kFloat32, {5, 8});
      net.mark_output(net.add_slice("sl", in, p)->output(), "y");
    };
    auto out = run_both(make, {x});
    std::vector<double> want;
    for (int64_t r : {0, 2, 4})
      for (int64_t c : {7, 4, 1}) want.push_back(x.get(r * 8 + c));
    expect_close(out[0], want, 0, 0, "strided slice");
  }
  // x[:, s - 3 : s] with s = the dynamic width: start is symbolic.
  for (int64_t w : {3, 6, 9}) {
    auto s = DimExpr::symbol("s");
    Host y = random_host(DataType::kInt32, {2, w}, 2);
    auto make = [&](Network& net) {
      auto* in = net.add_input("x", DataType::kInt32, {2, s});
      net.mark_output(net.add_slice("tail", in, SliceParams{Shape{0, s - 3}, Shape{2, 3}, Shape{1, 1}})->output(), "y");
    };
    auto out = run_both(make, {y}, {{"s", {3, 6, 16}}});
    std::vector<double> want;
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t c = w - 3; c < w; ++c) want.push_back(y.get(r * w + c));
    expect_close(out[0], want, 0, 0, "symbolic slice w=" + std::to_string(w));
  }
}

TEST(CpuGather, AxisAndElements) {
  Host data = random_host(DataType::kFloat16, {4, 5, 3}, 1);
  Host idx = host_of(DataType::kInt64, {2, 2}, {4, 0, -1, 2});
  auto make = [&](Network& net) {
    auto* d = net.add_input("d", DataType::kFloat16, {4, 5, 3});
    auto* i = net.add_input("i", DataType::kInt64, {2, 2});
    net.mark_output(net.add_gather("g", d, i, GatherMode::kAxis, 1)->output(), "y");
  };
  auto out = run_both(make, {data, idx});
  ASSERT_EQ(out[0].dims, (std::vector<int64_t>{4, 2, 2, 3}));
  std::vector<double> want;
  for (int64_t a = 0; a < 4; ++a)
    for (int64_t j : {4, 0, 4, 2})
      for (int64_t c = 0; c < 3; ++c) want.push_back(data.get((a * 5 + j) * 3 + c));
  expect_close(out[0], want, 0, 0, "index_select");

  Host e_idx = host_of(DataType::kInt32, {2, 2, 3}, {0, 1, 2, 3, 4, 0, 1, 1, 1, 2, 2, 2});
  auto make2 = [&](Network& net) {
    auto* d = net.add_input("d", DataType::kFloat16, {4, 5, 3});
    auto* i = net.add_input("i", DataType::kInt32, {2, 2, 3});
    net.mark_output(net.add_gather("g", d, i, GatherMode::kElements, 1)->output(), "y");
  };
  auto o2 = run_both(make2, {data, e_idx});
  std::vector<double> w2;
  for (int64_t i = 0; i < 12; ++i) {
    auto k = unravel(i, {2, 2, 3});
    w2.push_back(data.get((k[0] * 5 + e_idx.geti(i)) * 3 + k[2]));
  }
  expect_close(o2[0], w2, 0, 0, "torch.gather");

  Host bad = host_of(DataType::kInt64, {2, 2}, {5, 0, 0, 0});
  Network net;
  make(net);
  EXPECT_THROW(run_direct(net, {data, bad}), ShapeError);
}

TEST(CpuScatter, ElementsAndAxisWithAdd) {
  Host data = random_host(DataType::kFloat32, {3, 4}, 1);
  Host idx = host_of(DataType::kInt64, {2, 4}, {0, 1, 2, 0, 2, 2, 1, 1});
  Host upd = random_host(DataType::kFloat32, {2, 4}, 2);
  for (ScatterReduce red : {ScatterReduce::kNone, ScatterReduce::kAdd}) {
    auto make = [&](Network& net) {
      auto* d = net.add_input("d", DataType::kFloat32, {3, 4});
      auto* i = net.add_input("i", DataType::kInt64, {2, 4});
      auto* u = net.add_input("u", DataType::kFloat32, {2, 4});
      net.mark_output(net.add_scatter("s", d, i, u, ScatterParams{GatherMode::kElements, 0, red})->output(), "y");
    };
    auto out = run_both(make, {data, idx, upd});
    auto want = data.values();
    for (int64_t i = 0; i < 8; ++i) {
      int64_t o = idx.geti(i) * 4 + i % 4;
      want[size_t(o)] = red == ScatterReduce::kAdd ? want[size_t(o)] + upd.get(i) : upd.get(i);
    }
    expect_close(out[0], want, 1e-6, 1e-6, "scatter elements");
  }
  Host rows = host_of(DataType::kInt64, {2}, {2, 0});
  Host upd2 = random_host(DataType::kFloat32, {2, 4}, 3);
  auto make = [&](Network& net) {
    auto* d = net.add_input("d", DataType::kFloat32, {3, 4});
    auto* i = net.add_input("i", DataType::kInt64, {2});
    auto* u = net.add_input("u", DataType::kFloat32, {2, 4});
    net.mark_output(net.add_scatter("s", d, i, u, ScatterParams{GatherMode::kAxis, 0, ScatterReduce::kAdd})->output(), "y");
  };
  auto out = run_both(make, {data, rows, upd2});
  auto want = data.values();
  for (int64_t c = 0; c < 4; ++c) { want[size_t(8 + c)] += upd2.get(c); want[size_t(c)] += upd2.get(4 + c); }
  expect_close(out[0], want, 1e-6, 1e-6, "index_add rows");
}

TEST(CpuScatter, MaxMinAndProductWithNaNAndIntegers) {
  Host idx = host_of(DataType::kInt64, {2, 4}, {0, 1, 2, 0, 2, 2, 1, 1});
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kInt64, DataType::kInt8})
    for (ScatterReduce red : {ScatterReduce::kMax, ScatterReduce::kMin, ScatterReduce::kMul}) {
      Host data = random_host(t, {3, 4}, 4), upd = random_host(t, {2, 4}, 5);
      if (t == DataType::kFloat32) upd.set(5, std::nan(""));  // lands on row 2, column 1
      auto make = [&](Network& net) {
        auto* d = net.add_input("d", t, {3, 4});
        auto* i = net.add_input("i", DataType::kInt64, {2, 4});
        auto* u = net.add_input("u", t, {2, 4});
        net.mark_output(net.add_scatter("s", d, i, u, ScatterParams{GatherMode::kElements, 0, red})->output(), "y");
      };
      auto out = run_both(make, {data, idx, upd});
      auto want = data.values();
      for (int64_t i = 0; i < 8; ++i) {
        double& w = want[size_t(idx.geti(i) * 4 + i % 4)];
        const double v = upd.get(i);
        if (red == ScatterReduce::kMul) w *= v;
        else if (std::isnan(v) || std::isnan(w)) w = std::nan("");
        else w = red == ScatterReduce::kMax ? std::max(w, v) : std::min(w, v);
      }
      if (t == DataType::kFloat32) EXPECT_TRUE(std::isnan(want[2 * 4 + 1]));  // expect_close matches NaN to NaN
      expect_close(out[0], want, t == DataType::kFloat16 ? 2e-3 : 1e-6, 1e-6, enum_name(red));
    }
}

TEST(CpuPad, AllModes) {
  Host x = random_host(DataType::kFloat32, {2, 3, 4}, 1);
  for (PadMode mode : {PadMode::kConstant, PadMode::kReflect, PadMode::kReplicate, PadMode::kCircular}) {
    PadParams p;
    p.pre = {0, 2, -1};
    p.post = {0, 1, 3};
    p.mode = mode;
    p.value = 7.5;
    auto make = [&](Network& net) {
      auto* in = net.add_input("x", DataType::kFloat32, {2, 3, 4});
      net.mark_output(net.add_pad("pad", in, p)->output(), "y");
    };
    auto out = run_both(make, {x});
    ASSERT_EQ(out[0].dims, (std::vector<int64_t>{2, 6, 6}));
    std::vector<double> want;
    for (int64_t i = 0; i < out[0].numel(); ++i) {
      auto idx = unravel(i, out[0].dims);
      std::vector<int64_t> s{idx[0], idx[1] - 2, idx[2] + 1};
      const int64_t n[3] = {2, 3, 4};
      bool outside = false;
      for (int d = 1; d < 3; ++d) {
        if (s[d] >= 0 && s[d] < n[d]) continue;
        switch (mode) {
          case PadMode::kConstant: outside = true; break;
          case PadMode::kReflect: s[d] = s[d] < 0 ? -s[d] : 2 * (n[d] - 1) - s[d]; break;
          case PadMode::kReplicate: s[d] = std::clamp<int64_t>(s[d], 0, n[d] - 1); break;
          case PadMode::kCircular: s[d] = ((s[d] % n[d]) + n[d]) % n[d]; break;
        }
      }
      want.push_back(outside ? 7.5 : x.get(ravel(s, x.dims)));
    }
    expect_close(out[0], want, 0, 0, "pad mode " + std::to_string(int(mode)));
  }
}

// PyTorch 1.13 F.interpolate results on x = arange(1, 5).view(1, 1, 1, 4) -> width 6 (and 3),
// worked out by hand from PyTorch's index formulas.
TEST(CpuResize, NearestAndLinearRules) {
  Host x = host_of(DataType::kFloat32, {1, 1, 1, 4}, {1, 2, 3, 4});
  auto run = [&](ResizeMode mode, bool ac, int64_t w, std::vector<double> scales) {
    Network net;
    auto* in = net.add_input("x", DataType::kFloat32, {1, 1, 1, 4});
    ResizeParams p;
    p.mode = mode;
    p.align_corners = ac;
    p.output_spatial = Shape{1, w};
    p.scales = scales;
    net.mark_output(net.add_resize("rs", in, p)->output(), "y");
    return run_direct(net, {x})[0];
  };
  // nearest: src = floor(dst * 4/6) -> 0,0,1,2,2,3
  expect_close(run(ResizeMode::kNearest, false, 6, {}), {1, 1, 2, 3, 3, 4}, 0, 0, "nearest");
  // nearest-exact: floor((dst + 0.5) * 4/6) -> 0,1,1,2,3,3
  expect_close(run(ResizeMode::kNearestExact, false, 6, {}), {1, 2, 2, 3, 4, 4}, 0, 0, "nearest-exact");
  // nearest with a given scale 1.5 (same as size here), downsample 4 -> 3 with scale 0.75:
  // src = floor(dst / 0.75) -> 0, 1, 2
  expect_close(run(ResizeMode::kNearest, false, 3, {1.0, 0.75}), {1, 2, 3}, 0, 0, "nearest scale");
  // linear, align_corners=False: src = (dst + 0.5) * 4/6 - 0.5 clamped at 0
  std::vector<double> lin;
  for (int d = 0; d < 6; ++d) {
    double s = std::max((d + 0.5) * 4.0 / 6.0 - 0.5, 0.0);
    int64_t i0 = int64_t(s), i1 = std::min<int64_t>(i0 + 1, 3);
    lin.push_back((1 - (s - i0)) * (i0 + 1) + (s - i0) * (i1 + 1));
  }
  expect_close(run(ResizeMode::kLinear, false, 6, {}), lin, 1e-6, 1e-6, "linear");
  // align_corners=True: src = dst * 3/5 -> values 1 + 0.6*dst
  expect_close(run(ResizeMode::kLinear, true, 6, {}), {1, 1.6, 2.2, 2.8, 3.4, 4}, 1e-6, 1e-6, "linear ac");
}

TEST(CpuResize, Bilinear2dAgainstSeparableReference) {
  for (DataType t : float_types())
    for (bool ac : {false, true}) {
      Host x = random_host(t, {2, 3, 5, 4}, 3);
      auto make = [&](Network& net) {
        auto* in = net.add_input("x", t, {2, 3, 5, 4});
        ResizeParams p;
        p.mode = ResizeMode::kLinear;
        p.align_corners = ac;
        p.output_spatial = Shape{8, 7};
        net.mark_output(net.add_resize("rs", in, p)->output(), "y");
      };
      auto out = run_both(make, {x});
      auto taps = [&](int64_t in, int64_t outn, int64_t o) {
        double s = ac ? (outn > 1 ? double(in - 1) / (outn - 1) * o : 0) : std::max((o + 0.5) * in / outn - 0.5, 0.0);
        int64_t i0 = std::min<int64_t>(int64_t(s), in - 1), i1 = std::min<int64_t>(i0 + 1, in - 1);
        return std::tuple<int64_t, int64_t, double>{i0, i1, s - i0};
      };
      std::vector<double> want;
      for (int64_t pl = 0; pl < 6; ++pl)
        for (int64_t h = 0; h < 8; ++h)
          for (int64_t w = 0; w < 7; ++w) {
            auto [h0, h1, lh] = taps(5, 8, h);
            auto [w0, w1, lw] = taps(4, 7, w);
            auto at = [&](int64_t a, int64_t b) { return x.get(pl * 20 + a * 4 + b); };
            want.push_back((1 - lh) * ((1 - lw) * at(h0, w0) + lw * at(h0, w1)) + lh * ((1 - lw) * at(h1, w0) + lw * at(h1, w1)));
          }
      expect_close(out[0], want, 2 * tolerance(t), 2 * tolerance(t), std::string("bilinear ") + to_string(t));
    }
}

TEST(CpuMisc, FillArangeShapeIdentityConstant) {
  {
    Network net;
    FillParams f;
    f.op = FillOp::kArange;
    f.dims = Shape{5};
    f.dtype = DataType::kInt64;
    f.start = 3;
    f.step = -2;
    net.mark_output(net.add_fill("ar", f)->output(), "a");
    FillParams c;
    c.dims = Shape{2, 2};
    c.dtype = DataType::kBFloat16;
    c.value = 1.5;
    net.mark_output(net.add_fill("full", c)->output(), "c");
    auto* x = net.add_input("x", DataType::kInt8, {DimExpr::symbol("n"), 3});
    net.mark_output(net.add_shape("shape", x)->output(), "s");
    net.mark_output(net.add_identity("id", x)->output(), "i");
    Host w = random_host(DataType::kFloat16, {3}, 9);
    net.mark_output(constant(net, w), "w");
    Host hx = random_host(DataType::kInt8, {4, 3}, 1);
    auto out = run_direct(net, {hx});
    EXPECT_EQ(out[0].values(), (std::vector<double>{3, 1, -1, -3, -5}));
    EXPECT_EQ(out[1].values(), (std::vector<double>{1.5, 1.5, 1.5, 1.5}));
    EXPECT_EQ(out[2].values(), (std::vector<double>{4, 3}));
    EXPECT_EQ(out[3].values(), hx.values());
    EXPECT_EQ(out[4].values(), w.values());
  }
}

TEST(CpuPlugin, CallsTheRegisteredCpuKernel) {
  PluginKernel k;
  k.infer = [](const std::vector<const Tensor*>& in, const std::string&) {
    return std::vector<std::pair<DataType, Shape>>{{in[0]->dtype(), in[0]->shape()}};
  };
  k.cpu = [](const std::vector<TensorView>& in, const std::vector<TensorView>& out, const std::string& attr) {
    const float add = std::stof(attr);
    for (int64_t i = 0; i < in[0].numel(); ++i) out[0].as<float>()[i] = in[0].as<float>()[i] * 2 + add;
  };
  register_plugin("cpu_test_double_plus", k);
  Host x = random_host(DataType::kFloat32, {7}, 1);
  auto make = [&](Network& net) {
    auto* in = net.add_input("x", DataType::kFloat32, {7});
    net.mark_output(net.add_plugin("p", {in}, PluginParams{"cpu_test_double_plus", "0.5"})->output(), "y");
  };
  auto out = run_both(make, {x});
  std::vector<double> want;
  for (int64_t i = 0; i < 7; ++i) want.push_back(float(x.get(i)) * 2 + 0.5);
  expect_close(out[0], want, 1e-6, 1e-6, "plugin");
}

}  // namespace
}  // namespace kiln::engine::cputest
