// Softmax / log-softmax along one axis (contiguous rows through the vectorized kernels of
// vec_math.h, fp32 sums in vector lanes; strided ones with double sums) and the normalizations
// (layer, batch for inference, group), in fp32 with double accumulators for the statistics (layer and
// group norms: in double vector lanes), in PyTorch's form:
// biased variance, y = (x - mean) / sqrt(var + eps) * scale + bias. Rows are spread over the worker threads.
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/onednn.h"
#include "engine/cpu/vec_math.h"

namespace kiln::engine::cpu {

void run(const SoftmaxParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  if (!is_floating(x.dtype)) fail(layer, "softmax needs a float input");
  const int64_t rank = int64_t(x.dims.size());
  const int64_t axis = canonical_axis(layer, p.axis, rank);
  const int64_t L = rank ? x.dims[axis] : 1;
  const int64_t outer = rank ? product(x.dims, 0, size_t(axis)) : 1;
  const int64_t inner = rank ? product(x.dims, size_t(axis) + 1) : 1;
  FloatInput fx = as_float(x);
  FloatOutput fy = float_output(out);
  parallel_for(outer * inner, outer * inner * L > kParallelGrain / 4, [&](int64_t u) {
    const int64_t o = u / inner, j = u % inner;
    if (inner == 1) {  // a contiguous row (the usual last-axis softmax): the vectorized kernels
      const float* xs = fx.ptr + o * L;
      float* ys = fy.ptr + o * L;
      float m = vec::max(xs, L);
      if (std::isinf(m) && m < 0) m = 0;  // as below
      const float sum = vec::exp_shifted_sum(xs, ys, L, m);
      if (p.log) vec::subtract(xs, ys, L, m + std::log(sum));
      else vec::scale(ys, L, 1.0f / sum);
      return;
    }
    const float* xs = fx.ptr + o * L * inner + j;
    float* ys = fy.ptr + o * L * inner + j;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < L; ++i) m = std::max(m, xs[i * inner]);
    if (std::isinf(m) && m < 0) m = 0;  // an all -inf row: exp gives 0s, sum 0 -> NaN as PyTorch
    double s = 0;
    for (int64_t i = 0; i < L; ++i) s += std::exp(double(xs[i * inner] - m));
    if (p.log) {
      const double ls = std::log(s);
      for (int64_t i = 0; i < L; ++i) ys[i * inner] = float(double(xs[i * inner] - m) - ls);
    } else {
      const double inv = 1.0 / s;
      for (int64_t i = 0; i < L; ++i) ys[i * inner] = float(std::exp(double(xs[i * inner] - m)) * inv);
    }
  });
  fy.commit();
}

void run(const NormalizationParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  if (!is_floating(x.dtype)) fail(layer, "normalization needs a float input");
  if (onednn_layer_norm(p, call)) return;  // right after oneDNN work, on its threads
  const int64_t rank = int64_t(x.dims.size());
  FloatInput fx = as_float(x);
  FloatOutput fy = float_output(out);
  size_t next = 1;
  FloatInput mean_in, var_in, scale, bias;
  if (p.kind == NormKind::kBatch) {
    if (call.inputs.size() < 3) fail(layer, "batch norm needs mean and var inputs");
    mean_in = as_float(call.inputs[1]);
    var_in = as_float(call.inputs[2]);
    next = 3;
  }
  if (p.has_scale) scale = as_float(call.inputs.at(next++));
  if (p.has_bias) bias = as_float(call.inputs.at(next++));
  const double eps = p.epsilon;

  if (p.kind == NormKind::kBatch) {
    if (rank < 2) fail(layer, "batch norm needs [N, C, ...]");
    const int64_t N = x.dims[0], C = x.dims[1], S = product(x.dims, 2);
    parallel_for(N * C, N * C * S > kParallelGrain, [&](int64_t nc) {
      const int64_t c = nc % C;
      const double inv = 1.0 / std::sqrt(double(var_in.ptr[c]) + eps);
      const double a = inv * (scale.ptr ? scale.ptr[c] : 1.0f);
      const double b = (bias.ptr ? bias.ptr[c] : 0.0f) - double(mean_in.ptr[c]) * a;
      const float* xs = fx.ptr + nc * S;
      float* ys = fy.ptr + nc * S;
      for (int64_t i = 0; i < S; ++i) ys[i] = float(xs[i] * a + b);
    });
    fy.commit();
    return;
  }

  // Layer and group norm: rows of `len` elements normalized together; the affine parameters are
  // indexed per element of the row (layer) or per channel (group).
  int64_t rows, len, per_channel = 0, channels = 1;
  if (p.kind == NormKind::kLayer) {
    const int64_t first = canonical_axis(layer, p.first_axis, rank, "first_axis");
    rows = product(x.dims, 0, size_t(first));
    len = product(x.dims, size_t(first));
  } else {
    if (rank < 2) fail(layer, "group norm needs [N, C, ...]");
    channels = x.dims[1];
    if (p.groups < 1 || channels % p.groups) fail_shape(layer, "channels not divisible by groups");
    per_channel = product(x.dims, 2);
    rows = x.dims[0] * p.groups;
    len = (channels / p.groups) * per_channel;
  }
  parallel_for(rows, rows * len > kParallelGrain / 4, [&](int64_t r) {
    const float* xs = fx.ptr + r * len;
    float* ys = fy.ptr + r * len;
    // Statistics in double vector lanes (vec::sum), two passes (the mean, then the squared
    // deviations from it); the affine step in float, as PyTorch's.
    const double mean = len ? vec::sum(xs, len) / double(len) : 0.0;
    const double v = vec::sum_squared_deviations(xs, len, mean);
    const double inv = 1.0 / std::sqrt((len ? v / double(len) : 0.0) + eps);
    if (p.kind == NormKind::kLayer) {
      vec::normalize(xs, ys, len, float(mean), float(inv), scale.ptr, bias.ptr);
    } else {
      const int64_t c0 = (r % p.groups) * (channels / p.groups);
      for (int64_t i = 0; i < len; ++i) {
        const int64_t c = c0 + i / per_channel;
        double y = (xs[i] - mean) * inv;
        if (scale.ptr) y *= scale.ptr[c];
        if (bias.ptr) y += bias.ptr[c];
        ys[i] = float(y);
      }
    }
  });
  fy.commit();
}

}  // namespace kiln::engine::cpu
