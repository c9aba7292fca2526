// Data-movement layers: shuffle (permute + reshape), concat, slice, pad, gather, scatter, fill /
// arange, shape, copies. Most are one "strided gather" kernel: each output element reads one input
// element at base + sum(coord_d * stride_d). Kernels move raw element bits (dispatched on the
// element size) except where a value is produced (pad's constant, fill, scatter-add).
#include "engine/cuda/device.cuh"

#include <algorithm>

namespace kiln::engine::cuda {

namespace {

constexpr int kThreads = 256;

template <class U>
__global__ void strided_gather_kernel(U* __restrict__ out, const U* __restrict__ in, int64_t n, int64_t base,
                                      Dims dims, Strides st) {
  if (n <= INT32_MAX) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
      out[i] = in[base + strided_offset32(i, dims, st)];
    return;
  }
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = in[base + strided_offset(i, dims, st)];
}

void strided_gather(Context& ctx, void* out, const void* in, size_t elem, std::vector<int64_t> dims,
                    std::vector<int64_t> st, int64_t base) {
  const int64_t n = product(dims);
  if (n == 0) return;
  collapse(dims, st);
  if (dims.size() == 1 && st[0] == 1) {  // contiguous run
    KILN_CUDA_CHECK(cudaMemcpyAsync(out, static_cast<const char*>(in) + base * elem, n * elem,
                                    cudaMemcpyDeviceToDevice, ctx.stream));
    return;
  }
  if (dims.size() > size_t(kMaxRank)) throw NetworkError("CUDA strided copy: rank above 8");
  // Rows that stay contiguous (a permute keeping the last dim, a slice of whole rows or of a
  // column range) move as 16/8/4-byte units: one thread per unit instead of per element, which
  // takes these copies from a few hundred GB/s to near the memory's bandwidth.
  size_t unit = elem;
  if (!st.empty() && st.back() == 1) {
    for (size_t bytes : {size_t(16), size_t(8), size_t(4)}) {
      if (bytes <= elem || bytes % elem) continue;
      const int64_t v = int64_t(bytes / elem);
      bool ok = dims.back() % v == 0 && base % v == 0 && reinterpret_cast<uintptr_t>(out) % bytes == 0 &&
                reinterpret_cast<uintptr_t>(in) % bytes == 0;
      for (size_t d = 0; ok && d + 1 < st.size(); ++d) ok = st[d] % v == 0;
      if (!ok) continue;
      dims.back() /= v;
      for (size_t d = 0; d + 1 < st.size(); ++d) st[d] /= v;
      base /= v;
      unit = bytes;
      break;
    }
  }
  const int64_t units = product(dims);
  auto launch = [&](auto u) {
    using U = decltype(u);
    strided_gather_kernel<U><<<grid_for(ctx, units, kThreads), kThreads, 0, ctx.stream>>>(
        static_cast<U*>(out), static_cast<const U*>(in), units, base, make_dims(dims), make_strides(st));
  };
  if (unit == 16) launch(uint4{});
  else dispatch_size(unit, launch);
  KILN_CUDA_LAUNCH_CHECK();
}

std::vector<int64_t> contiguous(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size(), 1);
  for (size_t d = dims.size(); d-- > 1;) s[d - 1] = s[d] * dims[d];
  return s;
}

bool is_identity(const std::vector<int64_t>& perm) {
  for (size_t i = 0; i < perm.size(); ++i)
    if (perm[i] != int64_t(i)) return false;
  return true;
}

// out[perm-ordered] = in: out dim d is in dim perm[d].
void permute(Context& ctx, void* out, const void* in, size_t elem, const std::vector<int64_t>& in_dims,
             const std::vector<int64_t>& perm) {
  std::vector<int64_t> cs = contiguous(in_dims), dims(perm.size()), st(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) {
    dims[d] = in_dims.at(perm[d]);
    st[d] = cs.at(perm[d]);
  }
  strided_gather(ctx, out, in, elem, dims, st, 0);
}

int64_t eval(const DimExpr& e, const LayerCall& call) {
  static const SymbolValues kNone;
  return e.evaluate(call.symbols ? *call.symbols : kNone);
}

}  // namespace

void run_copy(Context& ctx, const TensorView& dst, const TensorView& src) {
  size_t n = std::min(dst.nbytes(), src.nbytes());
  if (n == 0 || dst.data == src.data) return;
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, n, cudaMemcpyDeviceToDevice, ctx.stream));
}

