// CPU kernels of reductions, softmax, normalizations, cumulative sum and top-k against float64
// references, over axis sets (adjacent, scattered, all, none), keep_dims, dtypes and empty dims.
#include "cpu_test_util.h"

namespace kiln::engine::cputest {
namespace {

// Reference reduction: groups input elements by their kept coordinates.
std::vector<double> ref_reduce(const ReduceParams& p, const Host& x, int64_t out_numel) {
  const auto& dims = x.dims;
  std::vector<std::vector<double>> groups(static_cast<size_t>(out_numel));
  for (int64_t i = 0; i < x.numel(); ++i) {
    auto idx = unravel(i, dims);
    int64_t o = 0;
    for (size_t d = 0; d < dims.size(); ++d)
      if (std::find(p.axes.begin(), p.axes.end(), int64_t(d)) == p.axes.end()) o = o * dims[d] + idx[d];
    groups[size_t(o)].push_back(x.get(i));
  }
  std::vector<double> r;
  for (auto& g : groups) {
    double n = double(g.size()), s = 0, v = 0, pr = 1;
    for (double e : g) { s += e; pr *= e; }
    for (double e : g) v += (e - s / n) * (e - s / n);
    switch (p.op) {
      case ReduceOp::kSum: r.push_back(s); break;
      case ReduceOp::kMean: r.push_back(s / n); break;
      case ReduceOp::kMax: r.push_back(*std::max_element(g.begin(), g.end())); break;
      case ReduceOp::kMin: r.push_back(*std::min_element(g.begin(), g.end())); break;
      case ReduceOp::kProd: r.push_back(pr); break;
      case ReduceOp::kAny: r.push_back(std::any_of(g.begin(), g.end(), [](double e) { return e != 0; })); break;
      case ReduceOp::kAll: r.push_back(std::all_of(g.begin(), g.end(), [](double e) { return e != 0; })); break;
      case ReduceOp::kArgMax: r.push_back(double(std::max_element(g.begin(), g.end()) - g.begin())); break;
      case ReduceOp::kArgMin: r.push_back(double(std::min_element(g.begin(), g.end()) - g.begin())); break;
      case ReduceOp::kVar: r.push_back(v / (n - p.correction)); break;
      case ReduceOp::kNorm2: {
        double q = 0;
        for (double e : g) q += e * e;
        r.push_back(std::sqrt(q));
        break;
      }
    }
  }
  return r;
}

TEST(CpuReduce, OpsAxesDtypes) {
  const std::vector<std::vector<int64_t>> axis_sets = {{1}, {0, 1}, {0, 2}, {2}, {0, 1, 2}, {1, 2}};
  const std::vector<DataType> types = {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16, DataType::kInt64,
                                       DataType::kInt32, DataType::kBool};
  for (int opi = 0; opi < enum_count<ReduceOp>(); ++opi) {
    const ReduceOp op = ReduceOp(opi);
    for (DataType t : types) {
      const bool logical = op == ReduceOp::kAny || op == ReduceOp::kAll;
      if (t == DataType::kBool && !logical) continue;
      if (!is_floating(t) && (op == ReduceOp::kVar || op == ReduceOp::kNorm2 || op == ReduceOp::kMean)) continue;
      for (const auto& axes : axis_sets)
        for (bool keep : {false, true}) {
          const bool arg = op == ReduceOp::kArgMax || op == ReduceOp::kArgMin;
          if (arg && axes.size() != 1) continue;
          std::vector<int64_t> dims{3, 4, 5};
          Host x = random_host(t, dims, 21 + uint32_t(opi), op == ReduceOp::kProd ? 0.5 : -2, op == ReduceOp::kProd ? 1.5 : 2);
          if (op == ReduceOp::kProd && !is_floating(t))
            for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 1 + (i % 3 == 0));
          ReduceParams p;
          p.op = op;
          p.axes = axes;
          p.keep_dims = keep;
          p.correction = op == ReduceOp::kVar ? 1 : 0;
          auto make = [&](Network& net) {
            auto* in = net.add_input("x", t, shape_of(dims));
            net.mark_output(net.add_reduce("r", in, p)->output(), "y");
          };
          auto out = run_both(make, {x});
          auto want = ref_reduce(p, x, out[0].numel());
          const std::string what = "reduce " + std::to_string(opi) + " " + to_string(t) + " axes " + std::to_string(axes.size());
          if (arg || !is_floating(out[0].dtype)) {
            // random k/32 values may tie: argmax must pick the first occurrence, which the reference does
            expect_close(out[0], want, 0, 0, what);
          } else {
            double tol = 4 * tolerance(out[0].dtype) + (op == ReduceOp::kProd ? 1e-4 : 0);
            expect_close(out[0], want, tol, tol, what);
          }
        }
    }
  }
}

// Sums and means over a middle axis whose rows are longer than one unit of work (global pooling
// of a wide channels-last image: [N, H*W, C] with C above the 512 channels a unit takes), and over
// a long middle axis with fewer units than threads (a batch-1 squeeze-excite mean: the rows are
// split between threads and their partial sums added).
TEST(CpuReduce, MiddleAxisOverLongRows) {
  for (const std::vector<int64_t>& dims : {std::vector<int64_t>{2, 7, 1100}, std::vector<int64_t>{1, 12545, 32},
                                           std::vector<int64_t>{1, 300, 1030}})
  for (DataType t : {DataType::kFloat32, DataType::kBFloat16})
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMean}) {
      Host x = random_host(t, dims, 31);
      ReduceParams p;
      p.op = op;
      p.axes = {1};
      auto make = [&](Network& net) {
        auto* in = net.add_input("x", t, shape_of(dims));
        net.mark_output(net.add_reduce("r", in, p)->output(), "y");
      };
      auto out = run_both(make, {x});
      const double tol = 4 * tolerance(out[0].dtype);
      expect_close(out[0], ref_reduce(p, x, out[0].numel()), tol, tol,
                   std::string("middle axis ") + to_string(t) + (op == ReduceOp::kMean ? " mean" : " sum"));
    }
}

