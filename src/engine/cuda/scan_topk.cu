// Cumulative sum, top-k and nonzero: the order-dependent layers.
// - cumsum: one thread per (outer, inner) column walks its axis (fp32 / int64 accumulation).
// - top-k: a bitonic sort of (value, index) pairs in shared memory, one block per row, when the
//   axis fits (<= 4096); longer axes fall back to k selection passes per row. NaN ranks above
//   every number (PyTorch), ties keep the lower index first.
// - nonzero: the only layer with a data-dependent shape, so the one host synchronization in the
//   backend: per-block counts, a host prefix sum, then every block writes its coordinates in order.
#include "engine/cuda/device.cuh"

namespace kiln::engine::cuda {
namespace {

template <class T, class A>
__global__ void cumsum_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t L, int64_t inner,
                              bool exclusive, bool reverse) {
  const int64_t n = outer * inner;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < n; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (c / inner) * L * inner + c % inner;
    A acc = 0;
    for (int64_t s = 0; s < L; ++s) {
      const int64_t j = reverse ? L - 1 - s : s;
      const int64_t off = base + j * inner;
      A v;
      if constexpr (is_float_storage_v<T>) v = to_float(x[off]);
      else v = static_cast<A>(x[off]);
      if (exclusive) {
        if constexpr (is_float_storage_v<T>) y[off] = from_float<T>(acc);
        else y[off] = static_cast<T>(acc);
        acc += v;
      } else {
        acc += v;
        if constexpr (is_float_storage_v<T>) y[off] = from_float<T>(acc);
        else y[off] = static_cast<T>(acc);
      }
    }
  }
}

// a ranks before b in the output order?
__device__ __forceinline__ bool before(float a, int64_t ia, float b, int64_t ib, bool largest) {
  const bool an = isnan(a), bn = isnan(b);
  if (an || bn) {
    if (an && bn) return ia < ib;
    return largest ? an : bn;  // NaN is the largest value
  }
  if (a == b) return ia < ib;
  return largest ? a > b : a < b;
}

template <class T>
__device__ __forceinline__ float key_of(T v) {
  if constexpr (is_float_storage_v<T>) return to_float(v);
  else return static_cast<float>(v);
}

template <class T>
__global__ void topk_bitonic(const T* __restrict__ x, T* __restrict__ vals, int64_t* __restrict__ idx, int64_t rows,
                             int64_t L, int64_t inner, int64_t k, int P, bool largest) {
  extern __shared__ unsigned char raw[];
  float* kv = reinterpret_cast<float*>(raw);
  int* ki = reinterpret_cast<int*>(kv + P);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = (r / inner) * L * inner + r % inner;
    for (int j = threadIdx.x; j < P; j += blockDim.x) {
      kv[j] = j < L ? key_of(x[base + int64_t(j) * inner]) : 0.f;
      ki[j] = j < L ? j : INT32_MAX;  // padding sorts last
    }
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1) {
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        for (int j = threadIdx.x; j < P; j += blockDim.x) {
          const int partner = j ^ stride;
          if (partner > j) {
            const bool up = (j & size) == 0;
            // Padding (index INT32_MAX) always ranks last.
            const bool pj = ki[j] == INT32_MAX, pp = ki[partner] == INT32_MAX;
            bool partner_first = pj != pp ? pj : before(kv[partner], ki[partner], kv[j], ki[j], largest);
            if (partner_first == up) {
              float tv = kv[j]; kv[j] = kv[partner]; kv[partner] = tv;
              int ti = ki[j]; ki[j] = ki[partner]; ki[partner] = ti;
            }
          }
        }
        __syncthreads();
      }
    }
    const int64_t obase = (r / inner) * k * inner + r % inner;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
      vals[obase + int64_t(j) * inner] = x[base + int64_t(ki[j]) * inner];
      idx[obase + int64_t(j) * inner] = ki[j];
    }
    __syncthreads();
  }
}

