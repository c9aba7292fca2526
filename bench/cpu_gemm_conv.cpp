// CPU throughput through the engine, for comparing later changes (not a test):
//  - GEMM GFLOP/s at a few sizes (a one-MatMul plan),
//  - a 3x3 convolution's GFLOP/s and images/s (a one-Convolution plan).
// Each case: build a plan, run it N times, report the median.
// Usage: bench_cpu_gemm_conv [iterations]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "engine/builder.h"
#include "engine/runtime.h"

using namespace kiln::engine;

namespace {

std::vector<float> random_floats(size_t n) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Median seconds of `iters` executes (after one warm-up).
double median_seconds(ExecutionContext& ctx, int iters) {
  ctx.execute();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    auto a = std::chrono::steady_clock::now();
    ctx.execute();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void bench_gemm(int64_t m, int64_t n, int64_t k, int iters) {
  Network net;
  Tensor* a = net.add_input("a", DataType::kFloat32, {m, k});
  auto wv = random_floats(static_cast<size_t>(k * n));
  Tensor* b = net.add_constant("b", Weights::copy_of(DataType::kFloat32, {k, n}, wv.data()))->output();
  net.mark_output(net.add_matmul("mm", a, b)->output(), "c");
  Plan plan = build(std::move(net), {});
  ExecutionContext ctx(plan);
  auto av = random_floats(static_cast<size_t>(m * k));
  TensorView v;
  v.data = av.data();
  v.dims = {m, k};
  ctx.set_input("a", v);
  double s = median_seconds(ctx, iters);
  std::printf("gemm  %5lld x %5lld x %5lld   %8.3f ms   %7.1f GFLOP/s\n", (long long)m, (long long)n, (long long)k,
              s * 1e3, 2.0 * m * n * k / s / 1e9);
}

void bench_conv(int64_t batch, int64_t cin, int64_t cout, int64_t hw, int iters) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {batch, cin, hw, hw});
  auto wv = random_floats(static_cast<size_t>(cout * cin * 9));
  auto bv = random_floats(static_cast<size_t>(cout));
  Tensor* w = net.add_constant("w", Weights::copy_of(DataType::kFloat32, {cout, cin, 3, 3}, wv.data()))->output();
  Tensor* b = net.add_constant("b", Weights::copy_of(DataType::kFloat32, {cout}, bv.data()))->output();
  ConvolutionParams p;
  p.padding = {1};
  net.mark_output(net.add_convolution("conv", x, w, b, p)->output(), "y");
  Plan plan = build(std::move(net), {});
  ExecutionContext ctx(plan);
  auto xv = random_floats(static_cast<size_t>(batch * cin * hw * hw));
  TensorView v;
  v.data = xv.data();
  v.dims = {batch, cin, hw, hw};
  ctx.set_input("x", v);
  double s = median_seconds(ctx, iters);
  double flops = 2.0 * batch * cout * hw * hw * cin * 9;
  std::printf("conv3x3 n=%lld %lld->%lld %lldx%lld   %8.3f ms   %7.1f GFLOP/s   %8.1f images/s\n", (long long)batch,
              (long long)cin, (long long)cout, (long long)hw, (long long)hw, s * 1e3, flops / s / 1e9, batch / s);
}

}  // namespace

int main(int argc, char** argv) {
  int iters = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20;
  try {
    for (int64_t s : {128, 256, 512, 1024}) bench_gemm(s, s, s, iters);
    bench_gemm(64, 3072, 768, iters);  // a transformer MLP row block
    bench_conv(1, 64, 64, 56, iters);  // resnet stage 1
    bench_conv(8, 128, 128, 28, iters);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