TEST(CpuReduce, EmptyAndNan) {
  ReduceParams p;
  p.op = ReduceOp::kSum;
  p.axes = {1};
  Network net;
  auto* in = net.add_input("x", DataType::kFloat32, {3, 0});
  net.mark_output(net.add_reduce("s", in, p)->output(), "y");
  auto out = run_direct(net, {Host(DataType::kFloat32, {3, 0})});
  EXPECT_EQ(out[0].values(), (std::vector<double>{0, 0, 0}));
  Host x = host_of(DataType::kFloat32, {2, 3}, {1, NAN, 2, 3, 1, 3});
  for (ReduceOp op : {ReduceOp::kMax, ReduceOp::kArgMax}) {
    Network n2;
    auto* i2 = n2.add_input("x", DataType::kFloat32, {2, 3});
    ReduceParams q;
    q.op = op;
    q.axes = {1};
    n2.mark_output(n2.add_reduce("m", i2, q)->output(), "y");
    auto o = run_direct(n2, {x});
    if (op == ReduceOp::kMax) { EXPECT_TRUE(std::isnan(o[0].get(0))); EXPECT_EQ(o[0].get(1), 3); }
    else EXPECT_EQ(o[0].values(), (std::vector<double>{1, 0}));  // NaN is the max; first of the tied 3s
  }
}

// NaN and floats beyond int64's range through every float reduction, and integer sums/products
// that overflow: float results are never converted to int64 on the way (undefined behaviour that
// UBSan reports in `make sanitize`), integers wrap around as in PyTorch.
TEST(CpuReduce, NanHugeAndIntegerWrap) {
  Host x = host_of(DataType::kFloat32, {2, 2}, {NAN, 1, 1e30, -3e38});
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMax, ReduceOp::kMin}) {
    Network net;
    ReduceParams p;
    p.op = op;
    p.axes = {1};
    net.mark_output(net.add_reduce("r", net.add_input("x", DataType::kFloat32, {2, 2}), p)->output(), "y");
    auto o = run_direct(net, {x});
    EXPECT_TRUE(std::isnan(o[0].get(0))) << int(op);
    const double want = op == ReduceOp::kSum ? 1e30 - 3e38 : op == ReduceOp::kProd ? -INFINITY
                        : op == ReduceOp::kMax ? 1e30 : -3e38;
    EXPECT_FLOAT_EQ(o[0].get(1), want) << int(op);
  }
  const int64_t big = std::numeric_limits<int64_t>::max();
  Host i(DataType::kInt64, {1, 2});
  const int64_t values[2] = {big, 2};
  std::memcpy(i.bytes.data(), values, sizeof values);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kProd}) {
    Network net;
    ReduceParams p;
    p.op = op;
    p.axes = {1};
    net.mark_output(net.add_reduce("r", net.add_input("x", DataType::kInt64, {1, 2}), p)->output(), "y");
    auto o = run_direct(net, {i});
    const int64_t want = op == ReduceOp::kSum ? std::numeric_limits<int64_t>::min() + 1 : -2;
    EXPECT_EQ(o[0].geti(0), want) << int(op);
  }
}

