// Gather (index_select / embedding along an axis, and torch.gather element-wise) and scatter
// (torch.scatter / scatter_add / scatter_reduce element-wise, and index_copy / index_put along one
// axis).
// Indices are i64 or i32; negative ones count from the end; out-of-range ones are an error
// naming the layer. Rows of the trailing dims move with memcpy where the layout allows.
#include <atomic>
#include <cstring>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"

namespace kiln::engine::cpu {
namespace {

// Index i of `idx` as int64, wrapped and checked against `limit`; -1 when out of range.
int64_t index_at(const TensorView& idx, int64_t i, int64_t limit) {
  int64_t v = idx.dtype == DataType::kInt64 ? idx.as<int64_t>()[i] : int64_t(idx.as<int32_t>()[i]);
  if (v < 0) v += limit;
  return (v < 0 || v >= limit) ? -1 : v;
}

void check_index_dtype(const Layer& layer, const TensorView& idx) {
  if (idx.dtype != DataType::kInt64 && idx.dtype != DataType::kInt32) fail(layer, "indices must be i64 or i32");
}

[[noreturn]] void out_of_range(const Layer& layer, int64_t limit) {
  fail_shape(layer, "index out of range for a dimension of size " + std::to_string(limit));
}

// dst[i] = src[j], or dst[i] combined with src[j] by `reduce`, for one element of dtype `t`.
void put(DataType t, void* dst, int64_t i, const void* src, int64_t j, ScatterReduce reduce) {
  if (reduce == ScatterReduce::kNone) {
    const size_t es = element_size(t);
    std::memcpy(static_cast<uint8_t*>(dst) + i * es, static_cast<const uint8_t*>(src) + j * es, es);
    return;
  }
  dispatch_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    T* d = static_cast<T*>(dst);
    const T* s = static_cast<const T*>(src);
    if constexpr (std::is_same_v<T, bool>) {
      d[i] = reduce == ScatterReduce::kAdd || reduce == ScatterReduce::kMax ? (d[i] || s[j]) : (d[i] && s[j]);
    } else {
      const C a = C(d[i]), b = C(s[j]);
      switch (reduce) {
        case ScatterReduce::kAdd: d[i] = T(C(a + b)); break;
        case ScatterReduce::kMul: d[i] = T(C(a * b)); break;
        case ScatterReduce::kMax: d[i] = b != b ? s[j] : (a < b ? s[j] : d[i]); break;  // NaN wins either side
        case ScatterReduce::kMin: d[i] = b != b ? s[j] : (b < a ? s[j] : d[i]); break;
        default: break;
      }
    }
  });
}

}  // namespace

void run(const GatherParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& data = call.inputs.at(0);
  const TensorView& idx = call.inputs.at(1);
  const TensorView& out = call.outputs.at(0);
  check_index_dtype(layer, idx);
  const int64_t rank = int64_t(data.dims.size());
  const int64_t axis = canonical_axis(layer, p.axis, rank);
  const size_t es = element_size(data.dtype);
  const int64_t D = data.dims[axis];
  const uint8_t* src = static_cast<const uint8_t*>(data.data);
  uint8_t* dst = static_cast<uint8_t*>(out.data);
  std::atomic<bool> bad{false};  // set by any worker thread

  if (p.mode == GatherMode::kAxis) {
    const int64_t pre = product(data.dims, 0, size_t(axis)), post = product(data.dims, size_t(axis) + 1);
    const int64_t I = idx.numel();
    if (post == 1) {  // single elements (a flat gather: windows, strided views): typed copies, in ranges
      auto by_size = [&](auto tag) {
        using U = decltype(tag);
        const U* s = reinterpret_cast<const U*>(src);
        U* d = reinterpret_cast<U*>(dst);
        parallel_ranges(pre * I, pre * I > kParallelGrain, [&](int64_t lo, int64_t hi) {
          int64_t pi = lo / I, i = lo - pi * I;  // stepped, not divided, per element
          for (int64_t u = lo; u < hi; ++u) {
            const int64_t j = index_at(idx, i, D);
            if (j < 0) { bad = true; return; }
            d[u] = s[pi * D + j];
            if (++i == I) i = 0, ++pi;
          }
        });
      };
      switch (es) {
        case 1: by_size(uint8_t{}); break;
        case 2: by_size(uint16_t{}); break;
        case 4: by_size(uint32_t{}); break;
        default: by_size(uint64_t{}); break;
      }
      if (bad) out_of_range(layer, D);
      return;
    }
    parallel_for(pre * I, pre * I * post > kParallelGrain, [&](int64_t u) {
      const int64_t pi = u / I, i = u % I;
      const int64_t j = index_at(idx, i, D);
      if (j < 0) { bad = true; return; }
      std::memcpy(dst + size_t(u * post) * es, src + size_t((pi * D + j) * post) * es, size_t(post) * es);
    });
  } else {
    if (int64_t(idx.dims.size()) != rank) fail(layer, "element gather needs indices of the data's rank");
    const auto ds = data.contiguous_strides();
    const int64_t n = idx.numel();
    parallel_for(n, n > kParallelGrain, [&](int64_t i) {
      int64_t rem = i, off = 0;
      for (int64_t d = rank; d-- > 0;) {
        const int64_t c = rem % idx.dims[d];
        rem /= idx.dims[d];
        if (d != axis) off += c * ds[d];
      }
      const int64_t j = index_at(idx, i, D);
      if (j < 0) { bad = true; return; }
      std::memcpy(dst + size_t(i) * es, src + size_t(off + j * ds[axis]) * es, es);
    });
  }
  if (bad) out_of_range(layer, D);
}

