// MatMul through cuBLASLt: y = act(op(A) @ op(B) + bias), fp32 accumulation for every dtype
// (fp16/bf16 on the tensor cores; fp32 in true fp32, no TF32, so results track the CPU path).
//
// Row-major to column-major: row-major C[M,N] = A·B is column-major C^T = B^T·A^T, so cuBLASLt is
// called with its "A" = our B and its "B" = our A, m = N, n = M. A bias vector over N is then
// cuBLASLt's per-row bias, which its BIAS epilogues add (with RELU or GELU-tanh fused); any other
// bias shape or activation runs as one fused pointwise pass after the GEMM.
//
// Batches: when B has no batch (a Linear layer), A's batch folds into M: one big GEMM. Otherwise a
// strided-batched GEMM, with stride 0 for an operand broadcast over every batch dim; other
// broadcast patterns loop over the output's batch.
#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "engine/cuda/internal.h"
#include "engine/network_internal.h"

namespace kiln::engine::cuda {

namespace {
void lt_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw NetworkError(std::string("cuBLASLt: ") + what + " failed (status " + std::to_string(int(s)) + ")");
}

cudaDataType_t cuda_type(DataType t) {
  switch (t) {
    case DataType::kFloat32: return CUDA_R_32F;
    case DataType::kFloat16: return CUDA_R_16F;
    case DataType::kBFloat16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

struct GemmKey {
  DataType dtype;
  bool ta, tb;
  int64_t m, n, k, batch, stride_a, stride_b, stride_c;
  int epilogue;
  int64_t workspace_limit;  // what algorithms may use (Context::gemm_workspace_limit)
  bool operator==(const GemmKey& o) const { return std::memcmp(this, &o, sizeof(GemmKey)) == 0; }
};
struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(&k);
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(GemmKey); ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
  }
};

// Descriptors and the heuristic's algorithm for one GEMM configuration, made once.
struct Gemm {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;  // what `algo` needs
  bool has_algo = false;
  ~Gemm() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

// KILN_GEMM_TACTIC=heuristic takes cuBLASLt's first heuristic choice untimed (comparisons, and
// builds that must not spend time timing).
bool gemm_timing_enabled() { return detail::env_choice("KILN_GEMM_TACTIC", {"auto", "heuristic"}) == 0; }

// The timing cache's key for a GEMM configuration: every field of GemmKey (the workspace limit
// only where a plan lowered it below Context::kLtWorkspaceLimit, so keys made before it existed hold).
std::string cache_key_of(const GemmKey& k) {
  std::ostringstream s;
  s << "gemm " << int(k.dtype) << (k.ta ? 'T' : 'N') << (k.tb ? 'T' : 'N') << ' ' << k.m << 'x' << k.n << 'x' << k.k
    << " b" << k.batch << " s" << k.stride_a << ',' << k.stride_b << ',' << k.stride_c << " e" << k.epilogue;
  if (size_t(k.workspace_limit) < Context::kLtWorkspaceLimit) s << " w" << k.workspace_limit;
  // 16-bit outputs: chosen among algorithms whose split-K partials stay in fp32 (records timed
  // before that rule have no mark and are not read).
  if (k.dtype != DataType::kFloat32) s << " rc";
  return s.str();
}

// cuBLASLt documents its algorithm structure as trivially serializable for the same library
// version (the cache's device signature pins the version): its bytes, in hex.
nlohmann::json algo_record(const cublasLtMatmulAlgo_t& algo, float ms) {
  static const char* digits = "0123456789abcdef";
  const auto* bytes = reinterpret_cast<const unsigned char*>(&algo);
  std::string hex;
  for (size_t i = 0; i < sizeof algo; ++i) hex += digits[bytes[i] >> 4], hex += digits[bytes[i] & 15];
  return {{"algo", hex}, {"ms", ms}};
}

// The algorithm a record names and the workspace it needs, if cuBLASLt confirms it runs this GEMM
// within `max_workspace`; nullopt sends the caller back to the heuristic and timing.
std::optional<std::pair<cublasLtMatmulAlgo_t, size_t>> restore_algo(Context& ctx, const Gemm& g,
                                                                     const nlohmann::json& record,
                                                                     size_t max_workspace) {
  const std::string hex = record.value("algo", "");
  cublasLtMatmulAlgo_t algo{};
  if (hex.size() != 2 * sizeof algo || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
    return std::nullopt;
  auto nibble = [](char c) { return c >= 'a' ? c - 'a' + 10 : c - '0'; };
  auto* bytes = reinterpret_cast<unsigned char*>(&algo);
  for (size_t i = 0; i < sizeof algo; ++i) bytes[i] = static_cast<unsigned char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  cublasLtMatmulHeuristicResult_t check{};
  if (cublasLtMatmulAlgoCheck(static_cast<cublasLtHandle_t>(ctx.lt_handle), g.op, g.a, g.b, g.c, g.c, &algo, &check) !=
          CUBLAS_STATUS_SUCCESS ||
      check.state != CUBLAS_STATUS_SUCCESS || check.workspaceSize > max_workspace)
    return std::nullopt;
  return std::pair{algo, check.workspaceSize};
}

}  // namespace

struct MatmulCache {
  std::mutex mutex;
  std::unordered_map<GemmKey, std::unique_ptr<Gemm>, GemmKeyHash> gemms;
};

namespace {

// Our operands in cuBLASLt's column-major terms (see the file comment). Pointers per batch are
// base + i * stride.
void gemm(Context& ctx, DataType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t batch,
          const void* A, int64_t stride_a, const void* B, int64_t stride_b, void* C, int64_t stride_c,
          cublasLtEpilogue_t epi, const void* bias, const void* residual) {
  if (!ctx.matmul) ctx.matmul = std::make_shared<MatmulCache>();
  GemmKey key{};
  std::memset(&key, 0, sizeof key);
  key.dtype = dt; key.ta = ta; key.tb = tb; key.m = M; key.n = N; key.k = K; key.batch = batch;
  key.stride_a = stride_a; key.stride_b = stride_b; key.stride_c = stride_c; key.epilogue = int(epi);
  key.workspace_limit = int64_t(ctx.gemm_workspace_limit());
  Gemm* g = nullptr;
  {
    std::lock_guard<std::mutex> lock(ctx.matmul->mutex);
    auto& slot = ctx.matmul->gemms[key];
    if (!slot) {
      auto ng = std::make_unique<Gemm>();
      const cudaDataType_t ct = cuda_type(dt);
      lt_check(cublasLtMatmulDescCreate(&ng->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
      cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // lt "A" = our B
      cublasOperation_t opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // lt "B" = our A
      lt_check(cublasLtMatmulDescSetAttribute(ng->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa), "transa");
      lt_check(cublasLtMatmulDescSetAttribute(ng->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb), "transb");
      lt_check(cublasLtMatmulDescSetAttribute(ng->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "epilogue");
      if (epi != CUBLASLT_EPILOGUE_DEFAULT && epi != CUBLASLT_EPILOGUE_RELU && epi != CUBLASLT_EPILOGUE_GELU) {
        cudaDataType_t bt = ct;
        lt_check(cublasLtMatmulDescSetAttribute(ng->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt), "bias type");
      }
      // Stored shapes (column-major rows x cols, leading dim = rows).
      const uint64_t a_rows = tb ? K : N, a_cols = tb ? N : K;  // our B: row-major [K,N] or [N,K]
      const uint64_t b_rows = ta ? M : K, b_cols = ta ? K : M;  // our A: row-major [M,K] or [K,M]
      lt_check(cublasLtMatrixLayoutCreate(&ng->a, ct, a_rows, a_cols, a_rows), "layout a");
      lt_check(cublasLtMatrixLayoutCreate(&ng->b, ct, b_rows, b_cols, b_rows), "layout b");
      lt_check(cublasLtMatrixLayoutCreate(&ng->c, ct, N, M, N), "layout c");
      if (batch > 1) {
        int32_t bc = static_cast<int32_t>(batch);
        for (auto [l, s] : {std::pair{ng->a, stride_b}, std::pair{ng->b, stride_a}, std::pair{ng->c, stride_c}}) {
          lt_check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc), "batch");
          int64_t st = s;
          lt_check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st, sizeof st), "stride");
        }
      }
      // Algorithms may ask for workspace up to the limit while choosing; during a capture (where the
      // workspace cannot grow) only what is there.
      const bool capturing = ctx.capturing();
      uint64_t ws = capturing ? std::min(ctx.scratch.bytes, ctx.gemm_workspace_limit()) : ctx.gemm_workspace_limit();
      // A choice timed before, by this process or an earlier one: no heuristic query, no timing.
      const bool timing = gemm_timing_enabled();
      const std::string cache_key = timing ? cache_key_of(key) : std::string();
      std::optional<std::pair<cublasLtMatmulAlgo_t, size_t>> cached;
      if (timing)
        if (auto record = ctx.timing->find(cache_key))
          cached = restore_algo(ctx, *ng, *record, size_t(ws));
      // Otherwise the heuristic's first few algorithms, timed on this GPU at the first run of the
      // shape (not during a graph capture, where the heuristic's first choice stands); the fastest
      // is kept.
      constexpr int kCandidates = 8;
      cublasLtMatmulHeuristicResult_t res[kCandidates];
      int found = 0;
      cublasStatus_t st = CUBLAS_STATUS_NOT_INITIALIZED;
      if (!cached) {
        cublasLtMatmulPreference_t pref;
        lt_check(cublasLtMatmulPreferenceCreate(&pref), "pref");
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
        if (dt != DataType::kFloat32) {
          // Split-K partial sums only in the compute type (fp32): the in-place and output-type
          // reductions keep them in fp16/bf16, rounding every partial to 8 (bf16) or 11 bits.
          const uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;  // and NONE, which no mask excludes
          cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reductions,
                                               sizeof reductions);
        }
        st = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(ctx.lt_handle), ng->op, ng->a, ng->b, ng->c,
                                            ng->c, pref, kCandidates, res, &found);
        cublasLtMatmulPreferenceDestroy(pref);
      }
      if (cached) {
        ng->algo = cached->first;
        ng->workspace = cached->second;
        ng->has_algo = true;
      } else if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
        ng->algo = res[0].algo;
        ng->workspace = res[0].workspaceSize;
        ng->has_algo = true;
        if (found > 1 && !capturing && timing) {
          const StackReservationScope stack_scope("cuBLASLt " + std::to_string(M) + 'x' + std::to_string(N) + 'x' + std::to_string(K));
          if (bias)
            lt_check(cublasLtMatmulDescSetAttribute(ng->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "bias");
          // Timed into a scratch output: the real one may share memory with the inputs' buffers.
          const int64_t out_elems = batch > 1 ? stride_c * (batch - 1) + M * N : M * N;
          void* scratch = nullptr;
          KILN_CUDA_CHECK(cudaMalloc(&scratch, size_t(std::max<int64_t>(out_elems, 1)) * element_size(dt)));
          // A workspace for the candidates, freed after: the one kept is as large as the winner needs.
          size_t candidate_ws = 0;
          for (int i = 0; i < found; ++i) candidate_ws = std::max(candidate_ws, res[i].workspaceSize);
          void* timing_ws = nullptr;
          if (candidate_ws) KILN_CUDA_CHECK(cudaMalloc(&timing_ws, candidate_ws));
          const float alpha = 1.f, beta = residual ? 1.f : 0.f;
          float best = std::numeric_limits<float>::infinity();
          std::ostringstream log;
          log << "cuBLASLt " << M << 'x' << N << 'x' << K << " batch " << batch << ": heuristic candidates (ms)";
          for (int i = 0; i < found; ++i) {
            if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
            bool ran = true;
            const float t = time_launches_ms(ctx, [&] {
              ran &= cublasLtMatmul(static_cast<cublasLtHandle_t>(ctx.lt_handle), ng->op, &alpha, B, ng->a, A, ng->b,
                                    &beta, residual ? residual : scratch, ng->c, scratch, ng->c, &res[i].algo,
                                    timing_ws, candidate_ws, ctx.stream) == CUBLAS_STATUS_SUCCESS;
            });
            if (!ran) continue;
            log << ' ' << i << ':' << t;
            if (t < best) best = t, ng->algo = res[i].algo, ng->workspace = res[i].workspaceSize;
          }
          cudaFree(scratch);
          if (timing_ws) cudaFree(timing_ws);
          if (detail::debug_logging())
            detail::log_debug(log.str());
          if (std::isfinite(best)) ctx.timing->store(cache_key, algo_record(ng->algo, best));
        }
      }
      if (ng->has_algo) ctx.scratch.reserve(ng->workspace);  // within the current size when capturing
      slot = std::move(ng);
    }
    g = slot.get();
  }
  if (!g->has_algo) throw NetworkError("cuBLASLt: no algorithm for this matmul");
  if (bias) lt_check(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "bias");
  // A residual is cuBLASLt's C operand (same layout as the output D): D = act(A·B + 1·C + bias).
  const float alpha = 1.f, beta = residual ? 1.f : 0.f;
  lt_check(cublasLtMatmul(static_cast<cublasLtHandle_t>(ctx.lt_handle), g->op, &alpha, B, g->a, A, g->b, &beta,
                          residual ? residual : C, g->c, C, g->c, &g->algo, ctx.scratch.data,
                          ctx.scratch.bytes, ctx.stream),
           "cublasLtMatmul");
}

}  // namespace