TEST(CpuSoftmax, AxesAndLog) {
  for (DataType t : float_types())
    for (int64_t axis : {0, 1, 2, -1})
      for (bool log : {false, true}) {
        std::vector<int64_t> dims{3, 4, 6};
        Host x = random_host(t, dims, 31, -4, 4);
        auto make = [&](Network& net) {
          auto* in = net.add_input("x", t, shape_of(dims));
          net.mark_output(net.add_softmax("sm", in, axis, log)->output(), "y");
        };
        auto out = run_both(make, {x});
        const int64_t a = axis < 0 ? axis + 3 : axis;
        std::vector<double> want(static_cast<size_t>(x.numel()));
        for (int64_t i = 0; i < x.numel(); ++i) {
          auto idx = unravel(i, dims);
          double mx = -INFINITY, z = 0;
          for (int64_t j = 0; j < dims[a]; ++j) { idx[a] = j; mx = std::max(mx, x.get(ravel(idx, dims))); }
          for (int64_t j = 0; j < dims[a]; ++j) { idx[a] = j; z += std::exp(x.get(ravel(idx, dims)) - mx); }
          double v = x.get(i) - mx;
          want[size_t(i)] = log ? v - std::log(z) : std::exp(v) / z;
        }
        double tol = 2 * tolerance(t);
        expect_close(out[0], want, tol, tol, std::string("softmax ") + to_string(t));
      }
}

TEST(CpuNormalization, LayerBatchGroup) {
  for (DataType t : float_types()) {
    std::vector<int64_t> dims{2, 6, 3, 4};
    Host x = random_host(t, dims, 41);
    // layer norm over the last two dims with scale and bias
    {
      Host s = random_host(t, {3, 4}, 42), b = random_host(t, {3, 4}, 43);
      NormalizationParams p;
      p.first_axis = 2;
      p.has_scale = p.has_bias = true;
      p.epsilon = 1e-5;
      auto make = [&](Network& net) {
        auto* in = net.add_input("x", t, shape_of(dims));
        net.mark_output(net.add_normalization("ln", {in, constant(net, s, "s"), constant(net, b, "b")}, p)->output(), "y");
      };
      auto out = run_both(make, {x});
      std::vector<double> want;
      for (int64_t r = 0; r < 12; ++r) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < 12; ++i) m += x.get(r * 12 + i) / 12;
        for (int64_t i = 0; i < 12; ++i) v += std::pow(x.get(r * 12 + i) - m, 2) / 12;
        for (int64_t i = 0; i < 12; ++i) want.push_back((x.get(r * 12 + i) - m) / std::sqrt(v + 1e-5) * s.get(i) + b.get(i));
      }
      expect_close(out[0], want, 4 * tolerance(t), 4 * tolerance(t), std::string("layer norm ") + to_string(t));
    }
    // batch norm (inference) with scale, no bias
    {
      Host mean = random_host(t, {6}, 44), var = random_host(t, {6}, 45, 0.25, 2), s = random_host(t, {6}, 46);
      NormalizationParams p;
      p.kind = NormKind::kBatch;
      p.has_scale = true;
      p.epsilon = 1e-3;
      auto make = [&](Network& net) {
        auto* in = net.add_input("x", t, shape_of(dims));
        net.mark_output(net.add_normalization("bn", {in, constant(net, mean, "m"), constant(net, var, "v"), constant(net, s, "s")}, p)->output(), "y");
      };
      auto out = run_both(make, {x});
      std::vector<double> want;
      for (int64_t i = 0; i < x.numel(); ++i) {
        int64_t c = (i / 12) % 6;
        want.push_back((x.get(i) - mean.get(c)) / std::sqrt(var.get(c) + 1e-3) * s.get(c));
      }
      expect_close(out[0], want, 4 * tolerance(t), 4 * tolerance(t), std::string("batch norm ") + to_string(t));
    }
    // group norm, 3 groups of 2 channels, per-channel affine
    {
      Host s = random_host(t, {6}, 47), b = random_host(t, {6}, 48);
      NormalizationParams p;
      p.kind = NormKind::kGroup;
      p.groups = 3;
      p.has_scale = p.has_bias = true;
      auto make = [&](Network& net) {
        auto* in = net.add_input("x", t, shape_of(dims));
        net.mark_output(net.add_normalization("gn", {in, constant(net, s, "s"), constant(net, b, "b")}, p)->output(), "y");
      };
      auto out = run_both(make, {x});
      std::vector<double> want(static_cast<size_t>(x.numel()));
      for (int64_t r = 0; r < 6; ++r) {  // (n, group) rows of 24 elements
        double m = 0, v = 0;
        for (int64_t i = 0; i < 24; ++i) m += x.get(r * 24 + i) / 24;
        for (int64_t i = 0; i < 24; ++i) v += std::pow(x.get(r * 24 + i) - m, 2) / 24;
        for (int64_t i = 0; i < 24; ++i) {
          int64_t c = (r % 3) * 2 + i / 12;
          want[size_t(r * 24 + i)] = (x.get(r * 24 + i) - m) / std::sqrt(v + 1e-5) * s.get(c) + b.get(c);
        }
      }
      expect_close(out[0], want, 4 * tolerance(t), 4 * tolerance(t), std::string("group norm ") + to_string(t));
    }
  }
}

