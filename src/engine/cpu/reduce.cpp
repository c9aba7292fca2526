// Reductions over any set of axes. The input is viewed as [outer, R, inner] when the reduced axes
// are adjacent; any other set is first permuted into [kept..., reduced...] (inner = 1). Floats
// accumulate in double (over contiguous fp32 rows longer than 64 in double vector lanes), integers
// in int64; max/min propagate NaN; argmax/argmin return the first
// occurrence (NaN counts as the largest, as in PyTorch); var divides by R - correction.
// Work is split over the worker threads as (outer, chunk of inner) units.
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/vec_math.h"

namespace kiln::engine::cpu {
namespace {

// Copies `x` permuted so that `axes` come last; returns the new buffer (element-typed bytes).
std::vector<uint8_t> move_axes_last(const TensorView& x, const std::vector<int64_t>& axes) {
  const size_t r = x.dims.size(), es = element_size(x.dtype);
  std::vector<int64_t> perm;
  for (size_t d = 0; d < r; ++d)
    if (std::find(axes.begin(), axes.end(), int64_t(d)) == axes.end()) perm.push_back(int64_t(d));
  for (int64_t a : axes) perm.push_back(a);
  std::vector<int64_t> pdims(r), src_strides = x.contiguous_strides(), pstr(r);
  for (size_t d = 0; d < r; ++d) {
    pdims[d] = x.dims[perm[d]];
    pstr[d] = src_strides[perm[d]];
  }
  const int64_t n = x.numel();
  std::vector<uint8_t> buf(size_t(n) * es);
  const uint8_t* src = static_cast<const uint8_t*>(x.data);
  parallel_for(n, n > kParallelGrain, [&](int64_t i) {
    int64_t rem = i, so = 0;
    for (size_t d = r; d-- > 0;) {
      so += (rem % pdims[d]) * pstr[d];
      rem /= pdims[d];
    }
    std::memcpy(buf.data() + i * es, src + so * es, es);
  });
  return buf;
}

// A float sum or mean over the middle axis of [outer, R, inner] with inner > 1 (global pooling of
// channels-last images: [N, H*W, C]): rows of `inner` contiguous elements added into a vector of
// accumulators, so memory is read once, in order, and the adds vectorize. The general loop below
// walks R with a stride of `inner` per output element, re-reading every cache line `inner` times.
template <class T>
void sum_rows(const ReduceParams& p, const T* x, int64_t outer, int64_t R, int64_t inner, const TensorView& out) {
  using C = compute_t<T>;
  constexpr int64_t chunk = 512;
  const int64_t chunks = (inner + chunk - 1) / chunk, units = outer * chunks;
  const bool parallel = outer * R * inner > kParallelGrain;
  const double divisor = p.op == ReduceOp::kMean ? double(R) : 1.0;
  // Rows r0..r1 of unit u (one outer index, one chunk of inner) added into acc.
  // Blocks of up to 32 rows are summed in float (16 lanes a vector, twice double's) and each
  // block's sums added into the double accumulators: the rounding of a float sum grows with its
  // length, and 32 rows keep it near one float ulp of the block's magnitude. (float64 data sums in
  // double throughout.)
  using Block = std::conditional_t<std::is_same_v<C, double>, double, float>;
  auto accumulate = [&](int64_t u, int64_t r0, int64_t r1, double* acc) {
    const int64_t o = u / chunks, j0 = (u % chunks) * chunk, n = std::min(inner, j0 + chunk) - j0;
    Block block[chunk];
    for (int64_t b = r0; b < r1; b += 32) {
      std::fill(block, block + n, Block(0));
      for (int64_t r = b; r < std::min(r1, b + 32); ++r) {
        const T* row = x + (o * R + r) * inner + j0;
        for (int64_t j = 0; j < n; ++j) block[j] += Block(C(row[j]));
      }
      for (int64_t j = 0; j < n; ++j) acc[j] += double(block[j]);
    }
  };
  auto store = [&](int64_t u, const double* acc) {
    const int64_t o = u / chunks, j0 = (u % chunks) * chunk, n = std::min(inner, j0 + chunk) - j0;
    for (int64_t j = 0; j < n; ++j) store_double(out, o * inner + j0 + j, acc[j] / divisor);
  };
  if (!parallel || units >= max_threads()) {
    parallel_for(units, parallel, [&](int64_t u) {
      double acc[chunk] = {};
      accumulate(u, 0, R, acc);
      store(u, acc);
    });
    return;
  }
  // Fewer units than threads (a batch-1 squeeze-excite mean: one unit): R is split too, each part
  // summing its rows into its own accumulators, added together after.
  const int64_t parts = std::clamp<int64_t>(2 * max_threads() / units, 1, std::max<int64_t>(1, R / 16));
  std::vector<double> partial(size_t(units * parts * chunk));
  parallel_for(units * parts, true, [&](int64_t i) {
    const int64_t part = i % parts;
    accumulate(i / parts, R * part / parts, R * (part + 1) / parts, partial.data() + i * chunk);
  });
  for (int64_t u = 0; u < units; ++u) {
    double* acc = partial.data() + u * parts * chunk;
    for (int64_t part = 1; part < parts; ++part)
      for (int64_t j = 0; j < chunk; ++j) acc[j] += acc[part * chunk + j];
    store(u, acc);
  }
}

template <class T>
void reduce_typed(const ReduceParams& p, const T* x, int64_t outer, int64_t R, int64_t inner,
                  const TensorView& out) {
  using C = compute_t<T>;
  constexpr bool fl = is_float_v<T>;
  using Acc = std::conditional_t<fl, double, int64_t>;
  if (fl && inner > 1 && R > 0 && (p.op == ReduceOp::kSum || p.op == ReduceOp::kMean))
    return sum_rows(p, x, outer, R, inner, out);
  if constexpr (std::is_same_v<T, float>) {
    // Contiguous float rows: many short ones (a complex value's magnitude over its pair, a norm per
    // vector) each summed in double, as the general loop does, without its per-row dispatch and
    // store conversion; longer ones (sum(-1), RMSNorm's mean of squares) in double vector lanes
    // (vec::sum), several times the general loop's speed.
    if (inner == 1 && R > 0 && out.dtype == DataType::kFloat32 &&
        (p.op == ReduceOp::kNorm2 || p.op == ReduceOp::kSum || p.op == ReduceOp::kMean)) {
      float* y = out.as<float>();
      const ReduceOp op = p.op;
      parallel_ranges(outer, outer * R > kParallelGrain, [&](int64_t lo, int64_t hi) {
        for (int64_t o = lo; o < hi; ++o) {
          const float* row = x + o * R;
          double acc = 0;
          if (R > 64) {
            acc = op == ReduceOp::kNorm2 ? vec::sum_squares(row, R) : vec::sum(row, R);
          } else if (op == ReduceOp::kNorm2) {
            for (int64_t r = 0; r < R; ++r) acc += double(row[r]) * double(row[r]);
          } else {
            for (int64_t r = 0; r < R; ++r) acc += double(row[r]);
          }
          y[o] = float(op == ReduceOp::kNorm2 ? std::sqrt(acc) : op == ReduceOp::kMean ? acc / double(R) : acc);
        }
      });
      return;
    }
  }
  const int64_t chunk = 256, chunks = (inner + chunk - 1) / chunk;
  const ReduceOp op = p.op;
  parallel_for(outer * chunks, outer * R * inner > kParallelGrain, [&](int64_t u) {
    const int64_t o = u / chunks, j0 = (u % chunks) * chunk, j1 = std::min(inner, j0 + chunk);
    for (int64_t j = j0; j < j1; ++j) {
      const T* base = x + o * R * inner + j;
      const int64_t oi = o * inner + j;
      auto at = [&](int64_t r) -> Acc { return Acc(C(base[r * inner])); };
      // The integer result of an integer reduction. Float reductions store `result` (converted by
      // store_double, which defines NaN and out-of-range values), never this: int64_t(NaN) or of a
      // double beyond 2^63 is undefined behaviour.
      auto as_int = [&](Acc v) -> int64_t {
        if constexpr (fl) return 0;
        else return v;
      };
      // Integer sums and products wrap around on overflow, as PyTorch's do (signed overflow would
      // be undefined behaviour, so they are done in uint64).
      auto add = [&](Acc a, Acc b) -> Acc {
        if constexpr (fl) return a + b;
        else return static_cast<Acc>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
      };
      auto mul = [&](Acc a, Acc b) -> Acc {
        if constexpr (fl) return a * b;
        else return static_cast<Acc>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
      };
      double result = 0;
      int64_t iresult = 0;
      bool integer_result = !fl;
      switch (op) {
        case ReduceOp::kSum: case ReduceOp::kMean: {
          Acc s = 0;
          for (int64_t r = 0; r < R; ++r) s = add(s, at(r));
          if (op == ReduceOp::kMean) { result = double(s) / double(R); integer_result = false; }
          else { result = double(s); iresult = as_int(s); }
          break;
        }
        case ReduceOp::kProd: {
          Acc s = 1;
          for (int64_t r = 0; r < R; ++r) s = mul(s, at(r));
          result = double(s);
          iresult = as_int(s);
          break;
        }
        case ReduceOp::kMax: case ReduceOp::kMin: {
          const bool mx = op == ReduceOp::kMax;
          Acc s = R ? at(0) : Acc(0);
          for (int64_t r = 1; r < R; ++r) {
            Acc v = at(r);
            if constexpr (fl) if (std::isnan(v)) { s = v; break; }
            if (mx ? v > s : v < s) s = v;
          }
          result = double(s);
          iresult = as_int(s);
          if (R == 0) result = NAN;
          break;
        }
        case ReduceOp::kAny: case ReduceOp::kAll: {
          bool any = false, all = true;
          for (int64_t r = 0; r < R; ++r) {
            bool b = at(r) != Acc(0);
            any |= b;
            all &= b;
          }
          iresult = op == ReduceOp::kAny ? any : all;
          integer_result = true;
          break;
        }
        case ReduceOp::kArgMax: case ReduceOp::kArgMin: {
          const bool mx = op == ReduceOp::kArgMax;
          int64_t best = 0;
          Acc bv = R ? at(0) : Acc(0);
          for (int64_t r = 1; r < R; ++r) {
            if constexpr (fl) if (std::isnan(bv)) break;
            Acc v = at(r);
            bool better = mx ? v > bv : v < bv;
            if constexpr (fl) better = better || std::isnan(v);
            if (better) { bv = v; best = r; }
          }
          iresult = best;
          integer_result = true;
          break;
        }
        case ReduceOp::kVar: {
          double m = 0;
          for (int64_t r = 0; r < R; ++r) m += double(at(r));
          m /= double(R);
          double s = 0;
          for (int64_t r = 0; r < R; ++r) { double d = double(at(r)) - m; s += d * d; }
          result = s / std::max(0.0, double(R) - p.correction);
          integer_result = false;
          break;
        }
        case ReduceOp::kNorm2: {
          double s = 0;
          for (int64_t r = 0; r < R; ++r) { double v = double(at(r)); s += v * v; }
          result = std::sqrt(s);
          integer_result = false;
          break;
        }
      }
      if (integer_result && out.dtype == DataType::kInt64) out.as<int64_t>()[oi] = iresult;
      else store_double(out, oi, integer_result ? double(iresult) : result);
    }
  });
}

}  // namespace

void run(const ReduceParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  const int64_t rank = int64_t(x.dims.size());
  const std::vector<int64_t>& axes = p.axes;  // sorted and unique (shape inference)
  for (int64_t a : axes) canonical_axis(layer, a, rank);
  if (rank == 0 && !axes.empty()) fail(layer, "reduce axis out of range for a rank-0 input");
  const bool arg = p.op == ReduceOp::kArgMax || p.op == ReduceOp::kArgMin;
  if (arg && axes.size() != 1) fail(layer, "argmax/argmin take exactly one axis");
  if (arg && out.dtype != DataType::kInt64) fail(layer, "argmax/argmin output i64");
  const int64_t R = [&] { int64_t r = 1; for (auto a : axes) r *= x.dims[a]; return r; }();
  if (R == 0 && out.numel() > 0 && (p.op == ReduceOp::kMax || p.op == ReduceOp::kMin || arg))
    fail_shape(layer, "max/min/argmax over an empty dimension");

  bool adjacent = true;
  for (size_t i = 1; i < axes.size(); ++i) adjacent &= axes[i] == axes[i - 1] + 1;
  int64_t outer, inner;
  const void* data = x.data;
  std::vector<uint8_t> permuted;
  if (axes.empty()) {
    outer = x.numel();
    inner = 1;
  } else if (adjacent) {
    outer = product(x.dims, 0, size_t(axes.front()));
    inner = product(x.dims, size_t(axes.back()) + 1);
  } else {
    permuted = move_axes_last(x, axes);
    data = permuted.data();
    outer = R ? x.numel() / R : product(out.dims);
    inner = 1;
  }
  dispatch_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    reduce_typed<T>(p, static_cast<const T*>(data), outer, R, inner, out);
  });
}

}  // namespace kiln::engine::cpu
