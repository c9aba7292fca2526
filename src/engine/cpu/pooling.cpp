// Max / average pooling, 1d/2d/3d (handled as 3-d), and adaptive pooling. PyTorch's rules:
// max pool pads with -inf, honours dilation and propagates NaN; average pool divides by the
// window clipped to the padded input (count_include_pad) or to the real input, or by
// divisor_override; ceil_mode only changes the output size (already resolved) and windows that
// start in the padding are clipped. Adaptive windows: [floor(i*in/out), ceil((i+1)*in/out)).
// One parallel_for item per (n, c) plane.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/vec_math.h"

namespace kiln::engine::cpu {
namespace {

struct Window {
  int64_t begin, end;  // clipped to the input
  int64_t padded;      // length counted by count_include_pad
};

}  // namespace

void run(const PoolingParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  if (p.channels_last && x.dims.size() != 4) fail(layer, "channels-last pooling needs a 2-d input");
  const size_t S = x.dims.size() - 2;
  if (x.dims.size() < 3 || x.dims.size() > 5) fail(layer, "pooling needs a 1d, 2d or 3d input");
  if (!is_floating(x.dtype)) fail(layer, "pooling needs a float input");
  const size_t off = 3 - S;
  int64_t in[3] = {1, 1, 1}, on[3] = {1, 1, 1}, k[3] = {1, 1, 1}, st[3] = {1, 1, 1}, pd[3] = {0, 0, 0},
          dl[3] = {1, 1, 1};
  const bool adaptive = !p.adaptive_output.empty();
  const size_t first_spatial = p.channels_last ? 1 : 2;  // [N, H, W, C] or [N, C, spatial...]
  for (size_t i = 0; i < S; ++i) {
    in[off + i] = x.dims[first_spatial + i];
    on[off + i] = out.dims[first_spatial + i];
    if (!adaptive) {
      k[off + i] = p.kernel.at(i);
      st[off + i] = i < p.stride.size() ? p.stride[i] : k[off + i];
      pd[off + i] = i < p.padding.size() ? p.padding[i] : 0;
      dl[off + i] = i < p.dilation.size() ? p.dilation[i] : 1;
    }
  }
  // Window of output index o along spatial dim d.
  auto window = [&](int d, int64_t o) -> Window {
    if (adaptive) {
      int64_t b = (o * in[d]) / on[d];
      int64_t e = ((o + 1) * in[d] + on[d] - 1) / on[d];
      return {b, e, e - b};
    }
    int64_t b = o * st[d] - pd[d];
    int64_t e = std::min(b + k[d], in[d] + pd[d]);
    int64_t padded = e - b;
    return {std::max<int64_t>(b, 0), std::min(e, in[d]), padded};
  };

  FloatInput fx = as_float(x);
  FloatOutput fy = float_output(out);
  const int64_t planes = x.dims[0] * x.dims[1];
  const int64_t in_vol = in[0] * in[1] * in[2], out_vol = on[0] * on[1] * on[2];
  const bool is_max = p.type == PoolType::kMax;

  // Max pooling: the kernel offsets [first, second) whose input position along dim d lies inside
  // the input, for every output index o (so the inner loops test nothing).
  std::vector<std::pair<int64_t, int64_t>> kr[3];
  if (is_max && !adaptive)
    for (int d = 0; d < 3; ++d)
      for (int64_t o = 0; o < on[d]; ++o) {
        const int64_t start = o * st[d] - pd[d];
        int64_t lo = 0, hi = k[d];
        while (lo < hi && start + lo * dl[d] < 0) ++lo;
        while (hi > lo && start + (hi - 1) * dl[d] >= in[d]) --hi;
        kr[d].push_back({lo, hi});
      }

  if (p.channels_last) {
    // [N, H, W, C]: each output pixel combines whole channel vectors of its window (contiguous,
    // so the inner loops vectorize), one output row per task.
    const int64_t C = x.dims[3], N = x.dims[0];
    parallel_for(N * on[1], N * on[1] * on[2] * C > kParallelGrain / 4, [&](int64_t row) {
      const int64_t n = row / on[1], oh = row % on[1];
      const float* xn = fx.ptr + n * in_vol * C;
      std::vector<float> acc(size_t(C), 0.f);
      std::vector<const float*> window_rows;
      for (int64_t ow = 0; ow < on[2]; ++ow) {
        float* y = fy.ptr + ((n * on[1] + oh) * on[2] + ow) * C;
        float* a = acc.data();
        if (is_max && !adaptive) {
          // The window's pixels (their channel vectors), then one vectorized pass over them.
          window_rows.clear();
          for (int64_t i = kr[1][oh].first; i < kr[1][oh].second; ++i)
            for (int64_t j = kr[2][ow].first; j < kr[2][ow].second; ++j)
              window_rows.push_back(xn + ((oh * st[1] - pd[1] + i * dl[1]) * in[2] + ow * st[2] - pd[2] + j * dl[2]) * C);
          vec::window_max(window_rows.data(), int64_t(window_rows.size()), C, y);
          continue;
        }
        const Window wh = window(1, oh), ww = window(2, ow);
        std::fill(acc.begin(), acc.end(), is_max ? -std::numeric_limits<float>::infinity() : 0.f);
        for (int64_t ih = wh.begin; ih < wh.end; ++ih)
          for (int64_t iw = ww.begin; iw < ww.end; ++iw) {
            const float* v = xn + (ih * in[2] + iw) * C;
            if (is_max) {
              for (int64_t c = 0; c < C; ++c) a[c] = (v[c] > a[c] || v[c] != v[c]) ? v[c] : a[c];
            } else {
              for (int64_t c = 0; c < C; ++c) a[c] += v[c];
            }
          }
        float scale = 1.f;
        if (!is_max) {
          int64_t divisor;
          if (p.divisor_override) divisor = *p.divisor_override;
          else if (adaptive || !p.count_include_pad) divisor = (wh.end - wh.begin) * (ww.end - ww.begin);
          else divisor = wh.padded * ww.padded;
          scale = divisor ? 1.f / float(divisor) : NAN;
        }
        for (int64_t c = 0; c < C; ++c) y[c] = a[c] * scale;
      }
    });
    fy.commit();
    return;
  }

  parallel_for(planes, planes * out_vol > kParallelGrain / 4, [&](int64_t pc) {
    const float* xp = fx.ptr + pc * in_vol;
    float* yp = fy.ptr + pc * out_vol;
    for (int64_t od = 0; od < on[0]; ++od)
      for (int64_t oh = 0; oh < on[1]; ++oh)
        for (int64_t ow = 0; ow < on[2]; ++ow) {
          float r;
          if (is_max && !adaptive) {
            // Only the window positions inside the input (padding is -inf); a NaN, once met, stays.
            r = -std::numeric_limits<float>::infinity();
            for (int64_t a = kr[0][od].first; a < kr[0][od].second; ++a) {
              const int64_t id = od * st[0] - pd[0] + a * dl[0];
              for (int64_t b = kr[1][oh].first; b < kr[1][oh].second; ++b) {
                const float* row = xp + (id * in[1] + oh * st[1] - pd[1] + b * dl[1]) * in[2] + ow * st[2] - pd[2];
                for (int64_t c = kr[2][ow].first; c < kr[2][ow].second; ++c) {
                  const float v = row[c * dl[2]];
                  r = (v > r || std::isnan(v)) && !std::isnan(r) ? v : r;
                }
              }
            }
          } else {
            Window wd = window(0, od), wh = window(1, oh), ww = window(2, ow);
            double acc = is_max ? -INFINITY : 0.0;
            for (int64_t id = wd.begin; id < wd.end; ++id)
              for (int64_t ih = wh.begin; ih < wh.end; ++ih)
                for (int64_t iw = ww.begin; iw < ww.end; ++iw) {
                  float v = xp[(id * in[1] + ih) * in[2] + iw];
                  if (is_max) {
                    if (v > acc || std::isnan(v)) acc = v;
                  } else {
                    acc += v;
                  }
                }
            if (!is_max) {
              int64_t divisor;
              if (p.divisor_override) divisor = *p.divisor_override;
              else if (adaptive || !p.count_include_pad)
                divisor = (wd.end - wd.begin) * (wh.end - wh.begin) * (ww.end - ww.begin);
              else divisor = wd.padded * wh.padded * ww.padded;
              acc = divisor ? acc / double(divisor) : NAN;
            }
            r = float(acc);
          }
          yp[(od * on[1] + oh) * on[2] + ow] = r;
        }
  });
  fy.commit();
}

}  // namespace kiln::engine::cpu
