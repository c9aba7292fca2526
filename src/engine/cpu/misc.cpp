// The small layers: constant, select (where), cast, shape, fill/arange, pad, resize, cumulative
// sum, top-k, identity and nonzero. Each follows PyTorch's definition; see the comment per kernel.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "engine/cpu/common.h"
#include "engine/cpu/vec_math.h"
#include "engine/cpu/kernels.h"

namespace kiln::engine::cpu {

void run(const ConstantParams& p, LayerCall& call) {
  const TensorView& out = call.outputs.at(0);
  if (p.weights.dtype != out.dtype || size_t(p.weights.nbytes()) != out.nbytes())
    fail(call.layer, "constant weights do not match the output");
  if (out.nbytes()) std::memcpy(out.data, p.weights.data.get(), out.nbytes());
}

// where(condition, then, else) with NumPy broadcasting; any value dtype (moved by element size).
void run(const SelectParams&, LayerCall& call) {
  const TensorView& c = call.inputs.at(0);
  const TensorView& a = call.inputs.at(1);
  const TensorView& b = call.inputs.at(2);
  const TensorView& out = call.outputs.at(0);
  if (c.dtype != DataType::kBool) fail(call.layer, "condition must be bool");
  if (a.dtype != out.dtype || b.dtype != out.dtype) fail(call.layer, "then/else must have the output dtype");
  const size_t es = element_size(out.dtype);
  const bool* pc = c.as<bool>();
  const uint8_t* pa = static_cast<const uint8_t*>(a.data);
  const uint8_t* pb = static_cast<const uint8_t*>(b.data);
  uint8_t* po = static_cast<uint8_t*>(out.data);
  for_each_broadcast_run(out.dims, {c.dims, a.dims, b.dims},
                         [&](int64_t o, const int64_t* off, int64_t n, const int64_t* st) {
    for (int64_t k = 0; k < n; ++k) {
      const bool take = pc[off[0] + k * st[0]];
      const uint8_t* src = take ? pa + (off[1] + k * st[1]) * es : pb + (off[2] + k * st[2]) * es;
      std::memcpy(po + (o + k) * es, src, es);
    }
  });
}

// Any dtype to any dtype: floats truncate toward zero into integers, anything != 0 is true.
void run(const CastParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  const int64_t n = x.numel();
  if (x.dtype == out.dtype) {
    if (out.data != x.data && n) std::memcpy(out.data, x.data, x.nbytes());
    return;
  }
  // fp32 <-> bf16 (a bf16 program's edges) in vectorized chunks.
  const bool to_bf16 = x.dtype == DataType::kFloat32 && out.dtype == DataType::kBFloat16;
  if (to_bf16 || (x.dtype == DataType::kBFloat16 && out.dtype == DataType::kFloat32)) {
    parallel_ranges(n, n > kParallelGrain, [&](int64_t lo, int64_t hi) {
      if (to_bf16) vec::float_to_bf16(x.as<float>() + lo, out.as<uint16_t>() + lo, hi - lo);
      else vec::bf16_to_float(x.as<uint16_t>() + lo, out.as<float>() + lo, hi - lo);
    });
    return;
  }
  dispatch_dtype(x.dtype, [&](auto ftag) {
    using F = decltype(ftag);
    dispatch_dtype(out.dtype, [&](auto ttag) {
      using T = decltype(ttag);
      const F* s = x.as<F>();
      T* d = out.as<T>();
      parallel_for(n, n > kParallelGrain, [&](int64_t i) { d[i] = convert<T>(s[i]); });
    });
  });
}

void run(const ShapeParams&, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  if (out.dtype != DataType::kInt64) fail(call.layer, "shape outputs i64");
  for (size_t i = 0; i < x.dims.size(); ++i) out.as<int64_t>()[i] = x.dims[i];
}

void run(const FillParams& p, LayerCall& call) {
  const TensorView& out = call.outputs.at(0);
  const int64_t n = out.numel();
  dispatch_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* d = out.as<T>();
    if (p.op == FillOp::kConstant) {
      const T v = from_double<T>(p.value);
      std::fill(d, d + n, v);
    } else {
      for (int64_t i = 0; i < n; ++i) d[i] = from_double<T>(p.start + double(i) * p.step);
    }
  });
}