namespace {
// Which part of bias + activation cuBLASLt's epilogue takes: a bias vector over N, relu or
// tanh-gelu. The rest is left to apply_epilogue.
struct EpilogueSplit {
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  bool bias_fused = false, act_fused = false;
};
EpilogueSplit split_epilogue(const TensorView* bias, int64_t N, DataType dt, const std::optional<ActivationParams>& act) {
  EpilogueSplit e;
  const bool bias_vector =
      bias && bias->dims.size() >= 1 && bias->dims.back() == N && bias->numel() == N && bias->dtype == dt;
  if (act && (act->op == ActivationOp::kRelu || act->op == ActivationOp::kGeluTanh) && (!bias || bias_vector)) {
    e.act_fused = true;
    const bool relu = act->op == ActivationOp::kRelu;
    e.epi = bias ? (relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS)
                 : (relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_GELU);
  } else if (bias_vector) {
    e.epi = CUBLASLT_EPILOGUE_BIAS;
  }
  e.bias_fused = bias_vector;
  return e;
}
}  // namespace

void run_linear_rows(Context& ctx, int64_t M, int64_t N, int64_t K, const TensorView& x, const TensorView& w,
                     const TensorView* bias, const std::optional<ActivationParams>& act, const TensorView& y,
                     const TensorView* residual) {
  const EpilogueSplit e = split_epilogue(bias, N, y.dtype, act);
  gemm(ctx, y.dtype, false, true, M, N, K, 1, x.data, 0, w.data, 0, y.data, 0, e.epi, e.bias_fused ? bias->data : nullptr,
       residual ? residual->data : nullptr);
  apply_epilogue(ctx, y, e.bias_fused ? nullptr : bias, e.act_fused ? std::nullopt : act);
}