// Long axes: k passes, each finding the next element after the previous one in output order.
template <class T>
__global__ void topk_select(const T* __restrict__ x, T* __restrict__ vals, int64_t* __restrict__ idx, int64_t rows,
                            int64_t L, int64_t inner, int64_t k, bool largest) {
  __shared__ float sv[256];
  __shared__ int64_t si[256];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = (r / inner) * L * inner + r % inner;
    const int64_t obase = (r / inner) * k * inner + r % inner;
    float prev_v = 0.f;
    int64_t prev_i = -1;
    for (int64_t s = 0; s < k; ++s) {
      float bv = 0.f;
      int64_t bi = -1;
      for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
        float v = key_of(x[base + j * inner]);
        if (prev_i >= 0 && !before(prev_v, prev_i, v, j, largest)) continue;  // already taken
        if (bi < 0 || before(v, j, bv, bi, largest)) { bv = v; bi = j; }
      }
      sv[threadIdx.x] = bv;
      si[threadIdx.x] = bi;
      __syncthreads();
      for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
          int64_t oi = si[threadIdx.x + w];
          if (oi >= 0 && (si[threadIdx.x] < 0 || before(sv[threadIdx.x + w], oi, sv[threadIdx.x], si[threadIdx.x], largest))) {
            sv[threadIdx.x] = sv[threadIdx.x + w];
            si[threadIdx.x] = oi;
          }
        }
        __syncthreads();
      }
      prev_v = sv[0];
      prev_i = si[0];
      if (threadIdx.x == 0) {
        vals[obase + s * inner] = x[base + prev_i * inner];
        idx[obase + s * inner] = prev_i;
      }
      __syncthreads();
    }
  }
}

constexpr int kChunk = 1024;  // nonzero: elements per block pass

template <class T>
__device__ __forceinline__ bool nz(T v) {
  if constexpr (is_float_storage_v<T>) return to_float(v) != 0.f;
  else return v != T(0);
}

template <class T>
__global__ void nonzero_count(const T* __restrict__ x, int64_t n, int64_t* __restrict__ counts) {
  const int64_t per_block = int64_t(kChunk) * 4;
  const int64_t begin = blockIdx.x * per_block, end = imin(n, begin + per_block);
  int c = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) c += nz(x[i]);
  __shared__ int sm[32];
  for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
  if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t t = 0;
    for (int w = 0; w < int(blockDim.x >> 5); ++w) t += sm[w];
    counts[blockIdx.x] = t;
  }
}

template <class T>
__global__ void nonzero_write(const T* __restrict__ x, int64_t n, const int64_t* __restrict__ offsets,
                              int64_t* __restrict__ out, Dims dims) {
  const int64_t per_block = int64_t(kChunk) * 4;
  const int64_t begin = blockIdx.x * per_block, end = imin(n, begin + per_block);
  __shared__ int warp_tot[32];
  int64_t pos = offsets[blockIdx.x];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int64_t i0 = begin; i0 < end; i0 += blockDim.x) {
    const int64_t i = i0 + threadIdx.x;
    const bool f = i < end && nz(x[i]);
    const unsigned ballot = __ballot_sync(0xffffffffu, f);
    const int in_warp = __popc(ballot & ((1u << lane) - 1));
    if (lane == 0) warp_tot[warp] = __popc(ballot);
    __syncthreads();
    int before_w = 0, total = 0;
    for (int w = 0; w < nw; ++w) {
      if (w < warp) before_w += warp_tot[w];
      total += warp_tot[w];
    }
    if (f) {
      int64_t row = pos + before_w + in_warp, rem = i;
      for (int d = dims.rank - 1; d >= 0; --d) {
        out[row * dims.rank + d] = rem % dims.d[d];
        rem /= dims.d[d];
      }
    }
    pos += total;
    __syncthreads();
  }
}

}  // namespace