// Per dim: output o reads input o - pre (negative pads crop). Outside the input: the constant, a
// reflection about the edge (without repeating it), the edge itself, or a wrap-around.
void run(const PadParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  const size_t r = x.dims.size();
  if (p.pre.size() > r || p.post.size() != p.pre.size()) fail(call.layer, "pad needs pre/post per dimension");
  const size_t lead = r - p.pre.size();  // pads given for the trailing dims only
  std::vector<std::vector<int64_t>> map(r);
  for (size_t d = 0; d < r; ++d) {
    const int64_t pre = d >= lead ? p.pre[d - lead] : 0, n = x.dims[d];
    map[d].resize(size_t(out.dims[d]));
    for (int64_t o = 0; o < out.dims[d]; ++o) {
      int64_t s = o - pre;
      if (s < 0 || s >= n) {
        if (n == 0) s = -1;
        else switch (p.mode) {
          case PadMode::kConstant: s = -1; break;
          case PadMode::kReflect:
            if (n == 1) { s = 0; break; }
            while (s < 0 || s >= n) s = s < 0 ? -s : 2 * (n - 1) - s;
            break;
          case PadMode::kReplicate: s = std::clamp<int64_t>(s, 0, n - 1); break;
          case PadMode::kCircular: s = ((s % n) + n) % n; break;
        }
      }
      map[d][size_t(o)] = s;
    }
  }
  const size_t es = element_size(out.dtype);
  uint8_t value[8] = {};
  {
    TensorView v;
    v.data = value;
    v.dtype = out.dtype;
    store_double(v, 0, p.value);
  }
  const int64_t total = out.numel();
  if (total == 0) return;
  const auto cs = x.contiguous_strides();
  const int64_t inner = r ? out.dims[r - 1] : 1, rows = total / inner;
  const uint8_t* src = static_cast<const uint8_t*>(x.data);
  uint8_t* dst = static_cast<uint8_t*>(out.data);
  parallel_for(rows, total > kParallelGrain, [&](int64_t row) {
    int64_t rem = row, off = 0;
    bool outside = false;
    for (size_t d = r - 1; r && d-- > 0;) {
      const int64_t s = map[d][size_t(rem % out.dims[d])];
      rem /= out.dims[d];
      if (s < 0) outside = true;
      off += s * cs[d];
    }
    uint8_t* o = dst + size_t(row * inner) * es;
    int64_t k = 0;
    while (k < inner) {
      const int64_t s = r ? map[r - 1][size_t(k)] : 0;
      if (!outside && s >= 0) {  // a run of consecutive sources (the row's interior): one copy
        int64_t end = k + 1;
        while (end < inner && r && map[r - 1][size_t(end)] == s + (end - k)) ++end;
        std::memcpy(o + k * es, src + size_t(off + s) * es, size_t(end - k) * es);
        k = end;
        continue;
      }
      std::memcpy(o + k * es, value, es);
      ++k;
    }
  });
}

namespace {
// One output coordinate's sampling along a dim: two source indices and their weights.
struct Tap {
  int64_t i0, i1;
  float w0, w1;
};

// PyTorch's index rules (upsample kernels), in float as PyTorch computes them.
std::vector<Tap> resize_taps(ResizeMode mode, bool align_corners, int64_t in, int64_t out, double given_scale) {
  std::vector<Tap> taps(static_cast<size_t>(out));
  const bool has_scale = given_scale > 0;
  const float scale = has_scale ? float(1.0 / given_scale) : (out ? float(in) / float(out) : 0.0f);
  for (int64_t o = 0; o < out; ++o) {
    Tap t{0, 0, 1.0f, 0.0f};
    if (mode == ResizeMode::kNearest) {
      if (out == in) t.i0 = o;
      else if (out == 2 * in) t.i0 = o >> 1;
      else t.i0 = std::min<int64_t>(int64_t(std::floor(float(o) * scale)), in - 1);
    } else if (mode == ResizeMode::kNearestExact) {
      t.i0 = std::min<int64_t>(int64_t(std::floor((float(o) + 0.5f) * scale)), in - 1);
    } else {
      float src;
      if (align_corners) {
        const float s = out > 1 ? float(in - 1) / float(out - 1) : 0.0f;
        src = s * float(o);
      } else {
        src = std::max(scale * (float(o) + 0.5f) - 0.5f, 0.0f);
      }
      t.i0 = std::min<int64_t>(int64_t(src), in - 1);
      t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
      t.w1 = src - float(t.i0);
      t.w0 = 1.0f - t.w1;
    }
    if (mode != ResizeMode::kLinear) t.i1 = t.i0;
    taps[size_t(o)] = t;
  }
  return taps;
}
}  // namespace

