// Internal to src/engine/cuda/: the state the CUDA kernels share (stream, library handles,
// caches), error checks, and one `run_*` entry per kernel family. backend.cpp dispatches a
// LayerCall to these; each family lives in its own file.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/network.h"
#include "engine/timing_cache.h"

namespace kiln::engine::cuda {

[[noreturn]] void throw_cuda(const char* what, const char* file, int line, const std::string& detail);

#define KILN_CUDA_CHECK(expr)                                                        \
  do {                                                                               \
    cudaError_t kiln_err_ = (expr);                                                  \
    if (kiln_err_ != cudaSuccess)                                                    \
      ::kiln::engine::cuda::throw_cuda(#expr, __FILE__, __LINE__, cudaGetErrorString(kiln_err_)); \
  } while (0)
// After a kernel launch: launch-configuration errors surface here, not at the next sync.
#define KILN_CUDA_LAUNCH_CHECK() KILN_CUDA_CHECK(cudaGetLastError())

// Scratch memory a library call needs (cuBLASLt's, cuDNN's), grown to the largest a chosen
// tactic asks for. The buffer a growth replaces is freed at once when no CUDA graph has been
// recorded since it was allocated (the first run, where tactics are chosen and nearly all growth
// happens); otherwise a recorded graph may still point at it, and it is kept until the workspace
// goes. Never grown during a graph capture (cudaMalloc would break it): tactics are chosen
// outside captures.
struct DeviceWorkspace {
  void* data = nullptr;
  size_t bytes = 0;
  void reserve(size_t need);
  DeviceWorkspace() = default;
  DeviceWorkspace(const DeviceWorkspace&) = delete;
  DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;
  ~DeviceWorkspace();

 private:
  std::vector<void*> retired_;
  size_t retired_bytes_ = 0;  // kept for recorded graphs (KILN_LOG=debug reports it)
  uint64_t captures_at_allocation_ = 0;
};
// Counts graph captures begun in this process (any backend): a buffer allocated before the count
// last moved may be inside a recorded graph.
uint64_t graph_captures_begun();
void note_graph_capture();

struct MatmulCache;      // matmul.cpp
struct ConvCache;        // convolution.cpp
struct PointwiseCache;   // pointwise.cpp
struct AttentionCache;   // attention_tactic.cpp

// Everything a kernel needs besides its LayerCall. One per backend (per stream).
struct Context {
  cudaStream_t stream = nullptr;
  int device = 0;
  int sm_count = 0;
  int cc_major = 9, cc_minor = 0;
  size_t max_smem_optin = 0;

  void* lt_handle = nullptr;       // cublasLtHandle_t
  // The scratch of cuBLASLt's GEMMs, cuDNN's convolutions and cuDNN's attention: one buffer, as
  // large as the largest chosen algorithm needs, since they run one after another on this stream
  // (a buffer each would hold their sum). GEMM algorithms are offered up to kLtWorkspaceLimit
  // while choosing, outside captures.
  DeviceWorkspace scratch;
  static constexpr size_t kLtWorkspaceLimit = size_t{64} << 20;
  // The running plan's Plan::workspace_limit: no algorithm needing more is chosen (each cache of
  // choices keys on it where it binds).
  size_t workspace_limit = kDefaultWorkspaceLimit;
  size_t gemm_workspace_limit() const { return std::min(kLtWorkspaceLimit, workspace_limit); }
  void* cudnn_handle = nullptr;    // cudnnHandle_t, created on first convolution

  // Tactic choices kept across processes (timing_cache.h) for this device and these libraries
  // (KILN_TIMING_CACHE=off keeps them in memory). Set by the backend before any kernel runs.
  TimingCache* timing = nullptr;

  std::shared_ptr<MatmulCache> matmul;  // shared_ptr: deleter bound where the type is complete
  std::shared_ptr<ConvCache> conv;
  std::shared_ptr<AttentionCache> attention;  // its own cuDNN handle: released with the Context
  // Weights uploaded once for Constant layers the runtime asks us to run: host pointer -> device.
  std::map<const void*, void*> constants;

  bool capturing() const;
  ~Context();
};

// ---- kernel families (one file each) -----------------------------------------------------------
// pointwise.cpp: FusedPointwise and the one-op layers (Elementwise, Unary, Activation, Cast,
// Select) all go through one NVRTC code generator.
void run_pointwise(Context& ctx, const Layer& layer, LayerCall& call);
// A pointwise program over explicit views: the epilogues of matmul/convolution use it.
void launch_program(Context& ctx, const FusedPointwiseParams& prog, const std::vector<TensorView>& inputs,
                    const std::vector<TensorView>& outputs);
// out = act(out + bias + residual) with bias broadcast to out, residual of out's shape (each part
// optional).
void apply_epilogue(Context& ctx, const TensorView& out, const TensorView* bias,
                    const std::optional<ActivationParams>& act, const TensorView* residual = nullptr);
// out = act(0 + bias + residual): the epilogue of an empty product (K = 0, no input channels). out
// may already hold the residual (the memory plan gave it the residual's buffer): then it is kept.
void apply_epilogue_to_zeros(Context& ctx, const TensorView& out, const TensorView* bias,
                             const std::optional<ActivationParams>& act, const TensorView* residual);

void run_matmul(Context& ctx, const MatMulParams& p, LayerCall& call);               // matmul.cpp
// y[M, N] = act(x[M, K] · w[N, K]ᵀ + bias[N] + residual[M, N]), row-major, bias, residual and act
// optional (matmul.cpp): a 1x1 convolution in NHWC is exactly this, cuBLASLt adding the residual
// (its C operand) and fusing the bias and relu.
void run_linear_rows(Context& ctx, int64_t M, int64_t N, int64_t K, const TensorView& x, const TensorView& w,
                     const TensorView* bias, const std::optional<ActivationParams>& act, const TensorView& y,
                     const TensorView* residual = nullptr);
void run_convolution(Context& ctx, const ConvolutionParams& p, LayerCall& call);     // convolution.cpp
// depthwise.cpp: kiln's NHWC depthwise convolution (bias, residual, activation fused), and whether
// it can run a given convolution.
bool depthwise_supported(const ConvolutionParams& p, const TensorView& x, const TensorView& w, const TensorView& y);
// Kernels: a generic one for any shape; for 3x3/5x5/7x7 filters with stride 1 or 2
// (depthwise_unrolled) one unrolled per output row, and (depthwise_tiled: fp16/bf16, channels a
// multiple of 4) one per 4x4 (kTiled), 2x4 (kTiledShort), 1x2 (kTiledPair) or 1x1 (kTiledPixel)
// output tile. A kernel asked for where it cannot run falls back to the unrolled one, then the
// generic one.
enum class DepthwiseKernel : uint8_t { kGeneric, kUnrolled, kTiled, kTiledShort, kTiledPair, kTiledPixel };
constexpr DepthwiseKernel kLastDepthwiseKernel = DepthwiseKernel::kTiledPixel;
bool depthwise_unrolled(const ConvolutionParams& p, const TensorView& w);
bool depthwise_tiled(const ConvolutionParams& p, const TensorView& x, const TensorView& w);
void run_depthwise(Context& ctx, const Layer& layer, const ConvolutionParams& p, const TensorView& x,
                   const TensorView& w, const TensorView* bias, const TensorView* residual, const TensorView& y,
                   DepthwiseKernel kernel = DepthwiseKernel::kTiled);
void run_reduce(Context& ctx, const ReduceParams& p, LayerCall& call);               // reduce.cu
size_t reduce_workspace(const Context& ctx, const ReduceParams& p, const std::vector<TensorView>& in);
// The reduction of call.inputs[0] over the axes marked in `reduced` into call.outputs[0] (kept dims
// in order; size-1 dims anywhere), with call.workspace as planned by reduce_over_workspace.
// Global pooling runs through it too.
void reduce_over(Context& ctx, LayerCall& call, ReduceOp op, const std::vector<bool>& reduced, double correction = 0);
size_t reduce_over_workspace(const Context& ctx, const TensorView& x, const std::vector<bool>& reduced);
size_t pooling_workspace(const Context& ctx, const PoolingParams& p, const std::vector<TensorView>& in);
void run_softmax(Context& ctx, const SoftmaxParams& p, LayerCall& call);             // norm.cu
void run_normalization(Context& ctx, const NormalizationParams& p, LayerCall& call); // norm.cu
void run_attention(Context& ctx, const AttentionParams& p, LayerCall& call);         // attention.cu
void run_pooling(Context& ctx, const PoolingParams& p, LayerCall& call);             // pool_resize.cu
void run_resize(Context& ctx, const ResizeParams& p, LayerCall& call);               // pool_resize.cu
void run_cumsum(Context& ctx, const CumSumParams& p, LayerCall& call);               // scan_topk.cu
void run_topk(Context& ctx, const TopKParams& p, LayerCall& call);                   // scan_topk.cu
void run_nonzero(Context& ctx, const NonZeroParams& p, LayerCall& call);             // scan_topk.cu
// movement.cu: data movement, no arithmetic.
void run_shuffle(Context& ctx, const ShuffleParams& p, LayerCall& call);
size_t shuffle_workspace(const ShuffleParams& p, const std::vector<TensorView>& in);
void run_concat(Context& ctx, const ConcatParams& p, LayerCall& call);
void run_slice(Context& ctx, const SliceParams& p, LayerCall& call);
void run_pad(Context& ctx, const PadParams& p, LayerCall& call);
void run_gather(Context& ctx, const GatherParams& p, LayerCall& call);
void run_scatter(Context& ctx, const ScatterParams& p, LayerCall& call);
void run_fill(Context& ctx, const FillParams& p, LayerCall& call);
void run_shape(Context& ctx, LayerCall& call);
void run_copy(Context& ctx, const TensorView& dst, const TensorView& src);  // same dtype, same numel

// ---- small host helpers ------------------------------------------------------------------------
// Mean GPU time of `launch` on the context's stream over 10 runs, after warm-up runs (the first
// launch of a kernel also loads its module): how tactic choices (convolution, matmul, attention)
// compare their candidates. The stream is held (hold_stream) while the runs are queued, so the
// time is the GPU's alone, as inside the CUDA graph a plan runs in: a library call with a
// large host cost (cuDNN's graph execution, ~10 us) is not charged for it against a bare kernel.
// Never call it during a graph capture.
float time_launches_ms(Context& ctx, const std::function<void()>& launch);
// Same, but gives up after one timed run when that run already takes more than `give_up_ms`
// (a candidate far slower than the best so far is not worth ten more runs); returns that run's time.
float time_launches_ms(Context& ctx, const std::function<void()>& launch, float give_up_ms);
// Around a tactic search: the per-thread stack limit as the search found it, set back when the
// search ends. The driver grows the local memory it reserves (stack bytes per thread times every
// thread the GPU can hold: 132 SMs x 2048 threads on an H200) to fit the largest stack any
// launched kernel needs, and keeps it for the life of the process. One candidate engine that
// spills 3 KiB per thread and loses its timing would hold ~900 MiB of device memory that no plan
// uses (regnet's stride-2 1x1 convolutions on cuDNN's graph engines). Setting the limit frees
// that reservation; a chosen kernel that needs more grows it again at its own launch.
class StackReservationScope {
 public:
  explicit StackReservationScope(std::string what);
  ~StackReservationScope();
  StackReservationScope(const StackReservationScope&) = delete;
  StackReservationScope& operator=(const StackReservationScope&) = delete;

 private:
  std::string what_;
  size_t limit_ = 0;    // bytes per thread when the search began; 0: unknown, nothing to restore
  size_t free_at_start_ = 0;
};
// Queues a one-thread kernel that keeps the stream busy for `microseconds` (verify.cu).
void hold_stream(Context& ctx, double microseconds);
// max |got - want| / max |want| over n elements of dtype t (float types; synchronises the stream):
// verify.cu, for tactic selection.
float relative_difference(Context& ctx, const void* got, const void* want, DataType t, int64_t n);
[[noreturn]] void fail(const Layer& layer, const std::string& what);
int64_t product(const std::vector<int64_t>& d, size_t begin = 0, size_t end = SIZE_MAX);
// Strides (elements) of `in` broadcast against `out` (right-aligned): 0 on broadcast dims.
std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& in, const std::vector<int64_t>& out);
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// Grid size for a grid-stride loop over n items.
unsigned grid_for(const Context& ctx, int64_t n, int threads);
// A matmul's or convolution's residual input (its last) when it has one, checked against its
// output `y`: the epilogues read it as a dense tensor of y's dtype and shape.
inline const TensorView* residual_of(const LayerCall& call, bool has_residual, const TensorView& y) {
  if (!has_residual) return nullptr;
  const TensorView& r = call.inputs.back();
  if (r.dtype != y.dtype || r.numel() != y.numel() || !r.is_contiguous())
    fail(call.layer, "the residual must be a contiguous tensor of the output's dtype and shape");
  return &r;
}

}  // namespace kiln::engine::cuda
