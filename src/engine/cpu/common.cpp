// Shared helpers of the CPU kernels (see common.h).
#include <cstdint>
#include <cstring>

#include "engine/cpu/common.h"

#include <algorithm>

namespace kiln::engine::cpu {

double load_as_double(const TensorView& v, int64_t i) {
  return dispatch_dtype(v.dtype, [&](auto tag) -> double {
    using T = decltype(tag);
    return static_cast<double>(static_cast<compute_t<T>>(v.as<T>()[i]));
  });
}

void store_double(const TensorView& v, int64_t i, double d) {
  dispatch_dtype(v.dtype, [&](auto tag) {
    using T = decltype(tag);
    v.as<T>()[i] = from_double<T>(d);
  });
}

void to_float(const TensorView& v, float* dst) {
  const int64_t n = v.numel();
  dispatch_dtype(v.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* src = v.as<T>();
    parallel_for(n, n > kParallelGrain, [&](int64_t i) { dst[i] = convert<float>(src[i]); });
  });
}

FloatInput as_float(const TensorView& v) {
  FloatInput r;
  if (v.dtype == DataType::kFloat32 && reinterpret_cast<uintptr_t>(v.data) % alignof(float) == 0) {
    r.ptr = v.as<float>();
  } else if (v.dtype == DataType::kFloat32) {
    // Bytes not on a float boundary (an input view at an odd offset): reading them as float is
    // undefined behaviour and a fault on some CPUs, so the kernels get an aligned copy.
    r.storage.resize(static_cast<size_t>(v.numel()));
    if (!r.storage.empty()) std::memcpy(r.storage.data(), v.data, r.storage.size() * sizeof(float));
    r.ptr = r.storage.data();
  } else {
    r.storage.resize(static_cast<size_t>(v.numel()));
    to_float(v, r.storage.data());
    r.ptr = r.storage.data();
  }
  return r;
}

FloatOutput float_output(const TensorView& v) {
  FloatOutput r;
  r.view = &v;
  if (v.dtype == DataType::kFloat32) {
    r.ptr = v.as<float>();
  } else {
    r.storage.resize(static_cast<size_t>(v.numel()));
    r.ptr = r.storage.data();
  }
  return r;
}

void FloatOutput::commit() {
  if (view->dtype == DataType::kFloat32) return;
  const int64_t n = view->numel();
  dispatch_dtype(view->dtype, [&](auto tag) {
    using T = decltype(tag);
    T* dst = view->as<T>();
    const float* src = storage.data();
    parallel_for(n, n > kParallelGrain, [&](int64_t i) { dst[i] = convert<T>(src[i]); });
  });
}

int64_t product(const std::vector<int64_t>& d, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < std::min(end, d.size()); ++i) p *= d[i];
  return p;
}

std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  std::vector<int64_t> s(out.size(), 0);
  int64_t stride = 1;
  for (size_t k = 0; k < in.size(); ++k) {
    size_t i = in.size() - 1 - k, o = out.size() - 1 - k;
    s[o] = (in[i] == 1 && out[o] != 1) ? 0 : stride;
    stride *= in[i];
  }
  return s;
}

void for_each_broadcast_run(
    const std::vector<int64_t>& out_dims, const std::vector<std::vector<int64_t>>& in_dims,
    const std::function<void(int64_t, const int64_t*, int64_t, const int64_t*)>& f) {
  const size_t n_in = in_dims.size();
  const int64_t total = product(out_dims);
  if (total == 0) return;
  // Strides per input, then collapse adjacent dims that every operand walks contiguously.
  std::vector<std::vector<int64_t>> strides;
  for (const auto& d : in_dims) strides.push_back(broadcast_strides(d, out_dims));
  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> cs(n_in);
  for (size_t k = 0; k < out_dims.size(); ++k) {
    if (out_dims[k] == 1) continue;  // size-1 dims never move any pointer
    bool merge = !dims.empty();
    for (size_t j = 0; j < n_in && merge; ++j) merge = cs[j].back() == strides[j][k] * out_dims[k];
    if (merge) {
      dims.back() *= out_dims[k];
      for (size_t j = 0; j < n_in; ++j) cs[j].back() = strides[j][k];
    } else {
      dims.push_back(out_dims[k]);
      for (size_t j = 0; j < n_in; ++j) cs[j].push_back(strides[j][k]);
    }
  }
  if (dims.empty()) {  // a single element
    dims.push_back(1);
    for (size_t j = 0; j < n_in; ++j) cs[j].push_back(0);
  }
  const size_t r = dims.size();
  const int64_t inner = dims.back();
  const int64_t rows = total / inner;
  // Long runs are cut into chunks so a 1-row op still spreads over threads.
  const int64_t chunk = std::max<int64_t>(4096, std::min<int64_t>(inner, total / (4 * max_threads()) + 1));
  const int64_t chunks_per_row = (inner + chunk - 1) / chunk;
  // Short rows (a channels-last tensor times a per-channel vector: rows of C) are grouped, several
  // per unit of work, so the per-unit cost does not dominate.
  const int64_t rows_per_unit = chunks_per_row == 1 ? std::max<int64_t>(1, 4096 / inner) : 1;
  const int64_t units = chunks_per_row == 1 ? (rows + rows_per_unit - 1) / rows_per_unit : rows * chunks_per_row;
  std::vector<int64_t> inner_strides(n_in);
  for (size_t j = 0; j < n_in; ++j) inner_strides[j] = cs[j][r - 1];
  parallel_for(units, total > kParallelGrain && units > 1, [&](int64_t u) {
    int64_t offs[16];
    std::vector<int64_t> big;
    int64_t* o = offs;
    if (n_in > 16) { big.resize(n_in); o = big.data(); }
    const int64_t first_row = chunks_per_row == 1 ? u * rows_per_unit : u / chunks_per_row;
    const int64_t last_row = chunks_per_row == 1 ? std::min(rows, first_row + rows_per_unit) : first_row + 1;
    for (int64_t row = first_row; row < last_row; ++row) {
      for (size_t j = 0; j < n_in; ++j) o[j] = 0;
      int64_t rem = row;
      for (size_t k = r - 1; k-- > 0;) {
        int64_t idx = rem % dims[k];
        rem /= dims[k];
        for (size_t j = 0; j < n_in; ++j) o[j] += idx * cs[j][k];
      }
      const int64_t start = chunks_per_row == 1 ? 0 : (u % chunks_per_row) * chunk, len = std::min(chunk, inner - start);
      for (size_t j = 0; j < n_in; ++j) o[j] += start * inner_strides[j];
      f(row * inner + start, o, len, inner_strides.data());
    }
  });
}


static std::string where(const Layer& layer) {
  return layer.label() + ": ";
}
void fail(const Layer& layer, const std::string& what) { throw NetworkError(where(layer) + what); }
void fail_shape(const Layer& layer, const std::string& what) { throw ShapeError(where(layer) + what); }

void* scratch(LayerCall& call, size_t bytes, std::vector<uint8_t>& fallback) {
  if (bytes == 0) return nullptr;
  if (call.workspace && call.workspace_bytes >= bytes) return call.workspace;
  fallback.resize(bytes);
  return fallback.data();
}

}  // namespace kiln::engine::cpu