// Nearest ('nearest' legacy / 'nearest-exact') and (bi/tri)linear resize of [N, C, *spatial].
void run(const ResizeParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  if (x.dims.size() < 3 || x.dims.size() > 5) fail(call.layer, "resize needs a 1d, 2d or 3d input");
  if (!is_floating(x.dtype)) fail(call.layer, "resize needs a float input");
  const size_t S = x.dims.size() - 2, off = 3 - S;
  int64_t in[3] = {1, 1, 1}, on[3] = {1, 1, 1};
  std::vector<Tap> taps[3];
  for (int d = 0; d < 3; ++d) {
    if (size_t(d) >= off) {
      const size_t i = size_t(d) - off;
      in[d] = x.dims[2 + i];
      on[d] = out.dims[2 + i];
      if (in[d] == 0 && on[d] > 0) fail_shape(call.layer, "resize of an empty spatial dim");
      taps[d] = resize_taps(p.mode, p.align_corners, in[d], on[d], i < p.scales.size() ? p.scales[i] : 0.0);
    } else {
      taps[d] = {Tap{0, 0, 1.0f, 0.0f}};
    }
  }
  FloatInput fx = as_float(x);
  FloatOutput fy = float_output(out);
  const int64_t planes = x.dims[0] * x.dims[1], iv = in[0] * in[1] * in[2], ov = on[0] * on[1] * on[2];
  parallel_for(planes, planes * ov > kParallelGrain / 4, [&](int64_t pc) {
    const float* xp = fx.ptr + pc * iv;
    float* yp = fy.ptr + pc * ov;
    for (int64_t a = 0; a < on[0]; ++a) {
      const Tap& td = taps[0][size_t(a)];
      for (int64_t b = 0; b < on[1]; ++b) {
        const Tap& th = taps[1][size_t(b)];
        for (int64_t c = 0; c < on[2]; ++c) {
          const Tap& tw = taps[2][size_t(c)];
          auto at = [&](int64_t d, int64_t h, int64_t w) { return xp[(d * in[1] + h) * in[2] + w]; };
          float v;
          if (p.mode != ResizeMode::kLinear) {
            v = at(td.i0, th.i0, tw.i0);
          } else {
            auto plane = [&](int64_t d) {
              return th.w0 * (tw.w0 * at(d, th.i0, tw.i0) + tw.w1 * at(d, th.i0, tw.i1)) +
                     th.w1 * (tw.w0 * at(d, th.i1, tw.i0) + tw.w1 * at(d, th.i1, tw.i1));
            };
            v = td.w0 * plane(td.i0) + td.w1 * plane(td.i1);
          }
          yp[(a * on[1] + b) * on[2] + c] = v;
        }
      }
    }
  });
  fy.commit();
}

// Running sum along an axis, optionally exclusive and/or from the end. Floats accumulate in
// double, integers in int64; the output may be wider than the input (PyTorch: int -> i64).
void run(const CumSumParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  const int64_t rank = int64_t(x.dims.size());
  const int64_t axis = canonical_axis(call.layer, p.axis, rank);
  const int64_t L = rank ? x.dims[axis] : 1, outer = rank ? product(x.dims, 0, size_t(axis)) : 1;
  const int64_t inner = rank ? product(x.dims, size_t(axis) + 1) : 1;
  dispatch_dtype(x.dtype, [&](auto itag) {
    using I = decltype(itag);
    dispatch_dtype(out.dtype, [&](auto otag) {
      using O = decltype(otag);
      using Acc = std::conditional_t<is_float_v<I>, double, int64_t>;
      const I* src = x.as<I>();
      O* dst = out.as<O>();
      parallel_for(outer * inner, outer * inner * L > kParallelGrain, [&](int64_t u) {
        const int64_t base = (u / inner) * L * inner + u % inner;
        Acc acc = 0;
        for (int64_t s = 0; s < L; ++s) {
          const int64_t i = p.reverse ? L - 1 - s : s;
          const int64_t at = base + i * inner;
          const Acc v = Acc(compute_t<I>(src[at]));
          if (!p.exclusive) acc += v;
          dst[at] = convert<O>(acc);
          if (p.exclusive) acc += v;
        }
      });
    });
  });
}