TEST(CpuCumSum, AxisExclusiveReverse) {
  for (DataType t : {DataType::kFloat32, DataType::kFloat16, DataType::kInt64, DataType::kInt32})
    for (int64_t axis : {0, 1})
      for (bool excl : {false, true})
        for (bool rev : {false, true}) {
          std::vector<int64_t> dims{4, 5};
          Host x = random_host(t, dims, 51);
          CumSumParams p{axis, excl, rev};
          auto make = [&](Network& net) {
            auto* in = net.add_input("x", t, shape_of(dims));
            net.mark_output(net.add_cumsum("cs", in, p)->output(), "y");
          };
          auto out = run_both(make, {x});
          std::vector<double> want(20);
          for (int64_t i = 0; i < 20; ++i) {
            auto idx = unravel(i, dims);
            double s = 0;
            for (int64_t j = 0; j < dims[axis]; ++j) {
              bool take = rev ? (excl ? j > idx[axis] : j >= idx[axis]) : (excl ? j < idx[axis] : j <= idx[axis]);
              auto k = idx;
              k[axis] = j;
              if (take) s += x.get(ravel(k, dims));
            }
            want[size_t(i)] = s;
          }
          expect_close(out[0], want, 2 * tolerance(t), 2 * tolerance(t), std::string("cumsum ") + to_string(t));
        }
}

TEST(CpuTopK, LargestSmallestAxes) {  // and k = kWholeAxis: a full sort of the axis
  for (DataType t : {DataType::kFloat32, DataType::kBFloat16, DataType::kInt64})
    for (int64_t axis : {0, 1})
      for (bool largest : {true, false})
        for (int64_t k : {int64_t{3}, TopKParams::kWholeAxis}) {
        std::vector<int64_t> dims{6, 7};
        Host x(t, dims);
        // distinct values so the order is unique
        std::vector<int64_t> perm(42);
        for (int64_t i = 0; i < 42; ++i) perm[size_t(i)] = (i * 17) % 42;
        for (int64_t i = 0; i < 42; ++i) x.set(i, double(perm[size_t(i)]) - 20);
        TopKParams p{axis, k, largest, true};
        auto make = [&](Network& net) {
          auto* in = net.add_input("x", t, shape_of(dims));
          Layer* l = net.add_topk("tk", in, p);
          net.mark_output(l->output(0), "v");
          net.mark_output(l->output(1), "i");
        };
        auto out = run_both(make, {x});
        auto od = dims;
        od[axis] = k == TopKParams::kWholeAxis ? dims[axis] : k;
        ASSERT_EQ(out[0].dims, od);
        std::vector<double> wv, wi;
        for (int64_t i = 0; i < out[0].numel(); ++i) {
          auto idx = unravel(i, od);
          std::vector<std::pair<double, int64_t>> col;
          for (int64_t j = 0; j < dims[axis]; ++j) {
            auto k = idx;
            k[axis] = j;
            col.push_back({x.get(ravel(k, dims)), j});
          }
          std::sort(col.begin(), col.end(), [&](auto& a, auto& b) { return largest ? a.first > b.first : a.first < b.first; });
          wv.push_back(col[size_t(idx[axis])].first);
          wi.push_back(double(col[size_t(idx[axis])].second));
        }
        expect_close(out[0], wv, 0, 0, "topk values");
        expect_close(out[1], wi, 0, 0, "topk indices");
        }
}

}  // namespace
}  // namespace kiln::engine::cputest
