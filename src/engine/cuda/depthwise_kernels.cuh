// The depthwise kernels' templates and their typed launchers, included by depthwise_rows_*.cu (one
// per storage type) and depthwise_tiled_*.cu (one per filter size), which instantiate them in
// parallel translation units (depthwise.cpp says why kiln has its own kernels and how they load).
#pragma once

#include "engine/cuda/depthwise_launch.h"
#include "engine/cuda/device.cuh"

namespace kiln::engine::cuda::dw {

template <class T, int VEC>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[VEC]) {
  if constexpr (VEC == 8) {
    load8(p, v);
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = to_float(p[k]);
  }
}

template <class T, int VEC>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[VEC]) {
  if constexpr (VEC == 8) {
    store8(p, v);
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) p[k] = from_float<T>(v[k]);
  }
}

// The block's filters (fp32, [kh * kw][lanes]) and bias ([lanes]) into shared memory; lanes past
// the last channel get zeros. Ends with the block's barrier.
template <class T>
__device__ __forceinline__ void stage_filters(const T* __restrict__ w, const T* __restrict__ bias, const DwGeom& g,
                                              int lanes, int c_block, float* smem) {
  const int taps = g.KH * g.KW;
  float* wsm = smem;
  float* bsm = smem + taps * lanes;
  for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < taps * lanes; i += blockDim.x * blockDim.y) {
    const int lane = i % lanes, tap = i / lanes, c = c_block + lane;
    wsm[i] = c < g.C ? to_float(w[int64_t(c) * taps + tap]) : 0.f;
  }
  for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < lanes; i += blockDim.x * blockDim.y) {
    const int c = c_block + i;
    bsm[i] = bias && c < g.C ? to_float(bias[c]) : 0.f;
  }
  __syncthreads();
}

// The epilogue of a tile of TW outputs along a row: + bias, + residual, activation, one store each.
template <class T, int VEC, int TW>
__device__ __forceinline__ void store_tile(const float (&acc)[TW][VEC], const float* bias, const T* __restrict__ residual,
                                           T* __restrict__ y, const DwGeom& g, int n, int oh, int ow0, int c0, int act,
                                           float alpha, float beta) {
#pragma unroll
  for (int j = 0; j < TW; ++j) {
    const int ow = ow0 + j;
    if (ow >= g.OW) break;
    const int64_t off = ((int64_t(n) * g.OH + oh) * g.OW + ow) * g.C + c0;
    float r[VEC];
    if (residual) load_vec<T, VEC>(residual + off, r);
    float o[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float s = acc[j][k] + bias[k];
      if (residual) s += r[k];
      o[k] = activate(act, s, alpha, beta);
    }
    store_vec<T, VEC>(y + off, o);
  }
}

