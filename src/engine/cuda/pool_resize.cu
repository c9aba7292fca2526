// Pooling (max / average, plain and adaptive) and resize (nearest, nearest-exact, linear), 1 to 3
// spatial dims, one thread per output element. Fewer spatial dims are padded to three with size-1
// dims in front, so one kernel serves 1d/2d/3d. Index arithmetic follows PyTorch's kernels
// (average divisor with count_include_pad and clipping; adaptive windows floor/ceil; resize source
// coordinates computed in fp32 as PyTorch does).
#include "engine/cuda/device.cuh"

namespace kiln::engine::cuda {
namespace {

struct Spatial3 {
  int64_t in[3], out[3], k[3], s[3], pad[3], dil[3];
  float scale[3];  // resize: input/output ratio (or 1/scale factor)
};

// Pads the trailing `n` values of v into three, the missing leading ones set to `fill`.
void put3(int64_t* dst, const std::vector<int64_t>& v, size_t n, int64_t fill) {
  for (int i = 0; i < 3; ++i) dst[i] = fill;
  for (size_t i = 0; i < n && i < v.size(); ++i) dst[3 - n + i] = v[i];
}

template <class T>
__global__ void pool_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, Spatial3 g, bool is_max, bool adaptive,
                            bool count_include_pad, int64_t divisor, int64_t channels_last) {
  // channels_last = C for [N, H, W, C] data (neighbouring threads: neighbouring channels, so
  // reads coalesce), else 0 for [N, C, *spatial].
  const int64_t step_sp = channels_last ? channels_last : 1;  // elements between spatial neighbours
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t o[3], rem = i, ch = 0;
    if (channels_last) {
      ch = rem % channels_last;
      rem /= channels_last;
    }
    for (int d = 2; d >= 0; --d) {
      o[d] = rem % g.out[d];
      rem /= g.out[d];
    }
    const int64_t nc = rem;  // fused batch * channel (NCHW), batch (NHWC)
    int64_t lo[3], hi[3], step[3];
    int64_t pool_size = 1;
    for (int d = 0; d < 3; ++d) {
      if (adaptive) {
        lo[d] = (o[d] * g.in[d]) / g.out[d];
        hi[d] = ((o[d] + 1) * g.in[d] + g.out[d] - 1) / g.out[d];
        step[d] = 1;
      } else if (is_max) {
        lo[d] = o[d] * g.s[d] - g.pad[d];
        hi[d] = lo[d] + (g.k[d] - 1) * g.dil[d] + 1;
        step[d] = g.dil[d];
      } else {
        lo[d] = o[d] * g.s[d] - g.pad[d];
        hi[d] = imin(lo[d] + g.k[d], g.in[d] + g.pad[d]);
        pool_size *= hi[d] - lo[d];
        step[d] = 1;
      }
    }
    const T* xs = x + nc * g.in[0] * g.in[1] * g.in[2] * step_sp + ch;
    float best = -INFINITY, sum = 0.f;
    int64_t count = 0;
    for (int64_t a = lo[0]; a < hi[0]; a += step[0]) {
      if (a < 0 || a >= g.in[0]) continue;
      for (int64_t b = lo[1]; b < hi[1]; b += step[1]) {
        if (b < 0 || b >= g.in[1]) continue;
        for (int64_t c = lo[2]; c < hi[2]; c += step[2]) {
          if (c < 0 || c >= g.in[2]) continue;
          float v = to_float(xs[((a * g.in[1] + b) * g.in[2] + c) * step_sp]);
          if (isnan(v) || v > best) best = isnan(best) ? best : v;
          sum += v;
          ++count;
        }
      }
    }
    float r;
    if (is_max) r = best;
    else if (divisor > 0) r = sum / float(divisor);
    else if (adaptive || !count_include_pad) r = sum / float(count);
    else r = sum / float(pool_size);
    y[i] = from_float<T>(r);
  }
}

