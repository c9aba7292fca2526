// Convolution and transposed convolution, 1d/2d/3d, with groups, stride, padding, dilation and a
// fused epilogue (per-channel bias, activation). Every case is handled as 3-d (missing leading
// spatial dims have size 1). Forward: im2col into the workspace + one sgemm per (sample, group);
// 3x3 stride-1 ones with 32+ channels and enough tiles go through Winograd F(2x2, 3x3) (winograd.h) instead;
// 1x1 stride-1 convolutions skip im2col; depthwise ones (one input channel per group) run a
// direct loop over the worker threads. Transposed: sgemm into columns, then col2im (scatter-add).
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/onednn.h"
#include "engine/cpu/winograd.h"

namespace kiln::engine::cpu {
namespace {

// The geometry of one convolution, every spatial quantity padded to 3 dims.
struct Geometry {
  int64_t N = 0, C_in = 0, C_out = 0, groups = 1;
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1}, pad[3] = {0, 0, 0}, dil[3] = {1, 1, 1};
  int64_t in_vol() const { return in[0] * in[1] * in[2]; }
  int64_t out_vol() const { return out[0] * out[1] * out[2]; }
  int64_t k_vol() const { return k[0] * k[1] * k[2]; }
};

// Output dims given (from the view) or derived from the params (for workspace sizing).
Geometry geometry(const ConvolutionParams& p, const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                  const std::vector<int64_t>* out_dims) {
  Geometry g;
  const size_t S = x.size() - 2;
  const size_t off = 3 - S;
  g.N = x[0];
  g.C_in = x[1];
  g.groups = p.groups;
  g.C_out = p.transposed ? w[1] * p.groups : w[0];
  for (size_t i = 0; i < S; ++i) {
    g.in[off + i] = x[2 + i];
    g.k[off + i] = w[2 + i];
    if (i < p.stride.size()) g.stride[off + i] = p.stride[i];
    if (i < p.padding.size()) g.pad[off + i] = p.padding[i];
    if (i < p.dilation.size()) g.dil[off + i] = p.dilation[i];
    int64_t span = g.dil[off + i] * (g.k[off + i] - 1);
    if (out_dims) {
      g.out[off + i] = (*out_dims)[2 + i];
    } else if (p.transposed) {
      int64_t op = i < p.output_padding.size() ? p.output_padding[i] : 0;
      g.out[off + i] = (g.in[off + i] - 1) * g.stride[off + i] - 2 * g.pad[off + i] + span + op + 1;
    } else {
      g.out[off + i] = (g.in[off + i] + 2 * g.pad[off + i] - span - 1) / g.stride[off + i] + 1;
    }
  }
  return g;
}

bool is_pointwise(const Geometry& g) {
  for (int i = 0; i < 3; ++i)
    if (g.k[i] != 1 || g.stride[i] != 1 || g.pad[i] != 0) return false;
  return true;
}

// The output columns [first, second) whose input column ow * stride + base lies inside [0, in_w):
// the rest read padding.
std::pair<int64_t, int64_t> inside_columns(int64_t stride, int64_t base, int64_t in_w, int64_t out_w) {
  const int64_t lo = std::min(out_w, base >= 0 ? 0 : (-base + stride - 1) / stride);
  const int64_t hi = std::max(lo, std::min(out_w, base >= in_w ? 0 : (in_w - 1 - base) / stride + 1));
  return {lo, hi};
}

// col[(c, kd, kh, kw), (od, oh, ow)] = x[c, od*s - p + kd*d, ...] (0 outside).
void im2col(const Geometry& g, const float* x, int64_t channels, float* col) {
  const int64_t kv = g.k_vol(), L = g.out_vol();
  const int64_t rows = channels * kv;
  parallel_for(rows, rows * L > kParallelGrain, [&](int64_t r) {
    const int64_t c = r / kv, kk = r % kv;
    const int64_t kd = kk / (g.k[1] * g.k[2]), kh = (kk / g.k[2]) % g.k[1], kw = kk % g.k[2];
    const float* xc = x + c * g.in_vol();
    float* dst = col + r * L;
    for (int64_t od = 0; od < g.out[0]; ++od) {
      const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dil[0];
      for (int64_t oh = 0; oh < g.out[1]; ++oh) {
        const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dil[1];
        float* d = dst + (od * g.out[1] + oh) * g.out[2];
        if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) {
          std::fill(d, d + g.out[2], 0.0f);
          continue;
        }
        const float* src = xc + (id * g.in[1] + ih) * g.in[2];
        // Split so the middle is a plain (or strided) copy without a test per element.
        const int64_t s = g.stride[2], base = kw * g.dil[2] - g.pad[2], W = g.out[2];
        const auto [lo, hi] = inside_columns(s, base, g.in[2], W);
        std::fill(d, d + lo, 0.0f);
        if (s == 1) {
          std::memcpy(d + lo, src + lo + base, size_t(hi - lo) * sizeof(float));
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) d[ow] = src[ow * s + base];
        }
        std::fill(d + hi, d + W, 0.0f);
      }
    }
  });
}