// blockDim = (channel groups per block, pixel tiles per block); blockIdx.y picks the channel
// groups; pixel tiles stride over blockIdx.x. Shared memory: the block's filters as
// [kh * kw][groups * VEC] floats, then its bias.
template <class T, int VEC, int TW>
__global__ void depthwise_nhwc(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                               const T* __restrict__ residual, T* __restrict__ y, DwGeom g, int act, float alpha,
                               float beta) {
  extern __shared__ float smem[];
  const int lanes = blockDim.x * VEC;  // channels this block covers
  const int c_block = blockIdx.y * lanes;
  stage_filters(w, bias, g, lanes, c_block, smem);
  const float* wsm = smem;
  const float* bsm = smem + g.KH * g.KW * lanes;

  const int c0 = c_block + threadIdx.x * VEC;
  if (c0 >= g.C) return;  // after the only barrier: idle lanes of a partial channel block
  const int lane0 = threadIdx.x * VEC;
  const int64_t tiles = int64_t(g.N) * g.OH * g.tiles_w;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; t < tiles; t += int64_t(gridDim.x) * blockDim.y) {
    const int tw = int(t % g.tiles_w);
    const int64_t rest = t / g.tiles_w;
    const int oh = int(rest % g.OH);
    const int n = int(rest / g.OH);
    const int ow0 = tw * TW;
    float acc[TW][VEC];
#pragma unroll
    for (int j = 0; j < TW; ++j)
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[j][k] = 0.f;
    const T* xn = x + int64_t(n) * g.H * g.W * g.C + c0;
    for (int kh = 0; kh < g.KH; ++kh) {
      const int ih = oh * g.SH - g.PH + kh * g.DH;
      if (ih < 0 || ih >= g.H) continue;
      const T* xrow = xn + int64_t(ih) * g.W * g.C;
      const float* wrow = wsm + kh * g.KW * lanes + lane0;
      if (g.DW == 1) {
        // Input column u (relative to the tile's first) feeds output j through filter tap u - j*SW.
        const int iw0 = ow0 * g.SW - g.PW;
        const int span = (TW - 1) * g.SW + g.KW;
        for (int u = 0; u < span; ++u) {
          const int iw = iw0 + u;
          if (iw < 0 || iw >= g.W) continue;
          float v[VEC];
          load_vec<T, VEC>(xrow + int64_t(iw) * g.C, v);
#pragma unroll
          for (int j = 0; j < TW; ++j) {
            const int kw = u - j * g.SW;
            if (kw < 0 || kw >= g.KW) continue;
            const float* wk = wrow + kw * lanes;
#pragma unroll
            for (int k = 0; k < VEC; ++k) acc[j][k] = fmaf(v[k], wk[k], acc[j][k]);
          }
        }
      } else {
        for (int kw = 0; kw < g.KW; ++kw) {
          const float* wk = wrow + kw * lanes;
#pragma unroll
          for (int j = 0; j < TW; ++j) {
            const int iw = (ow0 + j) * g.SW - g.PW + kw * g.DW;
            if (iw < 0 || iw >= g.W) continue;
            float v[VEC];
            load_vec<T, VEC>(xrow + int64_t(iw) * g.C, v);
#pragma unroll
            for (int k = 0; k < VEC; ++k) acc[j][k] = fmaf(v[k], wk[k], acc[j][k]);
          }
        }
      }
    }
    store_tile<T, VEC, TW>(acc, bsm + lane0, residual, y, g, n, oh, ow0, c0, act, alpha, beta);
  }
}

// The common shapes (3x3, 5x5, 7x7 filters, stride 1 or 2, no dilation) fully unrolled: per filter
// row, the SPAN input vectors the TW outputs need sit in registers, and each tap's weights are
// read from shared memory once and applied to all TW outputs. The generic kernel above re-reads
// the weights per output and branches per tap; this one has no branches in its inner loops.
template <class T, int VEC, int TW, int KW, int SW>
__global__ void __launch_bounds__(256) depthwise_nhwc_fixed(const T* __restrict__ x, const T* __restrict__ w,
                                                            const T* __restrict__ bias, const T* __restrict__ residual,
                                                            T* __restrict__ y, DwGeom g, int act, float alpha,
                                                            float beta) {
  constexpr int SPAN = (TW - 1) * SW + KW;
  extern __shared__ float smem[];
  const int lanes = blockDim.x * VEC;  // channels this block covers
  const int c_block = blockIdx.y * lanes;
  stage_filters(w, bias, g, lanes, c_block, smem);
  const float* wsm = smem;
  const float* bsm = smem + g.KH * g.KW * lanes;
  const int c0 = c_block + threadIdx.x * VEC;
  if (c0 >= g.C) return;
  const int lane0 = threadIdx.x * VEC;
  const int64_t tiles = int64_t(g.N) * g.OH * g.tiles_w;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; t < tiles; t += int64_t(gridDim.x) * blockDim.y) {
    const int tw = int(t % g.tiles_w);
    const int64_t rest = t / g.tiles_w;
    const int oh = int(rest % g.OH);
    const int n = int(rest / g.OH);
    const int iw0 = tw * TW * SW - g.PW;
    float acc[TW][VEC];
#pragma unroll
    for (int j = 0; j < TW; ++j)
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[j][k] = 0.f;
    const T* xn = x + int64_t(n) * g.H * g.W * g.C + c0;
    for (int kh = 0; kh < g.KH; ++kh) {
      const int ih = oh * g.SH - g.PH + kh;
      if (ih < 0 || ih >= g.H) continue;
      const T* xrow = xn + int64_t(ih) * g.W * g.C;
      float v[SPAN][VEC];
#pragma unroll
      for (int u = 0; u < SPAN; ++u) {
        const int iw = iw0 + u;
        if (iw >= 0 && iw < g.W) {
          load_vec<T, VEC>(xrow + int64_t(iw) * g.C, v[u]);
        } else {
#pragma unroll
          for (int k = 0; k < VEC; ++k) v[u][k] = 0.f;
        }
      }
      const float* wrow = wsm + kh * KW * lanes + lane0;
#pragma unroll
      for (int kw = 0; kw < KW; ++kw) {
        float wk[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) wk[k] = wrow[kw * lanes + k];
#pragma unroll
        for (int j = 0; j < TW; ++j)
#pragma unroll
          for (int k = 0; k < VEC; ++k) acc[j][k] = fmaf(v[j * SW + kw][k], wk[k], acc[j][k]);
      }
    }
    const int ow0 = tw * TW;
    store_tile<T, VEC, TW>(acc, bsm + lane0, residual, y, g, n, oh, ow0, c0, act, alpha, beta);
  }
}

