// Unary ops and activations: flat loops over contiguous data, split over the worker threads when
// large. Floats compute in fp32; integer unary ops natively (transcendental ones through double);
// not/isnan/isinf write bool. Activations accept integers only for clip and relu (clamp), as
// PyTorch does.
#include <algorithm>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/onednn.h"
#include "engine/cpu/ops.h"

namespace kiln::engine::cpu {

void run(const UnaryParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  const int64_t n = x.numel();
  const bool pred = is_predicate(p.op);
  if (pred && out.dtype != DataType::kBool) fail(layer, "not/isnan/isinf output bool");
  dispatch_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const T* src = x.as<T>();
    const UnaryOp op = p.op;
    if (pred) {
      bool* dst = out.as<bool>();
      parallel_for(n, n > kParallelGrain, [&](int64_t i) { dst[i] = unary_pred<C>(op, C(src[i])); });
    } else if (out.dtype == x.dtype) {
      T* dst = out.as<T>();
      parallel_for(n, n > kParallelGrain / 8, [&](int64_t i) { dst[i] = T(unary_arith<C>(op, C(src[i]))); });
    } else {
      // Integer input with a float output (PyTorch promotes e.g. sqrt(int) to float).
      dispatch_dtype(out.dtype, [&](auto otag) {
        using O = decltype(otag);
        parallel_for(n, n > kParallelGrain / 8, [&](int64_t i) {
          out.as<O>()[i] = from_double<O>(unary_arith<double>(op, double(C(src[i]))));
        });
      });
    }
  });
}

void apply_activation_inplace(float* data, int64_t n, const ActivationParams& act) {
  if (onednn_activation_inplace(data, n, act)) return;
  parallel_ranges(n, n > kParallelGrain / 8,
                  [&](int64_t lo, int64_t hi) { activation_rows(act, data + lo, data + lo, hi - lo); });
}

FloatInput residual_as_float(const TensorView& residual, int64_t n) {
  if (residual.numel() != n)
    throw NetworkError("residual has " + std::to_string(residual.numel()) + " elements, the output " + std::to_string(n));
  return as_float(residual);
}

void add_residual(float* data, const TensorView& residual, int64_t n) {
  FloatInput r = residual_as_float(residual, n);
  parallel_for(n, n > kParallelGrain / 8, [&](int64_t i) { data[i] += r.ptr[i]; });
}

void run(const ActivationParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  if (out.dtype != x.dtype) fail(layer, "output dtype must match the input");
  const int64_t n = x.numel();
  dispatch_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* src = x.as<T>();
    T* dst = out.as<T>();
    if constexpr (std::is_same_v<T, float>) {
      parallel_ranges(n, n > kParallelGrain / 8,
                      [&](int64_t lo, int64_t hi) { activation_rows(p, src + lo, dst + lo, hi - lo); });
    } else if constexpr (is_float_v<T>) {
      // fp16/bf16 through float rows, as the fused pointwise programs compute them (the same bits).
      parallel_ranges(n, n > kParallelGrain / 8, [&](int64_t lo, int64_t hi) {
        float row[256];
        for (int64_t b = lo; b < hi; b += 256) {
          const int64_t m = std::min<int64_t>(256, hi - b);
          for (int64_t i = 0; i < m; ++i) row[i] = float(src[b + i]);
          activation_rows(p, row, row, m);
          for (int64_t i = 0; i < m; ++i) dst[b + i] = T(row[i]);
        }
      });
    } else if constexpr (!std::is_same_v<T, bool>) {
      if (p.op == ActivationOp::kClip) {
        const double lo = p.alpha, hi = p.beta;
        for (int64_t i = 0; i < n; ++i) {
          double v = double(src[i]);
          dst[i] = v < lo ? convert<T>(std::ceil(lo)) : v > hi ? convert<T>(std::floor(hi)) : src[i];
        }
      } else if (p.op == ActivationOp::kRelu) {
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i] > 0 ? src[i] : T(0);
      } else {
        fail(layer, std::string("activation needs a float input, got ") + to_string(x.dtype));
      }
    } else {
      fail(layer, "activation needs a float input, got bool");
    }
  });
}

}  // namespace kiln::engine::cpu