// The inverse walk of im2col for transposed convolution: y[c, i*s - p + k*d] += col[(c, k), i].
// Parallel over channels: each writes only its own output plane.
void col2im_add(const Geometry& g, const float* col, int64_t channels, float* y) {
  // Here g.in is the transposed conv's input (the columns' spatial extent) and g.out its output.
  const int64_t kv = g.k_vol(), L = g.in_vol();
  parallel_for(channels, channels * kv * L > kParallelGrain, [&](int64_t c) {
    float* yc = y + c * g.out_vol();
    for (int64_t kk = 0; kk < kv; ++kk) {
      const int64_t kd = kk / (g.k[1] * g.k[2]), kh = (kk / g.k[2]) % g.k[1], kw = kk % g.k[2];
      const float* src = col + (c * kv + kk) * L;
      for (int64_t id = 0; id < g.in[0]; ++id) {
        const int64_t od = id * g.stride[0] - g.pad[0] + kd * g.dil[0];
        if (od < 0 || od >= g.out[0]) continue;
        for (int64_t ih = 0; ih < g.in[1]; ++ih) {
          const int64_t oh = ih * g.stride[1] - g.pad[1] + kh * g.dil[1];
          if (oh < 0 || oh >= g.out[1]) continue;
          const float* s = src + (id * g.in[1] + ih) * g.in[2];
          float* d = yc + (od * g.out[1] + oh) * g.out[2];
          for (int64_t iw = 0; iw < g.in[2]; ++iw) {
            const int64_t ow = iw * g.stride[2] - g.pad[2] + kw * g.dil[2];
            if (ow >= 0 && ow < g.out[2]) d[ow] += s[iw];
          }
        }
      }
    }
  });
}

// One input channel per group (depthwise and channel multipliers): a direct loop.
void depthwise(const Geometry& g, const float* x, const float* w, float* y) {
  const int64_t per_group = g.C_out / g.groups, kv = g.k_vol(), OW = g.out[2];
  parallel_for(g.N * g.C_out, g.N * g.C_out * g.out_vol() * kv > kParallelGrain, [&](int64_t nc) {
    const int64_t n = nc / g.C_out, oc = nc % g.C_out;
    const float* xc = x + (n * g.C_in + oc / per_group) * g.in_vol();
    const float* wc = w + oc * kv;
    float* yc = y + nc * g.out_vol();
    // Output row by output row, one kernel tap at a time over the columns it reaches (the same
    // order of additions per output as tap-by-tap, without a test per element).
    for (int64_t od = 0; od < g.out[0]; ++od)
      for (int64_t oh = 0; oh < g.out[1]; ++oh) {
        float* yrow = yc + (od * g.out[1] + oh) * OW;
        std::fill(yrow, yrow + OW, 0.0f);
        for (int64_t kd = 0; kd < g.k[0]; ++kd) {
          const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dil[0];
          if (id < 0 || id >= g.in[0]) continue;
          for (int64_t kh = 0; kh < g.k[1]; ++kh) {
            const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dil[1];
            if (ih < 0 || ih >= g.in[1]) continue;
            const float* row = xc + (id * g.in[1] + ih) * g.in[2];
            const float* wr = wc + (kd * g.k[1] + kh) * g.k[2];
            for (int64_t kw = 0; kw < g.k[2]; ++kw) {
              const int64_t s = g.stride[2], base = kw * g.dil[2] - g.pad[2];
              const auto [lo, hi] = inside_columns(s, base, g.in[2], OW);
              const float wv = wr[kw];
              if (s == 1) {
                for (int64_t ow = lo; ow < hi; ++ow) yrow[ow] += wv * row[ow + base];
              } else {
                for (int64_t ow = lo; ow < hi; ++ow) yrow[ow] += wv * row[ow * s + base];
              }
            }
          }
        }
      }
  });
}

