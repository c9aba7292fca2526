// Batched matrix multiply with NumPy batch broadcasting, transposes and a fused epilogue
// (bias broadcast to the output, then activation). bf16 linear layers, and fp32 ones of a few rows
// against constant weights, run on oneDNN's matmul (onednn_matmul). Other GEMMs go to OpenBLAS's
// cblas_sgemm, always called from one thread so its own thread pool is the only one working
// (kiln's worker threads sleep meanwhile); f16 (and other bf16) operands are converted to fp32
// around the call.
#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/onednn.h"

namespace kiln::engine::cpu {
namespace {

// C[M,N] = op(A) @ op(B), row-major.
void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::memset(C, 0, sizeof(float) * size_t(M * N));
    return;
  }
  if (onednn_sgemm(ta, tb, M, N, K, A, B, C)) return;
  // A matrix times a vector (batch-1 linear layers, classifier heads) as GEMV: OpenBLAS's sgemm
  // packs the whole weight matrix for a single row, which costs several times the multiply.
  if (M == 1) {  // C[1,N] = a . op(B): op(B)^T a, with B stored [N,K] (tb) or [K,N]
    cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, int(tb ? N : K), int(tb ? K : N), 1.0f, B,
                int(tb ? K : N), A, 1, 0.0f, C, 1);
    return;
  }
  if (N == 1) {  // C[M,1] = op(A) b, with A stored [M,K] or [K,M] (ta); b a column of stride 1 either way
    cblas_sgemv(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, int(ta ? K : M), int(ta ? M : K), 1.0f, A,
                int(ta ? M : K), B, 1, 0.0f, C, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              int(M), int(N), int(K), 1.0f, A, int(ta ? M : K), B, int(tb ? K : N), 0.0f, C, int(N));
}

}  // namespace

// Adds `bias` (any shape broadcastable to out_dims) to out in place.
static void add_bias(float* out, const std::vector<int64_t>& out_dims, const TensorView& bias) {
  FloatInput b = as_float(bias);
  const int64_t n = product(out_dims);
  const int64_t last = out_dims.empty() ? 1 : out_dims.back();
  if (bias.numel() == last && (bias.dims.empty() || bias.dims.back() == last)) {
    const int64_t rows = last ? n / last : 0;
    parallel_for(rows, n > kParallelGrain, [&](int64_t r) {
      for (int64_t j = 0; j < last; ++j) out[r * last + j] += b.ptr[j];
    });
    return;
  }
  for_each_broadcast_run(out_dims, {bias.dims}, [&](int64_t o, const int64_t* off, int64_t len, const int64_t* st) {
    for (int64_t k = 0; k < len; ++k) out[o + k] += b.ptr[off[0] + k * st[0]];
  });
}

void run(const MatMulParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& a = call.inputs.at(0);
  const TensorView& b = call.inputs.at(1);
  const TensorView& out = call.outputs.at(0);
  if (!is_floating(a.dtype) || !is_floating(b.dtype)) fail(layer, "matmul needs float inputs");
  if (a.dims.size() < 2 || b.dims.size() < 2 || out.dims.size() < 2) fail(layer, "matmul needs rank >= 2");
  const size_t ra = a.dims.size(), rb = b.dims.size(), ro = out.dims.size();
  const int64_t M = p.transpose_a ? a.dims[ra - 1] : a.dims[ra - 2];
  const int64_t K = p.transpose_a ? a.dims[ra - 2] : a.dims[ra - 1];
  const int64_t Kb = p.transpose_b ? b.dims[rb - 1] : b.dims[rb - 2];
  const int64_t N = p.transpose_b ? b.dims[rb - 2] : b.dims[rb - 1];
  if (K != Kb || out.dims[ro - 2] != M || out.dims[ro - 1] != N)
    fail_shape(layer, "matmul shapes disagree");
  if (onednn_matmul(p, call)) return;  // bf16, or few rows of fp32 against constant weights

  FloatInput fa = as_float(a), fb = as_float(b);
  FloatOutput fo = float_output(out);
  const std::vector<int64_t> batch(out.dims.begin(), out.dims.end() - 2);
  const std::vector<int64_t> a_batch(a.dims.begin(), a.dims.end() - 2), b_batch(b.dims.begin(), b.dims.end() - 2);
  const int64_t nbatch = product(batch);
  const int64_t a_mat = M * K, b_mat = K * N, o_mat = M * N;

  if (product(b_batch) == 1 && !p.transpose_a && product(a_batch) == nbatch) {
    // B shared by every batch and A's rows are contiguous: one tall GEMM (the Linear layer case).
    sgemm(false, p.transpose_b, nbatch * M, N, K, fa.ptr, fb.ptr, fo.ptr);
  } else {
    const auto sa = broadcast_strides(a_batch, batch), sb = broadcast_strides(b_batch, batch);
    for (int64_t i = 0; i < nbatch; ++i) {
      int64_t ia = 0, ib = 0, rem = i;
      for (size_t d = batch.size(); d-- > 0;) {
        int64_t idx = rem % batch[d];
        rem /= batch[d];
        ia += idx * sa[d];
        ib += idx * sb[d];
      }
      sgemm(p.transpose_a, p.transpose_b, M, N, K, fa.ptr + ia * a_mat, fb.ptr + ib * b_mat, fo.ptr + i * o_mat);
    }
  }
  if (p.has_bias) add_bias(fo.ptr, out.dims, call.inputs.at(2));
  if (p.has_residual) add_residual(fo.ptr, call.inputs.back(), out.numel());
  if (p.activation) apply_activation_inplace(fo.ptr, out.numel(), *p.activation);
  fo.commit();
}

}  // namespace kiln::engine::cpu
