// Shared pieces of the CPU kernels: half/bfloat16 conversion, dtype dispatch, broadcasting
// iteration, threading and error reporting. Internal to src/engine/cpu/.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/cpu/parallel.h"
#include "engine/backend.h"
#include "engine/half.h"
#include "engine/network.h"

namespace kiln::engine::cpu {

// ---- 16-bit floats ----------------------------------------------------------------------------
// Storage-only types: arithmetic always goes through float (conversions: engine/half.h).
using engine::bf16_bits_to_float;
using engine::f16_bits_to_float;
using engine::float_to_bf16_bits;
using engine::float_to_f16_bits;

struct f16 {
  uint16_t bits = 0;
  f16() = default;
  f16(float f) : bits(float_to_f16_bits(f)) {}  // NOLINT
  operator float() const { return f16_bits_to_float(bits); }  // NOLINT
};
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  bf16(float f) : bits(float_to_bf16_bits(f)) {}  // NOLINT
  operator float() const { return bf16_bits_to_float(bits); }  // NOLINT
};

template <class T> inline constexpr bool is_half_v = std::is_same_v<T, f16> || std::is_same_v<T, bf16>;
template <class T> inline constexpr bool is_float_v = is_half_v<T> || std::is_same_v<T, float>;
// The type arithmetic happens in: float for every float storage type, the type itself otherwise.
template <class T> using compute_t = std::conditional_t<is_half_v<T>, float, T>;

// Calls f(T{}) with T the storage type of `t`.
template <class F>
decltype(auto) dispatch_dtype(DataType t, F&& f) {
  switch (t) {
    case DataType::kFloat32: return f(float{});
    case DataType::kFloat16: return f(f16{});
    case DataType::kBFloat16: return f(bf16{});
    case DataType::kInt64: return f(int64_t{});
    case DataType::kInt32: return f(int32_t{});
    case DataType::kInt8: return f(int8_t{});
    case DataType::kUInt8: return f(uint8_t{});
    case DataType::kBool: return f(bool{});
  }
  return f(float{});
}

// Conversion between any two storage types with PyTorch's meaning (bool: != 0; float -> int
// truncates toward zero; out-of-range floats saturate instead of being undefined behaviour).
template <class To, class From>
inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    return static_cast<compute_t<From>>(v) != compute_t<From>(0);
  } else if constexpr (is_float_v<To>) {
    return To(static_cast<float>(static_cast<compute_t<From>>(v)));
  } else if constexpr (is_float_v<From> || std::is_floating_point_v<From>) {  // float -> integer
    double d = static_cast<double>(static_cast<compute_t<From>>(v));
    // Through int64 (saturating), then wrapped to the width: -3.75 -> u8 gives 253 as in PyTorch.
    if (std::isnan(d)) return To(0);
    if (d <= -9223372036854775808.0) return To(std::numeric_limits<int64_t>::min());
    if (d >= 9223372036854775807.0) return To(std::numeric_limits<int64_t>::max());
    return static_cast<To>(static_cast<int64_t>(d));
  } else {
    return static_cast<To>(v);  // integer -> integer wraps like PyTorch
  }
}
// double -> storage type; the generic path for kernels that compute in double.
template <class To>
inline To from_double(double d) {
  if constexpr (is_float_v<To>) return To(static_cast<float>(d));
  else return convert<To, double>(d);
}

double load_as_double(const TensorView& v, int64_t i);
void store_double(const TensorView& v, int64_t i, double d);

// ---- float buffers ------------------------------------------------------------------------------
// A view's data as fp32: the data itself when already f32, else a converted copy.
struct FloatInput {
  const float* ptr = nullptr;
  std::vector<float> storage;
};
FloatInput as_float(const TensorView& v);
void to_float(const TensorView& v, float* dst);  // converts numel() elements
// An fp32 destination for `out`: its memory when f32, else scratch written back by `commit`.
struct FloatOutput {
  float* ptr = nullptr;
  std::vector<float> storage;
  const TensorView* view = nullptr;
  void commit();
};
FloatOutput float_output(const TensorView& v);

// ---- shapes ---------------------------------------------------------------------------------
int64_t product(const std::vector<int64_t>& d, size_t begin = 0, size_t end = SIZE_MAX);
// Strides of `in` broadcast (NumPy rules, aligned right) against `out`: 0 where broadcast.
std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& in, const std::vector<int64_t>& out);

// Iterates the output of a broadcasting op in runs: f(out_offset, in_offsets, len, in_inner_strides)
// where element k of the run is out[out_offset + k] and input j's element in[j][in_offsets[j] +
// k * in_inner_strides[j]]. Dims are collapsed first so most ops become one or a few long runs;
// runs are spread over the worker threads when the output is large.
void for_each_broadcast_run(
    const std::vector<int64_t>& out_dims, const std::vector<std::vector<int64_t>>& in_dims,
    const std::function<void(int64_t, const int64_t*, int64_t, const int64_t*)>& f);

// ---- threading (parallel_for: parallel.h) ---------------------------------------------------------
// Below this many elements of work a kernel stays on one thread. A memory-bound pass over 256K
// floats takes ~50 µs on one core, about what handing half of it to a second thread costs when
// that core is busy: right after a oneDNN convolution its OpenMP workers spin there (32K, the
// grain before, made efficientnet_b0's squeeze-excite poolings and multiplies wait on them: 7% of
// its batch-1 time, 20% at batch 8; docs/PERFORMANCE.md).
constexpr int64_t kParallelGrain = 262144;

// ---- errors ---------------------------------------------------------------------------------
[[noreturn]] void fail(const Layer& layer, const std::string& what);
[[noreturn]] void fail_shape(const Layer& layer, const std::string& what);

// Scratch of at least `bytes`: the call's workspace when big enough, else `fallback`.
void* scratch(LayerCall& call, size_t bytes, std::vector<uint8_t>& fallback);

}  // namespace kiln::engine::cpu
