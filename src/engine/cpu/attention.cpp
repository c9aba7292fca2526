// Scaled dot-product attention: out = softmax(q k^T * scale + mask) v, per batch-head matrix.
// S = Q K^T and O = P V go through cblas_sgemm (called from one thread; OpenBLAS threads them),
// the masked softmax over rows runs on the worker threads; while oneDNN's OpenMP team is running,
// each matrix runs whole (products and softmax) on one of its threads instead. Bool masks keep where true, float masks
// add; causal keeps j <= i (top-left aligned, as PyTorch). Rows with nothing kept give zeros
// (PyTorch 2.5+'s safe softmax). Batch dims of q/k/v/mask broadcast against the output's.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/onednn.h"
#include "engine/cpu/vec_math.h"

namespace kiln::engine::cpu {
namespace {

// Offset (in matrices) of batch index b into a tensor with batch dims `in` broadcast to `out`.
int64_t batch_offset(int64_t b, const std::vector<int64_t>& out, const std::vector<int64_t>& strides) {
  int64_t off = 0;
  for (size_t d = out.size(); d-- > 0;) {
    off += (b % out[d]) * strides[d];
    b /= out[d];
  }
  return off;
}

std::vector<int64_t> batch_dims(const std::vector<int64_t>& dims) {
  return std::vector<int64_t>(dims.begin(), dims.end() - 2);
}

// A contiguous copy of the elements `view` selects from `t` (input views set by the builder).
TensorView gather_view(const TensorView& t, const StridedView& view, std::vector<uint8_t>& storage) {
  TensorView r;
  r.dtype = t.dtype;
  r.dims = view.dims;
  r.device = t.device;
  storage.resize(static_cast<size_t>(r.numel()) * element_size(t.dtype));
  r.data = storage.data();
  strided_copy(t.data, view.offset, view.dims, view.strides, r.data, element_size(t.dtype));
  return r;
}

}  // namespace

void run(const AttentionParams& p, LayerCall& call) {
  if (!p.output_perm.empty()) {  // into a [*batch, Lq, Ev] buffer, then permuted into the output
    const TensorView& out = call.outputs.at(0);
    const size_t rank = out.dims.size(), es = element_size(out.dtype);
    std::vector<int64_t> logical(rank);
    for (size_t j = 0; j < rank; ++j) logical.at(p.output_perm[j]) = out.dims[j];
    std::vector<uint8_t> storage(out.nbytes());
    std::vector<TensorView> outs{out};
    outs[0].dims = logical;
    outs[0].data = storage.data();
    AttentionParams plain = p;
    plain.output_perm.clear();
    LayerCall inner{call.layer, call.inputs, outs, call.allocate_output, call.workspace, call.workspace_bytes, call.symbols};
    run(plain, inner);
    permute_copy(storage.data(), logical, p.output_perm, out.data, es);
    return;
  }
  const Layer& layer = call.layer;
  TensorView viewed[3];
  std::vector<uint8_t> storage[3];
  for (size_t i = 0; i < 3; ++i)
    viewed[i] = i < p.views.size() && p.views[i] ? gather_view(call.inputs.at(i), *p.views[i], storage[i])
                                                  : call.inputs.at(i);
  const TensorView& q = viewed[0];
  const TensorView& k = viewed[1];
  const TensorView& v = viewed[2];
  const TensorView& out = call.outputs.at(0);
  if (q.dims.size() < 2 || k.dims.size() < 2 || v.dims.size() < 2) fail(layer, "attention needs rank >= 2");
  if (!is_floating(q.dtype)) fail(layer, "attention needs float inputs");
  const int64_t Lq = q.dims.end()[-2], E = q.dims.back(), Lk = k.dims.end()[-2], Ev = v.dims.back();
  if (k.dims.back() != E || v.dims.end()[-2] != Lk) fail_shape(layer, "q/k/v shapes disagree");
  const std::vector<int64_t> ob = batch_dims(out.dims);
  const int64_t B = product(ob);
  const auto qs = broadcast_strides(batch_dims(q.dims), ob), ks = broadcast_strides(batch_dims(k.dims), ob),
             vs = broadcast_strides(batch_dims(v.dims), ob);
  const TensorView* mask = p.has_mask ? &call.inputs.at(3) : nullptr;
  // The mask broadcasts to [*batch, Lq, Lk]; view its strides over that full shape.
  std::vector<int64_t> full = ob, ms;
  full.push_back(Lq);
  full.push_back(Lk);
  FloatInput fmask;
  if (mask) {
    ms = broadcast_strides(mask->dims, full);
    if (mask->dtype != DataType::kBool) fmask = as_float(*mask);
  }
  const float scale = float(p.scale ? *p.scale : 1.0 / std::sqrt(double(E)));
  FloatInput fq = as_float(q), fk = as_float(k), fv = as_float(v);
  FloatOutput fo = float_output(out);
  const float ninf = -std::numeric_limits<float>::infinity();
  if (Lq == 0 || Ev == 0 || B == 0) {
    fo.commit();
    return;
  }
  if (Lk == 0) {  // nothing to attend to: zeros
    std::fill(fo.ptr, fo.ptr + B * Lq * Ev, 0.0f);
    fo.commit();
    return;
  }
  // Matrices are handled in chunks (scores of at most ~32 MB): the chunk's Q·Kᵀ products back to
  // back, one pass of masked softmax over all its rows on the worker threads, then its P·V products,
  // so OpenBLAS's threads and kiln's take turns once per chunk, not twice per matrix.
  const int64_t per_matrix = Lq * Lk;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(B, (int64_t{8} << 20) / per_matrix));
  std::vector<float> S(size_t(chunk * per_matrix));
  const size_t r = full.size();
  // Masked softmax of score row i of the chunk's matrix c (batch index b0 + c), in place.
  auto softmax_row = [&](int64_t b0, int64_t c, int64_t i) {
    float* row = S.data() + c * per_matrix + i * Lk;
    if (mask) {
      int64_t moff = i * ms[r - 2];
      for (int64_t d = int64_t(ob.size()) - 1, rem = b0 + c; d >= 0; --d) {
        moff += (rem % ob[size_t(d)]) * ms[size_t(d)];
        rem /= ob[size_t(d)];
      }
      for (int64_t j = 0; j < Lk; ++j) {
        const int64_t m = moff + j * ms[r - 1];
        if (mask->dtype == DataType::kBool) {
          if (!mask->as<bool>()[m]) row[j] = ninf;
        } else {
          row[j] += fmask.ptr[m];
        }
      }
    }
    if (p.causal)
      for (int64_t j = i + 1; j < Lk; ++j) row[j] = ninf;
    const float mx = vec::max(row, Lk);
    if (mx == ninf) {  // nothing kept
      std::fill(row, row + Lk, 0.0f);
      return;
    }
    vec::scale(row, Lk, 1.0f / vec::exp_shifted_sum(row, row, Lk, mx));
  };
  const float* q0 = fq.ptr;
  const float* k0 = fk.ptr;
  const float* v0 = fv.ptr;
  auto q_of = [&](int64_t b) { return q0 + batch_offset(b, ob, qs) * Lq * E; };
  auto k_of = [&](int64_t b) { return k0 + batch_offset(b, ob, ks) * Lk * E; };
  auto v_of = [&](int64_t b) { return v0 + batch_offset(b, ob, vs) * Lk * Ev; };
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t nb = std::min(chunk, B - b0);
    // While oneDNN's OpenMP team runs (a convolution or large GEMM before this layer), each
    // matrix's products and softmax run on one of its threads: on OpenBLAS's threads the small
    // per-head GEMMs waited for the spinning OpenMP workers (ViT-S/16's attention: 7.4 ms a layer
    // on 2 cores).
    if (E > 0 && onednn_parallel_for(nb, [&](int64_t c) {
          const int64_t b = b0 + c;
          float* Sc = S.data() + c * per_matrix;
          onednn_sgemm_here(false, true, Lq, Lk, E, scale, q_of(b), E, k_of(b), E, Sc, Lk);
          for (int64_t i = 0; i < Lq; ++i) softmax_row(b0, c, i);
          onednn_sgemm_here(false, false, Lq, Ev, Lk, 1.0f, Sc, Lk, v_of(b), Ev, fo.ptr + b * Lq * Ev, Ev);
        }))
      continue;
    for (int64_t c = 0; c < nb; ++c) {
      float* Sc = S.data() + c * per_matrix;
      const int64_t b = b0 + c;
      if (E > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(Lq), int(Lk), int(E), scale, q_of(b), int(E), k_of(b),
                    int(E), 0.0f, Sc, int(Lk));
      else
        std::fill(Sc, Sc + per_matrix, 0.0f);
    }
    parallel_for(nb * Lq, nb * per_matrix > kParallelGrain / 4,
                 [&](int64_t u) { softmax_row(b0, u / Lq, u % Lq); });
    for (int64_t c = 0; c < nb; ++c) {
      const int64_t b = b0 + c;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Lq), int(Ev), int(Lk), 1.0f, S.data() + c * per_matrix,
                  int(Lk), v_of(b), int(Ev), 0.0f, fo.ptr + b * Lq * Ev, int(Ev));
    }
  }
  fo.commit();
}

}  // namespace kiln::engine::cpu