void gemm(bool ta, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, float* C) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::fill(C, C + M * N, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, CblasNoTrans, int(M), int(N), int(K), 1.0f, A,
              int(lda), B, int(N), 0.0f, C, int(N));
}

bool depthwise_case(const ConvolutionParams& p, const Geometry& g) {
  return !p.transposed && g.groups > 1 && g.C_in == g.groups;
}

winograd::Shape winograd_shape(const Geometry& g) {
  return {g.N, g.C_in, g.C_out, g.in[1], g.in[2], g.pad[1], g.pad[2], g.out[1], g.out[2]};
}
// A 2-d, stride-1, undilated, ungrouped 3x3 convolution with enough channels: Winograd F(2x2, 3x3).
bool winograd_case(const ConvolutionParams& p, const Geometry& g) {
  return !p.transposed && g.groups == 1 && g.k[0] == 1 && g.k[1] == 3 && g.k[2] == 3 && g.in[0] == 1 &&
         g.pad[0] == 0 && g.stride[1] == 1 && g.stride[2] == 1 && g.dil[1] == 1 && g.dil[2] == 1 &&
         winograd::worthwhile(winograd_shape(g));
}

size_t col_floats(const ConvolutionParams& p, const Geometry& g) {
  if (p.transposed) return size_t((g.C_out / g.groups) * g.k_vol() * g.in_vol());
  if (winograd_case(p, g)) return winograd::workspace_floats(winograd_shape(g));
  if (depthwise_case(p, g) || is_pointwise(g)) return 0;
  return size_t((g.C_in / g.groups) * g.k_vol() * g.out_vol());
}

}  // namespace

std::vector<int64_t> reorder(const std::vector<int64_t>& d, const std::vector<int64_t>& perm) {
  std::vector<int64_t> r;
  for (int64_t i : perm) r.push_back(d.at(size_t(i)));
  return r;
}

TensorView permuted(const TensorView& t, const std::vector<int64_t>& perm, std::vector<uint8_t>& storage) {
  TensorView r = t;
  r.dims = reorder(t.dims, perm);
  r.strides.clear();
  storage.resize(t.nbytes());
  permute_copy(t.data, t.dims, perm, storage.data(), element_size(t.dtype));
  r.data = storage.data();
  return r;
}

size_t convolution_workspace(const ConvolutionParams& p, const std::vector<TensorView>& inputs) {
  if (inputs.size() < 2 || inputs[0].dims.size() < 3 || inputs[0].dims.size() > 5) return 0;
  if (onednn_takes(p, inputs)) return 0;
  return col_floats(p, p.channels_last ? geometry(p, reorder(inputs[0].dims, kToNchw), reorder(inputs[1].dims, kToNchw), nullptr)
                                      : geometry(p, inputs[0].dims, inputs[1].dims, nullptr)) * sizeof(float);
}

void run_via_nchw(const LayerCall& call, const std::vector<size_t>& permuted_inputs,
                  const std::function<void(LayerCall&)>& nchw) {
  std::vector<std::vector<uint8_t>> storage(permuted_inputs.size() + 1);
  std::vector<TensorView> ins = call.inputs;
  for (size_t i = 0; i < permuted_inputs.size(); ++i)
    ins.at(permuted_inputs[i]) = permuted(call.inputs.at(permuted_inputs[i]), kToNchw, storage[i]);
  const TensorView& out = call.outputs.at(0);
  std::vector<TensorView> outs{out};
  outs[0].dims = reorder(out.dims, kToNchw);
  storage.back().resize(out.nbytes());
  outs[0].data = storage.back().data();
  LayerCall inner{call.layer, ins, outs, call.allocate_output, call.workspace, call.workspace_bytes, call.symbols};
  nchw(inner);
  permute_copy(outs[0].data, outs[0].dims, kToNhwc, out.data, element_size(out.dtype));
}