// ---- shuffle ---------------------------------------------------------------------------------------
size_t shuffle_workspace(const ShuffleParams& p, const std::vector<TensorView>& in) {
  if (in.empty() || p.first_perm.empty() || p.second_perm.empty()) return 0;
  if (is_identity(p.first_perm) || is_identity(p.second_perm)) return 0;
  return in[0].nbytes();
}

void run_shuffle(Context& ctx, const ShuffleParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  const size_t es = element_size(x.dtype);
  const bool first = !p.first_perm.empty() && !is_identity(p.first_perm);
  const bool second = !p.second_perm.empty() && !is_identity(p.second_perm);
  if (!first && !second) return run_copy(ctx, y, x);
  // Dims before the second transpose: output dims un-permuted.
  std::vector<int64_t> d2(y.dims.size());
  if (second)
    for (size_t d = 0; d < p.second_perm.size(); ++d) d2.at(p.second_perm[d]) = y.dims[d];
  if (first && !second) return permute(ctx, y.data, x.data, es, x.dims, p.first_perm);
  if (!first) return permute(ctx, y.data, x.data, es, d2, p.second_perm);
  void* tmp = call.workspace;
  bool owned = false;
  if (!tmp || call.workspace_bytes < x.nbytes()) {
    KILN_CUDA_CHECK(cudaMallocAsync(&tmp, x.nbytes(), ctx.stream));
    owned = true;
  }
  permute(ctx, tmp, x.data, es, x.dims, p.first_perm);
  permute(ctx, y.data, tmp, es, d2, p.second_perm);
  if (owned) KILN_CUDA_CHECK(cudaFreeAsync(tmp, ctx.stream));
}

// ---- concat -----------------------------------------------------------------------------------------
void run_concat(Context& ctx, const ConcatParams& p, LayerCall& call) {
  const TensorView& y = call.outputs.at(0);
  const size_t rank = y.dims.size();
  const int64_t axis = canonical_axis(call.layer, p.axis, int64_t(rank));
  const size_t es = element_size(y.dtype);
  const int64_t outer = product(y.dims, 0, axis), inner = product(y.dims, axis + 1);
  const size_t dpitch = size_t(y.dims[axis] * inner) * es;
  size_t offset = 0;
  for (const TensorView& x : call.inputs) {
    const size_t width = size_t(x.dims.at(axis) * inner) * es;
    if (width > 0 && outer > 0)
      KILN_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(y.data) + offset, dpitch, x.data, width, width, outer,
                                        cudaMemcpyDeviceToDevice, ctx.stream));
    offset += width;
  }
}

// ---- slice ------------------------------------------------------------------------------------------
void run_slice(Context& ctx, const SliceParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  const std::vector<int64_t> cs = contiguous(x.dims);
  std::vector<int64_t> st(x.dims.size());
  int64_t base = 0;
  for (size_t d = 0; d < x.dims.size(); ++d) {
    int64_t start = d < p.start.size() ? eval(p.start[d], call) : 0;
    int64_t stride = d < p.stride.size() ? eval(p.stride[d], call) : 1;
    if (start < 0) start += x.dims[d];
    if (y.dims[d] > 0) base += start * cs[d];
    st[d] = stride * cs[d];
  }
  strided_gather(ctx, y.data, x.data, element_size(x.dtype), y.dims, st, base);
}

// ---- pad ----------------------------------------------------------------------------------------------
namespace {
template <class T>
__global__ void pad_kernel(T* __restrict__ out, const T* __restrict__ in, int64_t n, Dims od, Dims id, Dims pre,
                           int mode, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0, scale = 1;
    bool inside = true;
    for (int d = od.rank - 1; d >= 0; --d) {
      int64_t o = rem % od.d[d];
      rem /= od.d[d];
      int64_t s = o - pre.d[d], len = id.d[d];
      if (s < 0 || s >= len) {
        switch (mode) {
          case 0: inside = false; break;                                    // constant
          case 1: s = s < 0 ? -s : 2 * (len - 1) - s; break;                // reflect
          case 2: s = s < 0 ? 0 : len - 1; break;                           // replicate
          default: s = ((s % len) + len) % len; break;                      // circular
        }
      }
      off += s * scale;
      scale *= len;
    }
    out[i] = inside ? in[off] : value;
  }
}
template <class T> T host_value(double v) { return static_cast<T>(v); }
template <> __half host_value<__half>(double v) { return __float2half(float(v)); }
template <> __nv_bfloat16 host_value<__nv_bfloat16>(double v) { return __float2bfloat16(float(v)); }
template <> bool host_value<bool>(double v) { return v != 0; }
}  // namespace

