// Softmax / log-softmax and the normalizations (layer, batch for inference, group), all with
// fp32 statistics whatever the storage type. Row kernels give one block per row: the row is read
// once for each statistic and once more to write (rows are small enough to stay in L2), and the
// variance is taken around the mean (two passes) rather than from E[x^2] - E[x]^2.
#include "engine/cuda/device.cuh"

namespace kiln::engine::cuda {
namespace {

// Scale/bias/mean/var may have their own float dtype: loaded through a run-time switch.
__device__ __forceinline__ float load_any(const void* p, int dt, int64_t i) {
  switch (dt) {
    case 1: return __half2float(static_cast<const __half*>(p)[i]);
    case 2: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
int dt_code(DataType t) { return t == DataType::kFloat16 ? 1 : t == DataType::kBFloat16 ? 2 : 0; }

int row_threads(int64_t L) { return L >= 1024 ? 512 : L >= 256 ? 256 : L >= 64 ? 64 : 32; }

// ---- softmax ------------------------------------------------------------------------------------
template <class T>
__global__ void softmax_rows(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t L, bool log) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * L;
    T* yr = y + r * L;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) m = fmaxf(m, to_float(xr[j]));
    m = block_max(m, red);
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) s += __expf(to_float(xr[j]) - m);
    s = block_sum(s, red);
    const float inv = 1.f / s, ls = logf(s);
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      float v = to_float(xr[j]) - m;
      yr[j] = from_float<T>(log ? v - ls : __expf(v) * inv);
    }
  }
}

// Softmax over a non-innermost axis: one thread per (outer, inner) column.
template <class T>
__global__ void softmax_cols(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t L, int64_t inner, bool log) {
  const int64_t n = outer * inner;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < n; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / inner, i = c % inner;
    const T* xc = x + o * L * inner + i;
    T* yc = y + o * L * inner + i;
    float m = -INFINITY, s = 0.f;
    for (int64_t j = 0; j < L; ++j) m = fmaxf(m, to_float(xc[j * inner]));
    for (int64_t j = 0; j < L; ++j) s += __expf(to_float(xc[j * inner]) - m);
    const float inv = 1.f / s, ls = logf(s);
    for (int64_t j = 0; j < L; ++j) {
      float v = to_float(xc[j * inner]) - m;
      yc[j * inner] = from_float<T>(log ? v - ls : __expf(v) * inv);
    }
  }
}

// ---- layer norm / group norm: one block per normalized row ----------------------------------------
// Row r covers `L` contiguous elements. Affine parameter index of element j of row r:
//   layer norm: j;  group norm: channel = (r % groups) * (C / groups) + j / inner.
template <class T>
__global__ void norm_rows(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t L, float eps,
                          const void* scale, const void* bias, int sdt, int bdt, int64_t groups, int64_t cpg, int64_t inner) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * L;
    T* yr = y + r * L;
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) s += to_float(xr[j]);
    const float mean = block_sum(s, red) / float(L);
    float q = 0.f;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      float d = to_float(xr[j]) - mean;
      q += d * d;
    }
    const float rstd = rsqrtf(block_sum(q, red) / float(L) + eps);
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      float v = (to_float(xr[j]) - mean) * rstd;
      int64_t k = groups > 0 ? (r % groups) * cpg + j / inner : j;
      if (scale) v *= load_any(scale, sdt, k);
      if (bias) v += load_any(bias, bdt, k);
      yr[j] = from_float<T>(v);
    }
  }
}

// Layer norm of rows up to 32 * VPL elements: one warp per row, the row held in registers (read
// once from memory), warp shuffles for the two sums. A transformer's rows (768 .. 1024 wide) are
// too short to keep a block of threads and its barriers busy.
template <class T, int VPL>
__global__ void layernorm_warp_rows(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int L, float eps,
                                    const void* scale, const void* bias, int sdt, int bdt) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= rows) return;
  const T* xr = x + r * L;
  T* yr = y + r * L;
  float v[VPL];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < VPL; ++i) {
    const int j = lane + 32 * i;
    v[i] = j < L ? to_float(xr[j]) : 0.f;
    s += v[i];
  }
  const float mean = warp_sum(s) / float(L);
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < VPL; ++i) {
    const float d = lane + 32 * i < L ? v[i] - mean : 0.f;
    q += d * d;
  }
  const float rstd = rsqrtf(warp_sum(q) / float(L) + eps);