// A 2-d tile of outputs per thread: 4 channels of a TH x TW block of output pixels. Both kernels above
// walk one output row per thread, so each input vector is loaded by K different threads (one per
// filter row) and each tap's 8 weights feed only 4 outputs: latency-bound on loads and shared
// memory. Here the thread slides down the ROWS = (TH-1)*S + K input rows its block needs, loads each
// input vector once and applies it to every output row and column it touches; each tap's weights
// (one 16-byte shared read) feed 4*TH outputs. Loads per output: ROWS*SPAN/(4*TH) (6.25 for 7x7 at
// stride 1 and a 4x4 tile) instead of K*(4+K-1)/4 (17.5). Smaller tiles (2x4, and 1x2 or one pixel)
// trade that reuse for threads: a batch-1 layer (MobileNet's or ConvNeXt's 28x28 to 7x7 stages)
// has too few 4x4 tiles to give each SM more than a warp or two, and its time is then the latency
// of one thread's long chain of loads (15 us for a 28x28x120 5x5 layer, against ~3 us with one
// pixel per thread, H200). Every tile size is timed per shape.
// 16-bit types only: fp32 depthwise layers are rare and the unrolled kernel serves them.
template <class T, int K, int S, int TH, int TW>
__global__ void __launch_bounds__(256) depthwise_nhwc_tiled(const T* __restrict__ x, const T* __restrict__ w,
                                                            const T* __restrict__ bias, const T* __restrict__ residual,
                                                            T* __restrict__ y, DwGeom g, int act, float alpha,
                                                            float beta) {
  constexpr int ROWS = (TH - 1) * S + K, SPAN = (TW - 1) * S + K;
  extern __shared__ float smem[];
  const int lanes = blockDim.x * 4;
  const int c_block = blockIdx.y * lanes;
  stage_filters(w, bias, g, lanes, c_block, smem);
  const float* wsm = smem;
  const float* bsm = smem + K * K * lanes;
  const int c0 = c_block + threadIdx.x * 4;
  if (c0 >= g.C) return;
  const int lane0 = threadIdx.x * 4;
  const int tiles_h = (g.OH + TH - 1) / TH, tiles_w = (g.OW + TW - 1) / TW;
  const int64_t tiles = int64_t(g.N) * tiles_h * tiles_w;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; t < tiles; t += int64_t(gridDim.x) * blockDim.y) {
    const int tw = int(t % tiles_w);
    const int64_t rest = t / tiles_w;
    const int th = int(rest % tiles_h);
    const int n = int(rest / tiles_h);
    const int oh0 = th * TH, ow0 = tw * TW;
    const int ih0 = oh0 * S - g.PH, iw0 = ow0 * S - g.PW;
    float acc[TH][TW][4];
#pragma unroll
    for (int i = 0; i < TH; ++i)
#pragma unroll
      for (int j = 0; j < TW; ++j)
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.f;
    const T* xn = x + int64_t(n) * g.H * g.W * g.C + c0;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const int ih = ih0 + r;
      const bool row_inside = ih >= 0 && ih < g.H;
      const T* xrow = xn + int64_t(ih) * g.W * g.C;
      float v[SPAN][4];
#pragma unroll
      for (int u = 0; u < SPAN; ++u) {
        const int iw = iw0 + u;
        if (row_inside && iw >= 0 && iw < g.W) {
          load4(xrow + int64_t(iw) * g.C, v[u]);
        } else {
#pragma unroll
          for (int k = 0; k < 4; ++k) v[u][k] = 0.f;
        }
      }
#pragma unroll
      for (int i = 0; i < TH; ++i) {
        const int kh = r - i * S;  // the filter row input row r is for output row i (compile-time)
        if (kh < 0 || kh >= K) continue;
#pragma unroll
        for (int kw = 0; kw < K; ++kw) {
          const float4 wk = *reinterpret_cast<const float4*>(wsm + (kh * K + kw) * lanes + lane0);
#pragma unroll
          for (int j = 0; j < TW; ++j) {
            acc[i][j][0] = fmaf(v[j * S + kw][0], wk.x, acc[i][j][0]);
            acc[i][j][1] = fmaf(v[j * S + kw][1], wk.y, acc[i][j][1]);
            acc[i][j][2] = fmaf(v[j * S + kw][2], wk.z, acc[i][j][2]);
            acc[i][j][3] = fmaf(v[j * S + kw][3], wk.w, acc[i][j][3]);
          }
        }
      }
    }
    const float* b = bsm + lane0;
