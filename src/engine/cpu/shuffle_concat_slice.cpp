// Data movement with no arithmetic: shuffle (permute, reshape, permute), concatenation and
// strided slices. All of them are one "strided copy": out[i...] = in[base + sum(i_d * stride_d)],
// done by element size (1/2/4/8 bytes) so dtypes do not matter, parallel over output rows.
#include <algorithm>
#include <cstdint>
#include <numeric>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"

namespace kiln::engine::cpu {
namespace {

// A transpose of the last two (collapsed) dims: the output's rows walk the source with stride 1,
// its columns with stride `is` (NCHW -> NHWC: [N, HW, C] from [N, C, HW]). Copied in square tiles
// so that both sides touch whole cache lines; row by row, each output row of C elements would read
// C cache lines.
template <class E>
void transpose_copy(const E* src, int64_t base, const std::vector<int64_t>& dims, const std::vector<int64_t>& strides,
                    E* dst) {
  constexpr int64_t kTile = 32;
  const size_t r = dims.size();
  const int64_t cols = dims[r - 1], rows = dims[r - 2], is = strides[r - 1];
  const int64_t outer = product(dims, 0, r - 2), row_tiles = (rows + kTile - 1) / kTile;
  parallel_for(outer * row_tiles, outer * rows * cols > kParallelGrain, [&](int64_t u) {
    const int64_t o = u / row_tiles, i0 = (u % row_tiles) * kTile, i1 = std::min(rows, i0 + kTile);
    int64_t rem = o, off = base;
    for (size_t d = r - 2; d-- > 0;) {
      off += (rem % dims[d]) * strides[d];
      rem /= dims[d];
    }
    E* out = dst + o * rows * cols;
    for (int64_t k0 = 0; k0 < cols; k0 += kTile) {
      const int64_t k1 = std::min(cols, k0 + kTile);
      for (int64_t k = k0; k < k1; ++k) {
        const E* s = src + off + k * is;
        for (int64_t i = i0; i < i1; ++i) out[i * cols + k] = s[i];
      }
    }
  });
}

template <class E>
void strided_copy_t(const E* src, int64_t base, const std::vector<int64_t>& in_dims,
                    const std::vector<int64_t>& in_strides, E* dst) {
  const int64_t total = product(in_dims);
  if (total == 0) return;
  // Adjacent dims the source walks as one (stride of the outer = extent x stride of the inner) are
  // one dim: fewer, longer rows.
  std::vector<int64_t> dims, strides;
  for (size_t d = 0; d < in_dims.size(); ++d) {
    if (in_dims[d] == 1) continue;
    if (!dims.empty() && strides.back() == in_dims[d] * in_strides[d]) {
      dims.back() *= in_dims[d];
      strides.back() = in_strides[d];
    } else {
      dims.push_back(in_dims[d]);
      strides.push_back(in_strides[d]);
    }
  }
  const size_t r = dims.size();
  if (r == 0) {
    dst[0] = src[base];
    return;
  }
  const int64_t inner = dims[r - 1], rows = total / inner, is = strides[r - 1];
  if (r >= 2 && strides[r - 2] == 1 && is != 1)
    return transpose_copy(src, base, dims, strides, dst);
  parallel_for(rows, total > kParallelGrain, [&](int64_t row) {
    int64_t rem = row, off = base;
    for (size_t d = r - 1; d-- > 0;) {
      off += (rem % dims[d]) * strides[d];
      rem /= dims[d];
    }
    E* o = dst + row * inner;
    const E* s = src + off;
    if (is == 1) std::copy(s, s + inner, o);
    else for (int64_t k = 0; k < inner; ++k) o[k] = s[k * is];
  });
}

}  // namespace

// out (contiguous, `dims`) gathers from src with element strides `strides` starting at `base`.
void strided_copy(const void* src, int64_t base, const std::vector<int64_t>& dims,
                  const std::vector<int64_t>& strides, void* dst, size_t elem) {
  // A short contiguous last dim (complex pairs, RGB-less pixels of 2 halves, ...) moves as one
  // wider element: a transpose of [.., 3001, 201, 2] floats is then a tiled transpose of 8-byte
  // elements instead of 600 thousand rows of two.
  if (!dims.empty() && strides.back() == 1 && dims.back() > 1 && elem * size_t(dims.back()) <= 8) {
    const int64_t run = dims.back();
    const size_t wide = elem * size_t(run);
    bool fits = (wide & (wide - 1)) == 0 && base % run == 0 && reinterpret_cast<uintptr_t>(src) % wide == 0 &&
                reinterpret_cast<uintptr_t>(dst) % wide == 0;
    for (size_t d = 0; d + 1 < dims.size() && fits; ++d) fits = dims[d] == 1 || strides[d] % run == 0;
    if (fits) {
      std::vector<int64_t> outer_dims(dims.begin(), dims.end() - 1), outer_strides;
      for (size_t d = 0; d + 1 < dims.size(); ++d) outer_strides.push_back(strides[d] / run);
      return strided_copy(src, base / run, outer_dims, outer_strides, dst, wide);
    }
  }
  switch (elem) {
    case 1: return strided_copy_t(static_cast<const uint8_t*>(src), base, dims, strides, static_cast<uint8_t*>(dst));
    case 2: return strided_copy_t(static_cast<const uint16_t*>(src), base, dims, strides, static_cast<uint16_t*>(dst));
    case 4: return strided_copy_t(static_cast<const uint32_t*>(src), base, dims, strides, static_cast<uint32_t*>(dst));
    default: return strided_copy_t(static_cast<const uint64_t*>(src), base, dims, strides, static_cast<uint64_t*>(dst));
  }
}

void permute_copy(const void* in, const std::vector<int64_t>& in_dims, const std::vector<int64_t>& perm, void* dst,
                  size_t elem) {
  std::vector<int64_t> cs(in_dims.size()), od(perm.size()), os(perm.size());
  int64_t s = 1;
  for (size_t d = in_dims.size(); d-- > 0;) { cs[d] = s; s *= in_dims[d]; }
  for (size_t i = 0; i < perm.size(); ++i) { od[i] = in_dims[perm[i]]; os[i] = cs[perm[i]]; }
  strided_copy(in, 0, od, os, dst, elem);
}

static bool is_identity(const std::vector<int64_t>& perm) {
  for (size_t i = 0; i < perm.size(); ++i)
    if (perm[i] != int64_t(i)) return false;
  return true;
}

void run(const ShuffleParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  const size_t es = element_size(x.dtype);
  const bool perm1 = !p.first_perm.empty() && !is_identity(p.first_perm);
  const bool perm2 = !p.second_perm.empty() && !is_identity(p.second_perm);
  if (x.numel() == 0) return;
  // Contiguous data is reshaped for free; only the permutes move bytes.
  std::vector<uint8_t> tmp;
  const void* mid = x.data;
  if (perm1) {
    if (!perm2) {
      permute_copy(x.data, x.dims, p.first_perm, out.data, es);
      return;
    }
    tmp.resize(x.nbytes());
    permute_copy(x.data, x.dims, p.first_perm, tmp.data(), es);
    mid = tmp.data();
  }
  if (perm2) {
    // The reshaped dims are the output's dims with the second permutation undone.
    std::vector<int64_t> reshaped(out.dims.size());
    for (size_t i = 0; i < p.second_perm.size(); ++i) reshaped[p.second_perm[i]] = out.dims[i];
    permute_copy(mid, reshaped, p.second_perm, out.data, es);
    return;
  }
  if (out.data != x.data) std::memcpy(out.data, x.data, x.nbytes());
}

void run(const ConcatParams& p, LayerCall& call) {
  const TensorView& out = call.outputs.at(0);
  const int64_t rank = int64_t(out.dims.size());
  const int64_t axis = canonical_axis(call.layer, p.axis, rank);
  const size_t es = element_size(out.dtype);
  const int64_t outer = product(out.dims, 0, size_t(axis));
  const int64_t inner = product(out.dims, size_t(axis) + 1);
  const int64_t out_row = out.dims[axis] * inner;
  // Each output row (a pixel's channels, channels last) is written front to back from every
  // input's row in turn, in one pass over the output.
  std::vector<std::pair<const uint8_t*, size_t>> rows;  // each input's data and row bytes
  for (const TensorView& in : call.inputs) {
    if (in.dtype != out.dtype) fail(call.layer, "concat inputs must share the output dtype");
    rows.emplace_back(static_cast<const uint8_t*>(in.data), size_t(in.dims[axis] * inner) * es);
  }
  uint8_t* dst = static_cast<uint8_t*>(out.data);
  parallel_for(outer, outer * out_row > kParallelGrain, [&](int64_t o) {
    uint8_t* d = dst + size_t(o * out_row) * es;
    for (const auto& [src, bytes] : rows) {
      std::memcpy(d, src + size_t(o) * bytes, bytes);
      d += bytes;
    }
  });
}

void run(const SliceParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& x = call.inputs.at(0);
  const TensorView& out = call.outputs.at(0);
  const size_t r = x.dims.size();
  if (p.start.size() != r || p.stride.size() != r || out.dims.size() != r) fail(layer, "slice rank mismatch");
  static const SymbolValues kNone;
  const SymbolValues& syms = call.symbols ? *call.symbols : kNone;
  const auto cs = x.contiguous_strides();
  std::vector<int64_t> strides(r);
  int64_t base = 0;
  for (size_t d = 0; d < r; ++d) {
    int64_t start = p.start[d].evaluate(syms), step = p.stride[d].evaluate(syms), n = out.dims[d];
    if (start < 0) start += x.dims[d];
    if (n > 0) {
      const int64_t last = start + (n - 1) * step;
      if (start < 0 || start >= x.dims[d] || last < 0 || last >= x.dims[d])
        fail_shape(layer, "slice of dim " + std::to_string(d) + " reads outside [0, " + std::to_string(x.dims[d]) +
                              "): start " + std::to_string(start) + ", size " + std::to_string(n) + ", stride " +
                              std::to_string(step));
    }
    base += start * cs[d];
    strides[d] = step * cs[d];
  }
  if (out.numel() == 0) return;
  strided_copy(x.data, base, out.dims, strides, out.data, element_size(x.dtype));
}

}  // namespace kiln::engine::cpu