#pragma unroll
  for (int i = 0; i < VPL; ++i) {
    const int j = lane + 32 * i;
    if (j >= L) break;
    float o = (v[i] - mean) * rstd;
    if (scale) o *= load_any(scale, sdt, j);
    if (bias) o += load_any(bias, bdt, j);
    yr[j] = from_float<T>(o);
  }
}

// The same for rows of whole 16-byte groups (L % 8 == 0, aligned rows, scale and bias of one
// type G): each lane moves NV groups of 8 with vector accesses, and loads its scale and bias
// before the reductions, so their latency hides behind the sums instead of following them.
template <class T, class G, int NV>
__global__ void layernorm_warp_vec(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int L, float eps,
                                   const G* __restrict__ scale, const G* __restrict__ bias) {
  const int lane = threadIdx.x & 31;
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= rows) return;
  const T* xr = x + r * L;
  T* yr = y + r * L;
  const int groups = L / 8;
  float v[NV][8], g[NV][8], b[NV][8];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int c = lane + 32 * i;
#pragma unroll
    for (int k = 0; k < 8; ++k) v[i][k] = 0.f, g[i][k] = 1.f, b[i][k] = 0.f;
    if (c < groups) {
      load8(xr + 8 * c, v[i]);
      if (scale) load8(scale + 8 * c, g[i]);
      if (bias) load8(bias + 8 * c, b[i]);
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) s += v[i][k];
  }
  const float mean = warp_sum(s) / float(L);
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i)
    if (lane + 32 * i < groups)
#pragma unroll
      for (int k = 0; k < 8; ++k) q += (v[i][k] - mean) * (v[i][k] - mean);
  const float rstd = rsqrtf(warp_sum(q) / float(L) + eps);
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int c = lane + 32 * i;
    if (c >= groups) break;
    float o[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = (v[i][k] - mean) * rstd * g[i][k] + b[i][k];
    store8(yr + 8 * c, o);
  }
}

// ---- batch norm (inference): per-channel affine ---------------------------------------------------
template <class T>
__global__ void batchnorm_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, int64_t C, int64_t inner, float eps,
                                 const void* mean, const void* var, const void* scale, const void* bias, int mdt, int vdt,
                                 int sdt, int bdt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / inner) % C;
    float v = (to_float(x[i]) - load_any(mean, mdt, c)) * rsqrtf(load_any(var, vdt, c) + eps);
    if (scale) v *= load_any(scale, sdt, c);
    if (bias) v += load_any(bias, bdt, c);
    y[i] = from_float<T>(v);
  }
}

}  // namespace