void run_pad(Context& ctx, const PadParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  const int64_t n = y.numel();
  if (n == 0) return;
  const size_t rank = x.dims.size();
  std::vector<int64_t> pre(rank, 0);
  for (size_t k = 0; k < p.pre.size() && k < rank; ++k) pre[rank - p.pre.size() + k] = p.pre[k];
  if (x.numel() == 0 && p.mode != PadMode::kConstant) fail(call.layer, "non-constant pad of an empty tensor");
  const int mode = p.mode == PadMode::kConstant ? 0 : p.mode == PadMode::kReflect ? 1 : p.mode == PadMode::kReplicate ? 2 : 3;
  dispatch_all(x.dtype, [&](auto t) {
    using T = decltype(t);
    pad_kernel<T><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
        static_cast<T*>(y.data), static_cast<const T*>(x.data), n, make_dims(y.dims), make_dims(x.dims), make_dims(pre),
        mode, host_value<T>(p.value));
  });
  KILN_CUDA_LAUNCH_CHECK();
}

// ---- gather -------------------------------------------------------------------------------------------
namespace {
template <class I>
__device__ __forceinline__ int64_t wrap_index(I v, int64_t len) {
  int64_t k = static_cast<int64_t>(v);
  if (k < 0) k += len;
  return k < 0 ? 0 : (k >= len ? len - 1 : k);  // out of range: clamped (a kernel cannot throw)
}

template <class U, class I>
__global__ void gather_axis_kernel(U* __restrict__ out, const U* __restrict__ data, const I* __restrict__ idx, int64_t n,
                                   int64_t nidx, int64_t axis_len, int64_t inner) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t q = i % inner, r = i / inner;
    int64_t j = r % nidx, pidx = r / nidx;
    out[i] = data[(pidx * axis_len + wrap_index(idx[j], axis_len)) * inner + q];
  }
}

// out/idx dims `od`; data strides `ds`; axis coordinate replaced by the index.
template <class U, class I>
__global__ void gather_elements_kernel(U* __restrict__ out, const U* __restrict__ data, const I* __restrict__ idx,
                                       int64_t n, Dims od, Strides ds, int axis, int64_t axis_len) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0;
    for (int d = od.rank - 1; d >= 0; --d) {
      int64_t c = rem % od.d[d];
      rem /= od.d[d];
      if (d == axis) c = wrap_index(idx[i], axis_len);
      off += c * ds.s[d];
    }
    out[i] = data[off];
  }
}
}  // namespace

template <class F>
static void dispatch_index(DataType t, const Layer& layer, F&& f) {
  if (t == DataType::kInt64) f(int64_t{});
  else if (t == DataType::kInt32) f(int32_t{});
  else fail(layer, std::string("indices must be i64 or i32, got ") + to_string(t));
}

void run_gather(Context& ctx, const GatherParams& p, LayerCall& call) {
  const TensorView& data = call.inputs.at(0);
  const TensorView& idx = call.inputs.at(1);
  const TensorView& y = call.outputs.at(0);
  const int64_t n = y.numel();
  if (n == 0) return;
  const int64_t rank = int64_t(data.dims.size());
  const int64_t axis = canonical_axis(call.layer, p.axis, rank);
  const int64_t axis_len = data.dims.at(axis);
  if (axis_len == 0) fail(call.layer, "gather from an empty axis");
  dispatch_index(idx.dtype, call.layer, [&](auto it) {
    using I = decltype(it);
    dispatch_size(element_size(data.dtype), [&](auto u) {
      using U = decltype(u);
      if (p.mode == GatherMode::kAxis) {
        gather_axis_kernel<U, I><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
            static_cast<U*>(y.data), static_cast<const U*>(data.data), static_cast<const I*>(idx.data), n, idx.numel(),
            axis_len, product(data.dims, axis + 1));
      } else {
        gather_elements_kernel<U, I><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
            static_cast<U*>(y.data), static_cast<const U*>(data.data), static_cast<const I*>(idx.data), n,
            make_dims(y.dims), make_strides(contiguous(data.dims)), int(axis), axis_len);
      }
    });
  });
  KILN_CUDA_LAUNCH_CHECK();
}