void run_cumsum(Context& ctx, const CumSumParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  if (x.numel() == 0) return;
  const int64_t rank = int64_t(x.dims.size());
  const int64_t axis = canonical_axis(call.layer, p.axis, rank);
  const int64_t outer = product(x.dims, 0, axis), L = rank ? x.dims[axis] : 1, inner = product(x.dims, axis + 1);
  dispatch_all(x.dtype, [&](auto t) {
    using T = decltype(t);
    using A = std::conditional_t<is_float_storage_v<T>, float, int64_t>;
    cumsum_kernel<T, A><<<grid_for(ctx, outer * inner, 128), 128, 0, ctx.stream>>>(
        static_cast<const T*>(x.data), static_cast<T*>(y.data), outer, L, inner, p.exclusive, p.reverse);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void run_topk(Context& ctx, const TopKParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& vals = call.outputs.at(0);
  const TensorView& idx = call.outputs.at(1);
  if (vals.numel() == 0) return;
  const int64_t rank = int64_t(x.dims.size());
  const int64_t axis = canonical_axis(call.layer, p.axis, rank);
  const int64_t L = x.dims.at(axis), inner = product(x.dims, axis + 1), rows = product(x.dims, 0, axis) * inner;
  const int64_t k = vals.dims.at(axis);  // the whole axis for TopKParams::kWholeAxis
  if (k > L) throw ShapeError(call.layer.label() + ": k = " + std::to_string(k) + " exceeds the axis size " + std::to_string(L));
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(rows, int64_t(ctx.sm_count) * 16));
  dispatch_all(x.dtype, [&](auto t) {
    using T = decltype(t);
    if (L <= 4096) {
      int P = 1;
      while (P < L) P <<= 1;
      const size_t smem = size_t(P) * (sizeof(float) + sizeof(int));
      topk_bitonic<T><<<grid, 256, smem, ctx.stream>>>(static_cast<const T*>(x.data), static_cast<T*>(vals.data),
                                                       static_cast<int64_t*>(idx.data), rows, L, inner, k, P, p.largest);
    } else {
      topk_select<T><<<grid, 256, 0, ctx.stream>>>(static_cast<const T*>(x.data), static_cast<T*>(vals.data),
                                                   static_cast<int64_t*>(idx.data), rows, L, inner, k, p.largest);
    }
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void run_nonzero(Context& ctx, const NonZeroParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const int64_t n = x.numel();
  const int64_t rank = int64_t(x.dims.size());
  if (rank > kMaxRank) fail(call.layer, "rank above 8");
  if (ctx.capturing()) fail(call.layer, "nonzero needs a host synchronization and cannot run inside a CUDA graph");
  const int64_t per_block = int64_t(kChunk) * 4;
  const int64_t blocks = std::max<int64_t>(1, ceil_div(n, per_block));
  int64_t* dev = nullptr;  // counts, then offsets
  KILN_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&dev), sizeof(int64_t) * blocks, ctx.stream));
  std::vector<int64_t> host(blocks, 0);
  if (n > 0) {
    dispatch_all(x.dtype, [&](auto t) {
      using T = decltype(t);
      nonzero_count<T><<<unsigned(blocks), kChunk, 0, ctx.stream>>>(static_cast<const T*>(x.data), n, dev);
    });
    KILN_CUDA_LAUNCH_CHECK();
    KILN_CUDA_CHECK(cudaMemcpyAsync(host.data(), dev, sizeof(int64_t) * blocks, cudaMemcpyDeviceToHost, ctx.stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));  // the output's shape depends on these counts
  }
  int64_t total = 0;
  for (auto& c : host) {
    int64_t t = c;
    c = total;
    total += t;
  }
  TensorView out = call.outputs.at(0).data ? call.outputs.at(0) : call.allocate_output(0, {total, rank});
  call.outputs.at(0) = out;
  if (total > 0 && rank > 0) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(dev, host.data(), sizeof(int64_t) * blocks, cudaMemcpyHostToDevice, ctx.stream));
    dispatch_all(x.dtype, [&](auto t) {
      using T = decltype(t);
      nonzero_write<T><<<unsigned(blocks), kChunk, 0, ctx.stream>>>(static_cast<const T*>(x.data), n, dev,
                                                                     static_cast<int64_t*>(out.data), make_dims(x.dims));
    });
    KILN_CUDA_LAUNCH_CHECK();
    // `host` is pageable and goes out of scope: the copy above must be done before we return.
    KILN_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  }
  KILN_CUDA_CHECK(cudaFreeAsync(dev, ctx.stream));
}

}  // namespace kiln::engine::cuda