#pragma unroll
    for (int i = 0; i < TH; ++i) {
      const int oh = oh0 + i;
      if (oh >= g.OH) break;
#pragma unroll
      for (int j = 0; j < TW; ++j) {
        const int ow = ow0 + j;
        if (ow >= g.OW) break;
        const int64_t off = ((int64_t(n) * g.OH + oh) * g.OW + ow) * g.C + c0;
        float rv[4] = {0.f, 0.f, 0.f, 0.f};
        if (residual) load4(residual + off, rv);
        float o[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) o[k] = activate(act, acc[i][j][k] + b[k] + rv[k], alpha, beta);
        store4(y + off, o);
      }
    }
  }
}

template <class T, int K>
void tiled(const Launch& a, DepthwiseKernel kernel) {
  const DwGeom& g = a.g;
  const int rows = kernel == DepthwiseKernel::kTiled ? 4 : kernel == DepthwiseKernel::kTiledShort ? 2 : 1;
  const int cols = kernel == DepthwiseKernel::kTiledPixel ? 1 : kernel == DepthwiseKernel::kTiledPair ? 2 : 4;
  const int groups = g.C / 4;
  const int gx = std::min(groups, 32);  // channel groups per block
  const int gy = std::max(1, 256 / gx);  // pixel tiles per block
  const size_t smem = (size_t(g.KH) * g.KW + 1) * size_t(gx) * 4 * sizeof(float);
  const int64_t tiles = int64_t(g.N) * ceil_div(g.OH, rows) * ceil_div(g.OW, cols);
  const dim3 block{unsigned(gx), unsigned(gy)};
  const dim3 grid{unsigned(std::min<int64_t>(ceil_div(tiles, gy), int64_t(a.sm_count) * 32)),
                  unsigned(ceil_div(groups, gx))};
  const T* xp = static_cast<const T*>(a.x);
  const T* wp = static_cast<const T*>(a.w);
  const T* bp = static_cast<const T*>(a.bias);
  const T* rp = static_cast<const T*>(a.residual);
  T* yp = static_cast<T*>(a.y);
  auto run = [&](auto s_tag) {
    constexpr int S = decltype(s_tag)::value;
    switch (kernel) {
      case DepthwiseKernel::kTiled:
        depthwise_nhwc_tiled<T, K, S, 4, 4><<<grid, block, smem, a.stream>>>(xp, wp, bp, rp, yp, g, a.act, a.alpha, a.beta);
        break;
      case DepthwiseKernel::kTiledShort:
        depthwise_nhwc_tiled<T, K, S, 2, 4><<<grid, block, smem, a.stream>>>(xp, wp, bp, rp, yp, g, a.act, a.alpha, a.beta);
        break;
      case DepthwiseKernel::kTiledPair:
        depthwise_nhwc_tiled<T, K, S, 1, 2><<<grid, block, smem, a.stream>>>(xp, wp, bp, rp, yp, g, a.act, a.alpha, a.beta);
        break;
      default:
        depthwise_nhwc_tiled<T, K, S, 1, 1><<<grid, block, smem, a.stream>>>(xp, wp, bp, rp, yp, g, a.act, a.alpha, a.beta);
    }
  };
  if (g.SW == 1) run(std::integral_constant<int, 1>{});
  else run(std::integral_constant<int, 2>{});
}