// ---- scatter ------------------------------------------------------------------------------------------
namespace {
template <class T> __device__ __forceinline__ void atomic_add(T* p, T v) { atomicAdd(p, v); }
template <> __device__ __forceinline__ void atomic_add<int64_t>(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}
// a combined with b by `op` (kAdd, kMax, kMin, kMul) in T's compute type; max / min let a NaN
// on either side win, as torch.maximum does.
template <class T> __device__ __forceinline__ T combine(T a, T b, ScatterReduce op) {
  if constexpr (std::is_same_v<T, bool>) {
    return op == ScatterReduce::kAdd || op == ScatterReduce::kMax ? (a || b) : (a && b);
  } else if constexpr (is_float_storage_v<T>) {
    const float x = to_float(a), y = to_float(b);
    switch (op) {
      case ScatterReduce::kAdd: return from_float<T>(x + y);
      case ScatterReduce::kMul: return from_float<T>(x * y);
      case ScatterReduce::kMax: return (y != y || x < y) ? b : a;
      default: return (y != y || y < x) ? b : a;
    }
  } else {
    switch (op) {
      case ScatterReduce::kAdd: return T(a + b);
      case ScatterReduce::kMul: return T(a * b);
      case ScatterReduce::kMax: return a < b ? b : a;
      default: return b < a ? b : a;
    }
  }
}

// *p = combine(*p, v) atomically: a compare-and-swap loop on the element's bits (2, 4 or 8 bytes;
// 16-bit CAS needs sm_70, which kiln's CUDA backend requires anyway), or on the aligned 32-bit word
// that holds a 1-byte element (int8, uint8, bool).
template <class T> __device__ __forceinline__ void atomic_combine(T* p, T v, ScatterReduce op) {
  if constexpr (sizeof(T) == 1) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(p);
    unsigned int* word = reinterpret_cast<unsigned int*>(address & ~uintptr_t{3});
    const unsigned int shift = unsigned(address & 3) * 8;
    unsigned int old = *word, assumed;
    do {
      assumed = old;
      const unsigned char byte = (assumed >> shift) & 0xffu;
      T current;
      memcpy(&current, &byte, 1);
      const T next = combine(current, v, op);
      unsigned char next_byte;
      memcpy(&next_byte, &next, 1);
      if (next_byte == byte) return;
      old = atomicCAS(word, assumed, (assumed & ~(0xffu << shift)) | (unsigned(next_byte) << shift));
    } while (assumed != old);
  } else {
    using Bits = std::conditional_t<sizeof(T) == 8, unsigned long long,
                                    std::conditional_t<sizeof(T) == 4, unsigned int, unsigned short>>;
    Bits* word = reinterpret_cast<Bits*>(p);
    Bits old = *word, assumed;
    do {
      assumed = old;
      T current;
      memcpy(&current, &assumed, sizeof(T));
      const T next = combine(current, v, op);
      Bits next_bits;
      memcpy(&next_bits, &next, sizeof(T));
      if (next_bits == assumed) return;  // nothing to change (also ends the loop on a NaN kept)
      old = atomicCAS(word, assumed, next_bits);
    } while (assumed != old);
  }
}

template <class T>
inline constexpr bool has_atomic_add_v = std::is_same_v<T, float> || std::is_same_v<T, __half> ||
                                         std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, int32_t> ||
                                         std::is_same_v<T, int64_t>;

template <class T> __device__ __forceinline__ void scatter_store(T* p, T v, ScatterReduce op) {
  if (op == ScatterReduce::kNone) {
    *p = v;
    return;
  }
  if constexpr (has_atomic_add_v<T>) {
    if (op == ScatterReduce::kAdd) {
      atomic_add(p, v);
      return;
    }
  }
  atomic_combine(p, v, op);
}