// 2-d pooling of [N, H, W, C] data with C % 8 == 0, the window fixed (not adaptive): each thread
// pools 8 neighbouring channels of one output pixel with 16-byte loads, indices in 32 bits.
// The same arithmetic as pool_kernel (NaN wins a max; average divisors alike).
struct Pool2d {
  int H, W, OH, OW, C8, kh, kw, sh, sw, ph, pw, dh, dw;
};
template <class T>
__global__ void pool2d_nhwc_vec(const T* __restrict__ x, T* __restrict__ y, uint32_t groups, Pool2d g, bool is_max,
                                bool count_include_pad, int divisor) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < groups; i += gridDim.x * blockDim.x) {
    uint32_t rem = i;
    const uint32_t cg = rem % g.C8;
    rem /= g.C8;
    const int ow = int(rem % g.OW);
    rem /= g.OW;
    const int oh = int(rem % g.OH);
    const uint32_t nb = rem / g.OH;
    const int h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    const int step_h = is_max ? g.dh : 1, step_w = is_max ? g.dw : 1;
    const T* xs = x + int64_t(nb) * g.H * g.W * g.C8 * 8 + int64_t(cg) * 8;
    float best[8], sum[8], v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) best[k] = -INFINITY, sum[k] = 0.f;
    int count = 0;
    for (int a = 0; a < g.kh; ++a) {
      const int h = h0 + a * step_h;
      if (h < 0 || h >= g.H) continue;
      for (int b = 0; b < g.kw; ++b) {
        const int w = w0 + b * step_w;
        if (w < 0 || w >= g.W) continue;
        load8(xs + (int64_t(h) * g.W + w) * g.C8 * 8, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          if (isnan(v[k]) || v[k] > best[k]) best[k] = isnan(best[k]) ? best[k] : v[k];
          sum[k] += v[k];
        }
        ++count;
      }
    }
    float div = float(count);
    if (!is_max && divisor > 0) div = float(divisor);
    else if (!is_max && count_include_pad)
      div = float((imin(h0 + g.kh, g.H + g.ph) - h0) * (imin(w0 + g.kw, g.W + g.pw) - w0));
    float o[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = is_max ? best[k] : sum[k] / div;
    store8(y + int64_t(i) * 8, o);
  }
}

// mode 0 nearest, 1 nearest-exact, 2 linear (align_corners separately)
template <class T>
__global__ void resize_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, Spatial3 g, int mode, bool align) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t o[3], rem = i;
    for (int d = 2; d >= 0; --d) {
      o[d] = rem % g.out[d];
      rem /= g.out[d];
    }
    const T* xs = x + rem * g.in[0] * g.in[1] * g.in[2];
    int64_t i0[3], i1[3];
    float w1[3];
    for (int d = 0; d < 3; ++d) {
      const int64_t in = g.in[d];
      if (mode == 0 || mode == 1) {
        float src = mode == 0 ? floorf(float(o[d]) * g.scale[d]) : floorf((float(o[d]) + 0.5f) * g.scale[d]);
        int64_t k = imin(static_cast<int64_t>(src), in - 1);
        i0[d] = i1[d] = k;
        w1[d] = 0.f;
      } else {
        float src;
        if (align) src = g.out[d] > 1 ? float(o[d]) * (float(in - 1) / float(g.out[d] - 1)) : 0.f;
        else src = fmaxf(g.scale[d] * (float(o[d]) + 0.5f) - 0.5f, 0.f);
        int64_t k = imin(static_cast<int64_t>(src), in - 1);
        i0[d] = k;
        i1[d] = k + (k < in - 1 ? 1 : 0);
        w1[d] = src - float(k);
      }
    }
    float r = 0.f;
    for (int c = 0; c < 8; ++c) {
      float w = 1.f;
      int64_t off = 0;
      for (int d = 0; d < 3; ++d) {
        const bool hi = (c >> (2 - d)) & 1;
        w *= hi ? w1[d] : 1.f - w1[d];
        off = off * g.in[d] + (hi ? i1[d] : i0[d]);
      }
      if (w != 0.f) r += w * to_float(xs[off]);
    }
    y[i] = from_float<T>(r);
  }
}

// Pooling that takes each channel's whole plane to one value (adaptive pooling to 1x1 — the
// squeeze-and-excite and classifier heads — or a window covering the unpadded input) is a
// reduction: it runs as one, in parallel over the plane, not one thread walking it.
bool is_global(const PoolingParams& p, const TensorView& x, const TensorView& y) {
  const size_t rank = x.dims.size();
  if (rank < 3) return false;
  const size_t first = p.channels_last ? 1 : 2, last = p.channels_last ? rank - 1 : rank;
  for (size_t d = first; d < last; ++d)
    if (y.dims[d] != 1) return false;
  if (!p.adaptive_output.empty()) return true;
  if (p.divisor_override || p.ceil_mode) return false;
  for (size_t d = first, i = 0; d < last; ++d, ++i) {
    const int64_t k = i < p.kernel.size() ? p.kernel[i] : 1;
    const int64_t pad = i < p.padding.size() ? p.padding[i] : 0;
    const int64_t dil = i < p.dilation.size() ? p.dilation[i] : 1;
    if (k != x.dims[d] || pad != 0 || dil != 1) return false;
  }
  return true;
}

std::vector<bool> spatial_axes(const PoolingParams& p, size_t rank) {
  std::vector<bool> mask(rank, false);
  for (size_t d = p.channels_last ? 1 : 2; d < (p.channels_last ? rank - 1 : rank); ++d) mask[d] = true;
  return mask;
}

}  // namespace

size_t pooling_workspace(const Context& ctx, const PoolingParams& p, const std::vector<TensorView>& in) {
  if (in.empty() || in[0].dims.size() < 3) return 0;
  // The output's spatial dims are all 1 exactly when is_global holds for adaptive pooling; for a
  // fixed window the workspace of a reduction is asked for whenever it could be one (it is small).
  return reduce_over_workspace(ctx, in[0], spatial_axes(p, in[0].dims.size()));
}