void run(const ScatterParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& data = call.inputs.at(0);
  const TensorView& idx = call.inputs.at(1);
  const TensorView& upd = call.inputs.at(2);
  const TensorView& out = call.outputs.at(0);
  check_index_dtype(layer, idx);
  if (upd.dtype != data.dtype) fail(layer, "updates must have the data's dtype");
  const int64_t rank = int64_t(data.dims.size());
  const int64_t axis = canonical_axis(layer, p.axis, rank);
  if (out.data != data.data) std::memcpy(out.data, data.data, data.nbytes());
  const int64_t D = data.dims[axis];
  const size_t es = element_size(data.dtype);

  if (p.mode == GatherMode::kAxis) {
    // updates [pre, I, post] go to rows idx[i] of [pre, D, post]. Sequential: duplicate indices
    // then behave deterministically (last write wins, or all add).
    const int64_t pre = product(data.dims, 0, size_t(axis)), post = product(data.dims, size_t(axis) + 1);
    const int64_t I = idx.numel();
    if (upd.numel() != pre * I * post) fail_shape(layer, "updates do not match data with the axis replaced by the index count");
    for (int64_t i = 0; i < I; ++i) {
      const int64_t j = index_at(idx, i, D);
      if (j < 0) out_of_range(layer, D);
      for (int64_t pi = 0; pi < pre; ++pi) {
        const int64_t o = (pi * D + j) * post, s = (pi * I + i) * post;
        if (p.reduce == ScatterReduce::kNone) {
          std::memcpy(static_cast<uint8_t*>(out.data) + size_t(o) * es,
                      static_cast<const uint8_t*>(upd.data) + size_t(s) * es, size_t(post) * es);
        } else {
          for (int64_t q = 0; q < post; ++q) put(data.dtype, out.data, o + q, upd.data, s + q, p.reduce);
        }
      }
    }
    return;
  }
  if (int64_t(idx.dims.size()) != rank || int64_t(upd.dims.size()) != rank)
    fail(layer, "element scatter needs indices and updates of the data's rank");
  const auto os = data.contiguous_strides(), us = upd.contiguous_strides();
  const int64_t n = idx.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, off = 0, uoff = 0;
    for (int64_t d = rank; d-- > 0;) {
      const int64_t c = rem % idx.dims[d];
      rem /= idx.dims[d];
      if (d != axis) off += c * os[d];
      uoff += c * us[d];
    }
    const int64_t j = index_at(idx, i, D);
    if (j < 0) out_of_range(layer, D);
    put(data.dtype, out.data, off + j * os[axis], upd.data, uoff, p.reduce);
  }
}

}  // namespace kiln::engine::cpu