// k largest (or smallest) along an axis, values and i64 indices, sorted; ties keep the lower
// index first; NaN counts as larger than everything (PyTorch).
void run(const TopKParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& values = call.outputs.at(0);
  const TensorView& indices = call.outputs.at(1);
  const int64_t rank = int64_t(x.dims.size());
  const int64_t axis = canonical_axis(call.layer, p.axis, rank);
  const int64_t L = rank ? x.dims[axis] : 1, outer = rank ? product(x.dims, 0, size_t(axis)) : 1;
  const int64_t inner = rank ? product(x.dims, size_t(axis) + 1) : 1;
  const int64_t k = p.k == TopKParams::kWholeAxis ? L : p.k;
  if (k < 0 || k > L) fail_shape(call.layer, "k = " + std::to_string(k) + " exceeds the axis size " + std::to_string(L));
  if (indices.dtype != DataType::kInt64) fail(call.layer, "topk indices are i64");
  dispatch_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const T* src = x.as<T>();
    T* vout = values.as<T>();
    int64_t* iout = indices.as<int64_t>();
    auto greater = [](C a, C b) {
      if constexpr (std::is_floating_point_v<C>) {
        if (std::isnan(a)) return !std::isnan(b);
        if (std::isnan(b)) return false;
      }
      return a > b;
    };
    parallel_for(outer * inner, outer * inner * L > kParallelGrain, [&](int64_t u) {
      const int64_t base = (u / inner) * L * inner + u % inner;
      const int64_t obase = (u / inner) * k * inner + u % inner;
      std::vector<int64_t> order(static_cast<size_t>(L));
      std::iota(order.begin(), order.end(), 0);
      auto before = [&](int64_t i, int64_t j) {
        const C a = C(src[base + i * inner]), b = C(src[base + j * inner]);
        if (p.largest ? greater(a, b) : greater(b, a)) return true;
        if (p.largest ? greater(b, a) : greater(a, b)) return false;
        return i < j;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      for (int64_t r = 0; r < k; ++r) {
        vout[obase + r * inner] = src[base + order[size_t(r)] * inner];
        iout[obase + r * inner] = order[size_t(r)];
      }
    });
  });
}

void run(const IdentityParams&, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  if (x.dtype != out.dtype) return run(CastParams{out.dtype}, call);
  if (out.data != x.data && x.nbytes()) std::memcpy(out.data, x.data, x.nbytes());
}

// Output [count, rank] (i64) of the coordinates of non-zero elements in row-major order; the
// buffer is asked for once the count is known (data-dependent shape).
void run(const NonZeroParams&, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const int64_t n = x.numel(), r = int64_t(x.dims.size());
  // NaN is non-zero; -0.0 is zero.
  auto nonzero = [&](int64_t i) {
    const double v = load_as_double(x, i);
    return v != 0.0 || std::isnan(v);
  };
  std::vector<int64_t> hits;
  for (int64_t i = 0; i < n; ++i)
    if (nonzero(i)) hits.push_back(i);
  const int64_t count = int64_t(hits.size());
  TensorView& out = call.outputs.at(0);
  if (!out.data || out.dims != std::vector<int64_t>{count, r}) out = call.allocate_output(0, {count, r});
  if (out.dtype != DataType::kInt64) fail(call.layer, "nonzero outputs i64");
  int64_t* o = out.as<int64_t>();
  for (int64_t h = 0; h < count; ++h) {
    int64_t rem = hits[size_t(h)];
    for (int64_t d = r; d-- > 0;) {
      o[h * r + d] = rem % x.dims[size_t(d)];
      rem /= x.dims[size_t(d)];
    }
  }
}

}  // namespace kiln::engine::cpu
