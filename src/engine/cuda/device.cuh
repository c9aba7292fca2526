// Device-side helpers shared by the hand-written kernels (.cu files only): storage types,
// conversion to the compute type (fp32 for every float type, as the CPU path does), launch
// shapes and index decoding for up to kMaxRank dims.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "engine/cuda/internal.h"

namespace kiln::engine::cuda {

constexpr int kMaxRank = 8;

// Dims/strides passed by value to kernels (kernel arguments, so graph capture records them).
struct Dims {
  int rank = 0;
  int64_t d[kMaxRank] = {};
};
struct Strides {
  int64_t s[kMaxRank] = {};
};
inline Dims make_dims(const std::vector<int64_t>& v) {
  Dims r;
  r.rank = static_cast<int>(v.size());
  for (size_t i = 0; i < v.size() && i < size_t(kMaxRank); ++i) r.d[i] = v[i];
  return r;
}
inline Strides make_strides(const std::vector<int64_t>& v) {
  Strides r;
  for (size_t i = 0; i < v.size() && i < size_t(kMaxRank); ++i) r.s[i] = v[i];
  return r;
}
// Drops size-1 dims and merges neighbours whose strides chain (stride[d-1] == stride[d]*dims[d]),
// so strided kernels index over as few dims as possible.
inline void collapse(std::vector<int64_t>& dims, std::vector<int64_t>& st) {
  std::vector<int64_t> d2, s2;
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] == 1) continue;
    if (!d2.empty() && s2.back() == st[d] * dims[d]) {
      d2.back() *= dims[d];
      s2.back() = st[d];
    } else {
      d2.push_back(dims[d]);
      s2.push_back(st[d]);
    }
  }
  dims.swap(d2);
  st.swap(s2);
}

// Offset into a strided tensor of the element at linear (row-major) index `i` of `dims`.
__device__ __forceinline__ int64_t strided_offset(int64_t i, const Dims& dims, const Strides& st) {
  int64_t off = 0;
  for (int d = dims.rank - 1; d >= 0; --d) {
    int64_t c = i % dims.d[d];
    i /= dims.d[d];
    off += c * st.s[d];
  }
  return off;
}

// The same with 32-bit division, for tensors of fewer than 2^31 elements (64-bit division is
// emulated in dozens of instructions: it would dominate a copy kernel).
__device__ __forceinline__ int64_t strided_offset32(uint32_t i, const Dims& dims, const Strides& st) {
  int64_t off = 0;
  for (int d = dims.rank - 1; d >= 0; --d) {
    const uint32_t n = static_cast<uint32_t>(dims.d[d]), c = i % n;
    i /= n;
    off += int64_t(c) * st.s[d];
  }
  return off;
}

// ---- compute-type conversion --------------------------------------------------------------------
template <class T> struct Compute { using type = T; };
template <> struct Compute<__half> { using type = float; };
template <> struct Compute<__nv_bfloat16> { using type = float; };
template <class T> using compute_t = typename Compute<T>::type;

template <class T> __device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_float<bool>(bool v) { return v ? 1.f : 0.f; }

template <class T> __device__ __forceinline__ T from_float(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ bool from_float<bool>(float v) { return v != 0.f; }

// Float-like storage type T <-> double (the generic path of integer-capable kernels).
template <class T> __device__ __forceinline__ double to_double(T v) { return static_cast<double>(to_float(v)); }
template <> __device__ __forceinline__ double to_double<double>(double v) { return v; }
template <> __device__ __forceinline__ double to_double<int64_t>(int64_t v) { return static_cast<double>(v); }
template <> __device__ __forceinline__ double to_double<int32_t>(int32_t v) { return static_cast<double>(v); }

template <class T>
inline constexpr bool is_float_storage_v =
    std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// Calls f(T{}) for the float storage types; throws for others.
template <class F>
void dispatch_float(DataType t, const Layer& layer, F&& f) {
  switch (t) {
    case DataType::kFloat32: f(float{}); return;
    case DataType::kFloat16: f(__half{}); return;
    case DataType::kBFloat16: f(__nv_bfloat16{}); return;
    default: fail(layer, std::string("CUDA kernel needs a float dtype, got ") + to_string(t));
  }
}
// Every storage type.
template <class F>
void dispatch_all(DataType t, F&& f) {
  switch (t) {
    case DataType::kFloat32: f(float{}); return;
    case DataType::kFloat16: f(__half{}); return;
    case DataType::kBFloat16: f(__nv_bfloat16{}); return;
    case DataType::kInt64: f(int64_t{}); return;
    case DataType::kInt32: f(int32_t{}); return;
    case DataType::kInt8: f(int8_t{}); return;
    case DataType::kUInt8: f(uint8_t{}); return;
    case DataType::kBool: f(bool{}); return;
  }
}
// By element size only (data movement): f(U{}) with U an unsigned type of that size.
template <class F>
void dispatch_size(size_t bytes, F&& f) {
  switch (bytes) {
    case 1: f(uint8_t{}); return;
    case 2: f(uint16_t{}); return;
    case 4: f(uint32_t{}); return;
    default: f(uint64_t{}); return;
  }
}

// Eight neighbouring elements as fp32, moved with 16-byte accesses (p 16-byte aligned).
template <class T>
__device__ __forceinline__ void load8(const T* __restrict__ p, float (&v)[8]) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4, "16- and 32-bit float storage");
  alignas(16) T t[8];
