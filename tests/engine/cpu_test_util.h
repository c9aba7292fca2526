// Test harness of the CPU kernel tests: host tensors holding values as double, seeded random
// inputs (exactly representable in their dtype), a small direct executor (every layer of a
// network through cpu::execute, in order) and the real pipeline (engine::build +
// ExecutionContext), plus float64 reference helpers.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/cpu_kernels.h"
#include "engine/network.h"

namespace kiln::engine::cputest {

// ---- values <-> bytes, written independently of the kernels' own conversions -------------------
inline double half_to_double(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  double v;
  if (e == 0) v = std::ldexp(double(m), -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = std::ldexp(double(m | 0x400), e - 25);
  return s ? -v : v;
}
inline double bf16_to_double(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Exact encoders for values representable in the format (inputs are generated that way); other
// values are rounded to nearest by brute force over the neighbours, which is enough for tests.
inline uint16_t double_to_half(double v) {
  if (std::isnan(v)) return 0x7e00;
  if (std::isinf(v)) return v > 0 ? 0x7c00 : 0xfc00;
  uint16_t best = 0;
  double best_err = INFINITY;
  // Binary search on magnitude: half bit patterns are monotonic in value for one sign.
  double a = std::fabs(v);
  int lo = 0, hi = 0x7c00;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (half_to_double(uint16_t(mid)) < a) lo = mid + 1; else hi = mid;
  }
  for (int c = std::max(0, lo - 1); c <= std::min(0x7c00, lo + 1); ++c) {
    double err = std::fabs(half_to_double(uint16_t(c)) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) { best_err = err; best = uint16_t(c); }
  }
  return uint16_t(best | (std::signbit(v) ? 0x8000 : 0));
}
inline uint16_t double_to_bf16(double v) {
  float f = float(v);
  uint32_t x;
  std::memcpy(&x, &f, 4);
  x += 0x7fff + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

struct Host {
  DataType dtype = DataType::kFloat32;
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;

  Host() = default;
  Host(DataType t, std::vector<int64_t> d) : dtype(t), dims(std::move(d)) {
    bytes.assign(size_t(numel()) * element_size(t) + 8, 0);
  }
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
  double get(int64_t i) const {
    const uint8_t* p = bytes.data() + size_t(i) * element_size(dtype);
    switch (dtype) {
      case DataType::kFloat32: { float f; std::memcpy(&f, p, 4); return f; }
      case DataType::kFloat16: { uint16_t h; std::memcpy(&h, p, 2); return half_to_double(h); }
      case DataType::kBFloat16: { uint16_t h; std::memcpy(&h, p, 2); return bf16_to_double(h); }
      case DataType::kInt64: { int64_t v; std::memcpy(&v, p, 8); return double(v); }
      case DataType::kInt32: { int32_t v; std::memcpy(&v, p, 4); return v; }
      case DataType::kInt8: return double(int8_t(*p));
      case DataType::kUInt8: return double(*p);
      case DataType::kBool: return *p ? 1.0 : 0.0;
    }
    return 0;
  }
  int64_t geti(int64_t i) const {
    if (dtype == DataType::kInt64) { int64_t v; std::memcpy(&v, bytes.data() + i * 8, 8); return v; }
    return int64_t(get(i));
  }
  void set(int64_t i, double v) {
    uint8_t* p = bytes.data() + size_t(i) * element_size(dtype);
    switch (dtype) {
      case DataType::kFloat32: { float f = float(v); std::memcpy(p, &f, 4); break; }
      case DataType::kFloat16: { uint16_t h = double_to_half(v); std::memcpy(p, &h, 2); break; }
      case DataType::kBFloat16: { uint16_t h = double_to_bf16(v); std::memcpy(p, &h, 2); break; }
      case DataType::kInt64: { int64_t x = int64_t(v); std::memcpy(p, &x, 8); break; }
      case DataType::kInt32: { int32_t x = int32_t(v); std::memcpy(p, &x, 4); break; }
      case DataType::kInt8: *p = uint8_t(int8_t(v)); break;
      case DataType::kUInt8: *p = uint8_t(v); break;
      case DataType::kBool: *p = v != 0; break;
    }
  }
  std::vector<double> values() const {
    std::vector<double> r(static_cast<size_t>(numel()));
    for (int64_t i = 0; i < numel(); ++i) r[size_t(i)] = get(i);
    return r;
  }
  TensorView view() const {
    TensorView v;
    v.data = const_cast<uint8_t*>(bytes.data());
    v.dtype = dtype;
    v.dims = dims;
    return v;
  }
};

// Seeded random values exactly representable in `t`: floats k/32 in [-4, 4] (f16/bf16) or
// uniform in [lo, hi] (f32); integers in [-5, 5] (u8: [0, 10]); bool 50/50.
inline Host random_host(DataType t, std::vector<int64_t> dims, uint32_t seed, double lo = -2, double hi = 2) {
  Host h(t, std::move(dims));
  std::mt19937 rng(seed);
  for (int64_t i = 0; i < h.numel(); ++i) {
    double v;
    switch (t) {
      case DataType::kFloat32: v = std::uniform_real_distribution<double>(lo, hi)(rng); break;
      case DataType::kFloat16: case DataType::kBFloat16:
        v = std::round(std::uniform_real_distribution<double>(lo, hi)(rng) * 32) / 32; break;
      case DataType::kUInt8: v = double(std::uniform_int_distribution<int>(0, 10)(rng)); break;
      case DataType::kBool: v = double(rng() & 1); break;
      default: v = double(std::uniform_int_distribution<int>(-5, 5)(rng));
    }
    h.set(i, v);
  }
  return h;
}

inline Host host_of(DataType t, std::vector<int64_t> dims, const std::vector<double>& vals) {
  Host h(t, std::move(dims));
  for (int64_t i = 0; i < h.numel(); ++i) h.set(i, vals[size_t(i)]);
  return h;
}

inline Shape shape_of(const std::vector<int64_t>& d) { return Shape(d.begin(), d.end()); }

// A 2-d convolution's params, the same stride, padding and dilation along both axes.
inline ConvolutionParams conv2d_params(int64_t stride, int64_t pad, int64_t dil, int64_t groups, bool channels_last,
                                       bool bias, bool residual, std::optional<ActivationParams> act) {
  ConvolutionParams p;
  p.stride = {stride, stride};
  p.padding = {pad, pad};
  p.dilation = {dil, dil};
  p.groups = groups;
  p.channels_last = channels_last;
  p.has_bias = bias;
  p.has_residual = residual;
  p.activation = act;
  return p;
}

// Constant tensor in the network from a host tensor.
inline Tensor* constant(Network& net, const Host& h, const std::string& name = "w") {
  return net.add_constant(name, Weights::copy_of(h.dtype, h.dims, h.bytes.data()))->output();
}

// Runs every layer of `net` through cpu::execute, in order; inputs bound by network input order.
// Returns the marked outputs in order.
std::vector<Host> run_direct(Network& net, const std::vector<Host>& inputs);
// Builds `net` into a plan (fp32 unless `precision` says otherwise) with `profile` ranges for its
// symbols and runs it through an ExecutionContext on the CPU backend.
std::vector<Host> run_pipeline(Network&& net, const std::vector<Host>& inputs,
                               const std::map<std::string, std::array<int64_t, 3>>& profile = {});
// Both when the pipeline exists: direct results must equal the pipeline's (same kernels).
std::vector<Host> run_both(const std::function<void(Network&)>& make, const std::vector<Host>& inputs,
                           const std::map<std::string, std::array<int64_t, 3>>& profile = {});

// ---- comparison --------------------------------------------------------------------------
inline double tolerance(DataType t) {
  switch (t) {
    case DataType::kFloat16: return 2e-3;   // ~2 ulp of half's 11-bit significand
    case DataType::kBFloat16: return 1.6e-2;
    case DataType::kFloat32: return 2e-5;
    default: return 0;
  }
}
// |got - want| <= atol + rtol*|want| elementwise; NaN must match NaN.
inline void expect_close(const Host& got, const std::vector<double>& want, double rtol, double atol,
                         const std::string& what) {
  ASSERT_EQ(got.numel(), int64_t(want.size())) << what;
  int bad = 0;
  for (int64_t i = 0; i < got.numel() && bad < 5; ++i) {
    double g = got.get(i), w = want[size_t(i)];
    bool ok = (std::isnan(w) && std::isnan(g)) || (std::isinf(w) && g == w) ||
              std::fabs(g - w) <= atol + rtol * std::fabs(w);
    if (!ok) {
      ++bad;
      ADD_FAILURE() << what << ": element " << i << " got " << g << " want " << w;
    }
  }
}
inline void expect_close(const Host& got, const std::vector<double>& want, const std::string& what) {
  double tol = tolerance(got.dtype);
  expect_close(got, want, tol, tol, what);
}

// ---- reference helpers ----------------------------------------------------------------------
inline std::vector<int64_t> unravel(int64_t i, const std::vector<int64_t>& dims) {
  std::vector<int64_t> idx(dims.size());
  for (size_t d = dims.size(); d-- > 0;) {
    idx[d] = dims[d] ? i % dims[d] : 0;
    if (dims[d]) i /= dims[d];
  }
  return idx;
}
inline int64_t ravel(const std::vector<int64_t>& idx, const std::vector<int64_t>& dims) {
  int64_t r = 0;
  for (size_t d = 0; d < dims.size(); ++d) r = r * dims[d] + idx[d];
  return r;
}
// Index into a tensor with `dims` broadcast (right-aligned) to an output index `oidx`.
inline int64_t bcast_index(const std::vector<int64_t>& oidx, const std::vector<int64_t>& dims) {
  int64_t r = 0;
  const size_t off = oidx.size() - dims.size();
  for (size_t d = 0; d < dims.size(); ++d) r = r * dims[d] + (dims[d] == 1 ? 0 : oidx[off + d]);
  return r;
}
inline std::vector<int64_t> bcast_dims(std::vector<int64_t> a, std::vector<int64_t> b) {
  if (a.size() < b.size()) std::swap(a, b);
  std::vector<int64_t> r = a;
  for (size_t k = 0; k < b.size(); ++k) {
    size_t i = a.size() - 1 - k;
    r[i] = a[i] == 1 ? b[b.size() - 1 - k] : a[i];
  }
  return r;
}

inline const std::vector<DataType>& float_types() {
  static const std::vector<DataType> t{DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16};
  return t;
}

}  // namespace kiln::engine::cputest