// The tiled kernels of one filter size K, for fp16 and bf16 storage.
template <int K>
void tiled_by_type(const Launch& a, DataType dtype, DepthwiseKernel kernel) {
  if (dtype == DataType::kFloat16) tiled<__half, K>(a, kernel);
  else tiled<__nv_bfloat16, K>(a, kernel);
}

template <class T>
void rows(const Launch& a, bool vec8, bool unrolled) {
  const DwGeom& g = a.g;
  const int64_t tiles = int64_t(g.N) * g.OH * g.tiles_w;
  auto launch = [&](auto vec_tag) {
    constexpr int VEC = decltype(vec_tag)::value;
    const int groups = int(ceil_div(g.C, VEC));
    const int gx = std::min(groups, VEC == 8 ? 16 : 32);  // channel groups per block
    const int gy = std::max(1, 256 / gx);                  // pixel tiles per block
    const size_t smem = (size_t(g.KH) * g.KW + 1) * size_t(gx) * VEC * sizeof(float);
    const dim3 block{unsigned(gx), unsigned(gy)};
    const int64_t want = ceil_div(tiles, gy);
    const dim3 grid{unsigned(std::min<int64_t>(want, int64_t(a.sm_count) * 32)), unsigned(ceil_div(groups, gx))};
    const T* xp = static_cast<const T*>(a.x);
    const T* wp = static_cast<const T*>(a.w);
    const T* bp = static_cast<const T*>(a.bias);
    const T* rp = static_cast<const T*>(a.residual);
    T* yp = static_cast<T*>(a.y);
    // The unrolled kernel for its shapes (the square filters of the common networks, the
    // stride the same both ways), the generic one for the rest.
    const bool fixed = unrolled && g.DH == 1 && g.DW == 1 && g.SH == g.SW && (g.SW == 1 || g.SW == 2);
    auto run_fixed = [&](auto kw_tag, auto sw_tag) {
      constexpr int KW = decltype(kw_tag)::value, SW = decltype(sw_tag)::value;
      depthwise_nhwc_fixed<T, VEC, kTileW, KW, SW>
          <<<grid, block, smem, a.stream>>>(xp, wp, bp, rp, yp, g, a.act, a.alpha, a.beta);
    };
    auto with_stride = [&](auto kw_tag) {
      if (g.SW == 1) run_fixed(kw_tag, std::integral_constant<int, 1>{});
      else run_fixed(kw_tag, std::integral_constant<int, 2>{});
    };
    if (fixed && g.KW == 3) with_stride(std::integral_constant<int, 3>{});
    else if (fixed && g.KW == 5) with_stride(std::integral_constant<int, 5>{});
    else if (fixed && g.KW == 7) with_stride(std::integral_constant<int, 7>{});
    else depthwise_nhwc<T, VEC, kTileW><<<grid, block, smem, a.stream>>>(xp, wp, bp, rp, yp, g, a.act, a.alpha, a.beta);
  };
  if (vec8) launch(std::integral_constant<int, 8>{});
  else launch(std::integral_constant<int, 1>{});
}

}  // namespace kiln::engine::cuda::dw