#pragma unroll
  for (int k = 0; k < int(sizeof(T)) / 2; ++k) reinterpret_cast<uint4*>(t)[k] = reinterpret_cast<const uint4*>(p)[k];
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = to_float(t[k]);
}
template <class T>
__device__ __forceinline__ void store8(T* __restrict__ p, const float (&v)[8]) {
  alignas(16) T t[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) t[k] = from_float<T>(v[k]);
#pragma unroll
  for (int k = 0; k < int(sizeof(T)) / 2; ++k) reinterpret_cast<uint4*>(p)[k] = reinterpret_cast<const uint4*>(t)[k];
}

// Four neighbouring elements as fp32: 8-byte accesses for 16-bit types, 16-byte for fp32 (p aligned so).
template <class T>
__device__ __forceinline__ void load4(const T* __restrict__ p, float (&v)[4]) {
  alignas(16) T t[4];
  if constexpr (sizeof(T) == 2) *reinterpret_cast<uint2*>(t) = *reinterpret_cast<const uint2*>(p);
  else *reinterpret_cast<uint4*>(t) = *reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = to_float(t[k]);
}
template <class T>
__device__ __forceinline__ void store4(T* __restrict__ p, const float (&v)[4]) {
  alignas(16) T t[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) t[k] = from_float<T>(v[k]);
  if constexpr (sizeof(T) == 2) *reinterpret_cast<uint2*>(p) = *reinterpret_cast<const uint2*>(t);
  else *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(t);
}

// Integer min/max for device code (the engine's DimExpr min/max would otherwise be found first).
__host__ __device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// An ActivationOp (by value; -1 for none) on an fp32 value, for hand-written kernels that fuse
// their epilogue. The same formulas as the pointwise code generator's (pointwise_codegen.cpp).
__device__ __forceinline__ float activate(int op, float x, float alpha, float beta) {
  switch (op) {
    case int(ActivationOp::kRelu): return isnan(x) ? x : (x > 0.f ? x : 0.f);
    case int(ActivationOp::kSigmoid): return 1.f / (1.f + expf(-x));
    case int(ActivationOp::kTanh): return tanhf(x);
    case int(ActivationOp::kGeluErf): return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));
    case int(ActivationOp::kGeluTanh): return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case int(ActivationOp::kSilu): return x / (1.f + expf(-x));
    case int(ActivationOp::kHardSigmoid): return fminf(fmaxf(x + 3.f, 0.f), 6.f) / 6.f;
    case int(ActivationOp::kHardSwish): return x * fminf(fmaxf(x + 3.f, 0.f), 6.f) / 6.f;
    case int(ActivationOp::kLeakyRelu): return x > 0.f ? x : x * alpha;
    case int(ActivationOp::kElu): return x > 0.f ? x : alpha * expm1f(x);
    case int(ActivationOp::kSoftplus): {
      const float b = alpha == 0.f ? 1.f : alpha;
      return x * b > beta ? x : log1pf(expf(x * b)) / b;
    }
    case int(ActivationOp::kClip): return isnan(x) ? x : fminf(fmaxf(x, alpha), beta);
    case int(ActivationOp::kMish): return x * tanhf(x > 20.f ? x : log1pf(expf(x)));
    default: return x;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over a block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* smem32) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) smem32[warp] = v;
  __syncthreads();
  v = lane < nw ? smem32[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* smem32) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) smem32[warp] = v;
  __syncthreads();
  v = lane < nw ? smem32[lane] : -INFINITY;
  return warp_max(v);
}

}  // namespace kiln::engine::cuda