void run_matmul(Context& ctx, const MatMulParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  const TensorView& A = call.inputs.at(0);
  const TensorView& B = call.inputs.at(1);
  const TensorView& Y = call.outputs.at(0);
  const DataType dt = Y.dtype;
  if (dt != DataType::kFloat32 && dt != DataType::kFloat16 && dt != DataType::kBFloat16)
    fail(layer, std::string("matmul of ") + to_string(dt) + " is not supported");
  if (A.dtype != dt || B.dtype != dt) fail(layer, "matmul operands must share the output dtype");
  const size_t ra = A.dims.size(), rb = B.dims.size(), ry = Y.dims.size();
  if (ra < 2 || rb < 2 || ry < 2) fail(layer, "matmul operands need rank >= 2");
  const int64_t M = Y.dims[ry - 2], N = Y.dims[ry - 1];
  const int64_t K = p.transpose_a ? A.dims[ra - 2] : A.dims[ra - 1];
  if (Y.numel() == 0) return;
  const size_t es = element_size(dt);

  // Bias: fused when it is a vector over N.
  const TensorView* bias = p.has_bias ? &call.inputs.at(2) : nullptr;
  const EpilogueSplit split = split_epilogue(bias, N, dt, p.activation);
  const cublasLtEpilogue_t epi = split.epi;
  const bool bias_fused = split.bias_fused, act_fused = split.act_fused;
  const void* bias_ptr = bias_fused ? bias->data : nullptr;
  const TensorView* residual = residual_of(call, p.has_residual, Y);
  const char* res = residual ? static_cast<const char*>(residual->data) : nullptr;
  if (K == 0) {  // the product is zeros
    apply_epilogue_to_zeros(ctx, Y, bias, p.activation, residual);
    return;
  }

  // Batch dims, each operand's right-aligned against the output's.
  std::vector<int64_t> yb(Y.dims.begin(), Y.dims.end() - 2);
  std::vector<int64_t> ab(A.dims.begin(), A.dims.end() - 2), bb(B.dims.begin(), B.dims.end() - 2);
  const int64_t batch = product(yb), a_batch = product(ab), b_batch = product(bb);
  const int64_t a_mat = A.dims[ra - 1] * A.dims[ra - 2], b_mat = B.dims[rb - 1] * B.dims[rb - 2];
  const int64_t y_mat = M * N;

  if (b_batch == 1 && !p.transpose_a) {
    // A's batch folds into M (covers plain 2-D too).
    gemm(ctx, dt, false, p.transpose_b, M * batch, N, K, 1, A.data, 0, B.data, 0, Y.data, 0, epi, bias_ptr, res);
  } else if ((a_batch == batch || a_batch == 1) && (b_batch == batch || b_batch == 1)) {
    gemm(ctx, dt, p.transpose_a, p.transpose_b, M, N, K, batch, A.data, a_batch == 1 ? 0 : a_mat, B.data,
         b_batch == 1 ? 0 : b_mat, Y.data, y_mat, epi, bias_ptr, res);
  } else {
    // Partial broadcast (e.g. [2,1,M,K] x [1,3,K,N]): one GEMM per output batch.
    std::vector<int64_t> sa = broadcast_strides(ab, yb), sb = broadcast_strides(bb, yb);
    for (int64_t i = 0; i < batch; ++i) {
      int64_t rem = i, oa = 0, ob = 0;
      for (size_t d = yb.size(); d-- > 0;) {
        int64_t c = rem % yb[d];
        rem /= yb[d];
        oa += c * sa[d];
        ob += c * sb[d];
      }
      gemm(ctx, dt, p.transpose_a, p.transpose_b, M, N, K, 1, static_cast<const char*>(A.data) + oa * a_mat * es, 0,
           static_cast<const char*>(B.data) + ob * b_mat * es, 0, static_cast<char*>(Y.data) + i * y_mat * es, 0, epi,
           bias_ptr, res ? res + i * y_mat * es : nullptr);
    }
  }
  apply_epilogue(ctx, Y, bias_fused ? nullptr : bias, act_fused ? std::nullopt : p.activation);
}

}  // namespace kiln::engine::cuda