void run_softmax(Context& ctx, const SoftmaxParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  if (x.numel() == 0) return;
  const int64_t rank = int64_t(x.dims.size());
  const int64_t axis = canonical_axis(call.layer, p.axis, rank);
  const int64_t outer = product(x.dims, 0, axis), L = rank == 0 ? 1 : x.dims[axis], inner = product(x.dims, axis + 1);
  dispatch_float(x.dtype, call.layer, [&](auto t) {
    using T = decltype(t);
    if (inner == 1) {
      unsigned grid = static_cast<unsigned>(std::min<int64_t>(outer, int64_t(ctx.sm_count) * 32));
      softmax_rows<T><<<grid, row_threads(L), 0, ctx.stream>>>(static_cast<const T*>(x.data), static_cast<T*>(y.data),
                                                                outer, L, p.log);
    } else {
      softmax_cols<T><<<grid_for(ctx, outer * inner, 128), 128, 0, ctx.stream>>>(
          static_cast<const T*>(x.data), static_cast<T*>(y.data), outer, L, inner, p.log);
    }
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void run_normalization(Context& ctx, const NormalizationParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  const int64_t n = x.numel();
  if (n == 0) return;
  const int64_t rank = int64_t(x.dims.size());
  size_t next = p.kind == NormKind::kBatch ? 3 : 1;
  const TensorView* scale = p.has_scale ? &call.inputs.at(next++) : nullptr;
  const TensorView* bias = p.has_bias ? &call.inputs.at(next++) : nullptr;
  const void* sp = scale ? scale->data : nullptr;
  const void* bp = bias ? bias->data : nullptr;
  const int sdt = scale ? dt_code(scale->dtype) : 0, bdt = bias ? dt_code(bias->dtype) : 0;
  const float eps = static_cast<float>(p.epsilon);
  dispatch_float(x.dtype, call.layer, [&](auto t) {
    using T = decltype(t);
    const T* xp = static_cast<const T*>(x.data);
    T* yp = static_cast<T*>(y.data);
    if (p.kind == NormKind::kBatch) {
      const TensorView& mean = call.inputs.at(1);
      const TensorView& var = call.inputs.at(2);
      const int64_t C = rank > 1 ? x.dims[1] : 1;
      batchnorm_kernel<T><<<grid_for(ctx, n, 256), 256, 0, ctx.stream>>>(
          xp, yp, n, C, product(x.dims, 2), eps, mean.data, var.data, sp, bp, dt_code(mean.dtype), dt_code(var.dtype), sdt, bdt);
    } else if (p.kind == NormKind::kLayer) {
      const int64_t first = canonical_axis(call.layer, p.first_axis, rank, "first_axis");
      const int64_t rows = product(x.dims, 0, first), L = product(x.dims, first);
      // Few rows (a transformer at batch 1): fewer warps per block spread them over more SMs.
      const int warps = rows >= 4 * int64_t(ctx.sm_count) ? 4 : rows >= 2 * int64_t(ctx.sm_count) ? 2 : 1;
      const unsigned grid = static_cast<unsigned>(ceil_div(rows, warps));
      auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
      const bool same_param_type = (!scale || !bias || scale->dtype == bias->dtype);
      const DataType param_type = scale ? scale->dtype : bias ? bias->dtype : x.dtype;
      if (L <= 1024 && L % 8 == 0 && aligned(xp) && aligned(yp) && (!sp || aligned(sp)) && (!bp || aligned(bp)) &&
          same_param_type && (param_type == x.dtype || param_type == DataType::kFloat32)) {
        auto launch = [&](auto g) {
          using G = decltype(g);
          auto kernel = L <= 256 ? layernorm_warp_vec<T, G, 1> : L <= 512 ? layernorm_warp_vec<T, G, 2>
                        : L <= 768 ? layernorm_warp_vec<T, G, 3> : layernorm_warp_vec<T, G, 4>;
          kernel<<<grid, warps * 32, 0, ctx.stream>>>(xp, yp, rows, int(L), eps, static_cast<const G*>(sp),
                                                      static_cast<const G*>(bp));
        };
        if (param_type == DataType::kFloat32) launch(float{});
        else launch(T{});
      } else if (L <= 1024) {
        auto launch = [&](auto kernel) {
          kernel<<<grid, warps * 32, 0, ctx.stream>>>(xp, yp, rows, int(L), eps, sp, bp, sdt, bdt);
        };
        if (L <= 128) launch(layernorm_warp_rows<T, 4>);
        else if (L <= 256) launch(layernorm_warp_rows<T, 8>);
        else if (L <= 512) launch(layernorm_warp_rows<T, 16>);
        else launch(layernorm_warp_rows<T, 32>);
      } else {
        unsigned grid = static_cast<unsigned>(std::min<int64_t>(rows, int64_t(ctx.sm_count) * 32));
        norm_rows<T><<<grid, row_threads(L), 0, ctx.stream>>>(xp, yp, rows, L, eps, sp, bp, sdt, bdt, 0, 0, 1);
      }
    } else {
      const int64_t N = x.dims.at(0), C = rank > 1 ? x.dims[1] : 1, G = p.groups;
      const int64_t inner = product(x.dims, 2), rows = N * G, L = (C / G) * inner;
      unsigned grid = static_cast<unsigned>(std::min<int64_t>(rows, int64_t(ctx.sm_count) * 32));
      norm_rows<T><<<grid, row_threads(L), 0, ctx.stream>>>(xp, yp, rows, L, eps, sp, bp, sdt, bdt, G, C / G, inner);
    }
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::engine::cuda