// Element mode: iterate over the indices' shape `id`; updates have strides `us`, out strides `os`.
template <class T, class I>
__global__ void scatter_elements_kernel(T* __restrict__ out, const I* __restrict__ idx, const T* __restrict__ upd,
                                        int64_t n, Dims id, Strides us, Strides os, int axis, int64_t axis_len,
                                        ScatterReduce op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, uo = 0, oo = 0;
    for (int d = id.rank - 1; d >= 0; --d) {
      int64_t c = rem % id.d[d];
      rem /= id.d[d];
      uo += c * us.s[d];
      oo += (d == axis ? wrap_index(idx[i], axis_len) : c) * os.s[d];
    }
    scatter_store(out + oo, upd[uo], op);
  }
}
// Axis mode: updates [outer, L, inner] go to out[outer, idx[j], inner].
template <class T, class I>
__global__ void scatter_axis_kernel(T* __restrict__ out, const I* __restrict__ idx, const T* __restrict__ upd, int64_t n,
                                    int64_t L, int64_t axis_len, int64_t inner, ScatterReduce op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t q = i % inner, r = i / inner;
    int64_t j = r % L, pidx = r / L;
    scatter_store(out + (pidx * axis_len + wrap_index(idx[j], axis_len)) * inner + q, upd[i], op);
  }
}
}  // namespace

void run_scatter(Context& ctx, const ScatterParams& p, LayerCall& call) {
  const TensorView& data = call.inputs.at(0);
  const TensorView& idx = call.inputs.at(1);
  const TensorView& upd = call.inputs.at(2);
  const TensorView& y = call.outputs.at(0);
  run_copy(ctx, y, data);
  const int64_t rank = int64_t(data.dims.size());
  const int64_t axis = canonical_axis(call.layer, p.axis, rank);
  const int64_t axis_len = data.dims.at(axis);
  const int64_t n = p.mode == GatherMode::kAxis ? upd.numel() : idx.numel();
  if (n == 0 || axis_len == 0) return;
  dispatch_index(idx.dtype, call.layer, [&](auto it) {
    using I = decltype(it);
    dispatch_all(data.dtype, [&](auto t) {
      using T = decltype(t);
      if (p.mode == GatherMode::kAxis) {
        scatter_axis_kernel<T, I><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
            static_cast<T*>(y.data), static_cast<const I*>(idx.data), static_cast<const T*>(upd.data), n, idx.numel(),
            axis_len, product(data.dims, axis + 1), p.reduce);
      } else {
        scatter_elements_kernel<T, I><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
            static_cast<T*>(y.data), static_cast<const I*>(idx.data), static_cast<const T*>(upd.data), n,
            make_dims(idx.dims), make_strides(contiguous(upd.dims)), make_strides(contiguous(data.dims)), int(axis),
            axis_len, p.reduce);
      }
    });
  });
  KILN_CUDA_LAUNCH_CHECK();
}

// ---- fill / arange / shape ----------------------------------------------------------------------------
namespace {
template <class T> __device__ __forceinline__ T from_double_dev(double d) {
  if constexpr (is_float_storage_v<T>) return from_float<T>(static_cast<float>(d));
  else if constexpr (std::is_same_v<T, bool>) return d != 0;
  else return static_cast<T>(d);
}
template <class T>
__global__ void fill_kernel(T* __restrict__ out, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) out[i] = value;
}
template <class T>
__global__ void arange_kernel(T* __restrict__ out, int64_t n, double start, double step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_double_dev<T>(start + double(i) * step);
}
__global__ void shape_kernel(int64_t* out, Dims d) {
  if (threadIdx.x < d.rank) out[threadIdx.x] = d.d[threadIdx.x];
}
}  // namespace

void run_fill(Context& ctx, const FillParams& p, LayerCall& call) {
  const TensorView& y = call.outputs.at(0);
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_all(y.dtype, [&](auto t) {
    using T = decltype(t);
    if (p.op == FillOp::kConstant)
      fill_kernel<T><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(static_cast<T*>(y.data), n, host_value<T>(p.value));
    else
      arange_kernel<T><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(static_cast<T*>(y.data), n, p.start, p.step);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void run_shape(Context& ctx, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  if (x.dims.empty()) return;
  if (x.dims.size() > size_t(kMaxRank)) fail(call.layer, "rank above 8");
  // The dims travel as a kernel argument: capturable, unlike a copy from host memory.
  shape_kernel<<<1, 32, 0, ctx.stream>>>(static_cast<int64_t*>(y.data), make_dims(x.dims));
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::engine::cuda