void run(const ConvolutionParams& p, LayerCall& call) {
  if (onednn_convolution(p, call)) return;
  if (p.channels_last) {  // (CUDA's layout; here through the NCHW kernel: input, weights, residual permuted)
    ConvolutionParams nchw = p;
    nchw.channels_last = false;
    std::vector<size_t> nhwc_inputs{0, 1};
    if (p.has_residual) nhwc_inputs.push_back(call.inputs.size() - 1);
    run_via_nchw(call, nhwc_inputs, [&](LayerCall& inner) { run(nchw, inner); });
    return;
  }
  const Layer& layer = call.layer;
  const TensorView& x = call.inputs.at(0);
  const TensorView& w = call.inputs.at(1);
  const TensorView& out = call.outputs.at(0);
  if (x.dims.size() < 3 || x.dims.size() > 5) fail(layer, "convolution needs a 1d, 2d or 3d input");
  if (!is_floating(x.dtype)) fail(layer, "convolution needs float inputs");
  if (p.groups < 1 || x.dims[1] % p.groups) fail_shape(layer, "channels not divisible by groups");
  const Geometry g = geometry(p, x.dims, w.dims, &out.dims);
  if (out.dims[1] != g.C_out || out.dims[0] != g.N) fail_shape(layer, "output dims disagree with the weights");

  // The output may hold the residual (the memory plan gives it the residual's buffer where the
  // residual dies here, for oneDNN's sum post-op): this kernel overwrites the output before it
  // adds the residual, so it keeps a copy.
  std::optional<std::vector<float>> resident;
  if (p.has_residual && call.inputs.back().data == out.data) {
    FloatInput r = residual_as_float(call.inputs.back(), out.numel());
    resident.emplace(r.ptr, r.ptr + out.numel());
  }
  FloatInput fx = as_float(x), fw = as_float(w);
  FloatOutput fy = float_output(out);
  std::vector<uint8_t> fallback;
  float* col = static_cast<float*>(scratch(call, col_floats(p, g) * sizeof(float), fallback));
  const int64_t G = g.groups;

  if (p.transposed) {
    const int64_t cg = g.C_in / G, og = g.C_out / G, kv = g.k_vol();
    std::fill(fy.ptr, fy.ptr + out.numel(), 0.0f);
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t gi = 0; gi < G; ++gi) {
        // col[og*kv, Lin] = W_g^T [og*kv, cg] @ x_g [cg, Lin]; W_g is [cg, og*kv] row-major.
        gemm(true, og * kv, g.in_vol(), cg, fw.ptr + gi * cg * og * kv, og * kv,
             fx.ptr + (n * g.C_in + gi * cg) * g.in_vol(), col);
        col2im_add(g, col, og, fy.ptr + (n * g.C_out + gi * og) * g.out_vol());
      }
  } else if (depthwise_case(p, g)) {
    depthwise(g, fx.ptr, fw.ptr, fy.ptr);
  } else if (winograd_case(p, g)) {
    winograd::convolve(winograd_shape(g), fx.ptr, fw.ptr, fy.ptr, col);
  } else {
    const int64_t cg = g.C_in / G, og = g.C_out / G, kk = cg * g.k_vol(), L = g.out_vol();
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t gi = 0; gi < G; ++gi) {
        const float* xg = fx.ptr + (n * g.C_in + gi * cg) * g.in_vol();
        const float* cols = xg;
        if (!is_pointwise(g)) {
          im2col(g, xg, cg, col);
          cols = col;
        }
        gemm(false, og, L, kk, fw.ptr + gi * og * kk, kk, cols, fy.ptr + (n * g.C_out + gi * og) * L);
      }
  }

  // Epilogue y = act(y + bias + residual), one pass per output plane while it is in cache.
  const int64_t L = g.out_vol(), planes = g.N * g.C_out;
  if (p.has_bias || p.has_residual || p.activation) {
    FloatInput fb = p.has_bias ? as_float(call.inputs.at(2)) : FloatInput{};
    FloatInput fr = resident           ? FloatInput{resident->data(), {}}
                    : p.has_residual ? residual_as_float(call.inputs.back(), out.numel())
                                     : FloatInput{};
    parallel_for(planes, planes * L > kParallelGrain, [&](int64_t pc) {
      float* y = fy.ptr + pc * L;
      if (p.has_bias) {
        const float b = fb.ptr[pc % g.C_out];
        for (int64_t i = 0; i < L; ++i) y[i] += b;
      }
      if (p.has_residual) {
        const float* r = fr.ptr + pc * L;
        for (int64_t i = 0; i < L; ++i) y[i] += r[i];
      }
      if (p.activation) apply_activation_inplace(y, L, *p.activation);
    });
  }
  fy.commit();
}

}  // namespace kiln::engine::cpu