void run_pooling(Context& ctx, const PoolingParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  const int64_t n = y.numel();
  if (n == 0) return;
  if (x.is_contiguous() && y.is_contiguous() && is_global(p, x, y)) {
    reduce_over(ctx, call, p.type == PoolType::kMax ? ReduceOp::kMax : ReduceOp::kMean,
                spatial_axes(p, x.dims.size()));
    return;
  }
  const size_t ns = x.dims.size() - 2;
  if (ns < 1 || ns > 3) fail(call.layer, "pooling needs 1 to 3 spatial dims");
  if (p.channels_last && ns != 2) fail(call.layer, "channels-last pooling needs a 2-d input");
  // Spatial dims: after [N, C] (NCHW) or between N and C (NHWC).
  auto spatial = [&](const std::vector<int64_t>& d) {
    return p.channels_last ? std::vector<int64_t>(d.begin() + 1, d.end() - 1) : std::vector<int64_t>(d.begin() + 2, d.end());
  };
  Spatial3 g{};
  put3(g.in, spatial(x.dims), ns, 1);
  put3(g.out, spatial(y.dims), ns, 1);
  put3(g.k, p.kernel, ns, 1);
  put3(g.s, p.stride.empty() ? p.kernel : p.stride, ns, 1);
  put3(g.pad, p.padding, ns, 0);
  put3(g.dil, p.dilation, ns, 1);
  for (int d = 0; d < 3; ++d) {
    if (g.s[d] <= 0) g.s[d] = 1;
    if (g.dil[d] <= 0) g.dil[d] = 1;
  }
  const bool adaptive = !p.adaptive_output.empty();
  const int64_t C = x.dims.back();
  if (p.channels_last && !adaptive && C % 8 == 0 && x.numel() <= INT32_MAX && y.numel() <= INT32_MAX &&
      reinterpret_cast<uintptr_t>(x.data) % 16 == 0 && reinterpret_cast<uintptr_t>(y.data) % 16 == 0) {
    const Pool2d g2{int(g.in[1]), int(g.in[2]), int(g.out[1]), int(g.out[2]), int(C / 8), int(g.k[1]), int(g.k[2]),
                    int(g.s[1]), int(g.s[2]), int(g.pad[1]), int(g.pad[2]), int(g.dil[1]), int(g.dil[2])};
    const uint32_t groups = static_cast<uint32_t>(n / 8);
    dispatch_float(x.dtype, call.layer, [&](auto t) {
      using T = decltype(t);
      pool2d_nhwc_vec<T><<<grid_for(ctx, groups, 256), 256, 0, ctx.stream>>>(
          static_cast<const T*>(x.data), static_cast<T*>(y.data), groups, g2, p.type == PoolType::kMax,
          p.count_include_pad, int(p.divisor_override.value_or(0)));
    });
    KILN_CUDA_LAUNCH_CHECK();
    return;
  }
  dispatch_float(x.dtype, call.layer, [&](auto t) {
    using T = decltype(t);
    pool_kernel<T><<<grid_for(ctx, n, 256), 256, 0, ctx.stream>>>(
        static_cast<const T*>(x.data), static_cast<T*>(y.data), n, g, p.type == PoolType::kMax, adaptive,
        p.count_include_pad, p.divisor_override.value_or(0), p.channels_last ? x.dims.back() : 0);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

void run_resize(Context& ctx, const ResizeParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  const int64_t n = y.numel();
  if (n == 0) return;
  const size_t ns = x.dims.size() - 2;
  if (ns < 1 || ns > 3) fail(call.layer, "resize needs 1 to 3 spatial dims");
  Spatial3 g{};
  put3(g.in, std::vector<int64_t>(x.dims.begin() + 2, x.dims.end()), ns, 1);
  put3(g.out, std::vector<int64_t>(y.dims.begin() + 2, y.dims.end()), ns, 1);
  for (int d = 0; d < 3; ++d) {
    g.scale[d] = 1.f;
    int sd = d - int(3 - ns);  // index among the real spatial dims
    if (sd < 0) continue;
    if (size_t(sd) < p.scales.size() && p.scales[sd] > 0) g.scale[d] = static_cast<float>(1.0 / p.scales[sd]);
    else g.scale[d] = static_cast<float>(double(g.in[d]) / double(g.out[d]));
  }
  const int mode = p.mode == ResizeMode::kNearest ? 0 : p.mode == ResizeMode::kNearestExact ? 1 : 2;
  dispatch_float(x.dtype, call.layer, [&](auto t) {
    using T = decltype(t);
    resize_kernel<T><<<grid_for(ctx, n, 256), 256, 0, ctx.stream>>>(static_cast<const T*>(x.data), static_cast<T*>(y.data),
                                                                     n, g, mode, p.align_corners);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::engine::cuda
