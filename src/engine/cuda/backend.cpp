// The CUDA backend: device memory from the stream-ordered allocator, copies on the caller's stream,
// one dispatch from layer kind to kernel family, and CUDA-graph capture/replay for the runtime.
// Nothing here synchronizes the host except copies that involve host memory.
#include <cublasLt.h>
#include <cuda.h>
#include <cuda_runtime.h>
#ifdef KILN_HAS_CUDNN
#include <cudnn.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <sstream>
#include <type_traits>
#include <variant>

#include "engine/cuda/internal.h"
#include "engine/network_internal.h"

namespace kiln::engine {
namespace cuda {

void throw_cuda(const char* what, const char* file, int line, const std::string& detail) {
  std::ostringstream os;
  const char* base = std::strrchr(file, '/');
  os << "CUDA error: " << what << " failed (" << detail << ") at " << (base ? base + 1 : file) << ":" << line;
  throw NetworkError(os.str());
}

void fail(const Layer& layer, const std::string& what) {
  throw NetworkError(layer.label() + " on CUDA: " + what);
}

int64_t product(const std::vector<int64_t>& d, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < d.size() && i < end; ++i) p *= d[i];
  return p;
}

std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t s = 1;
  for (size_t k = 0; k < in.size(); ++k) {
    size_t i = in.size() - 1 - k, o = out.size() - 1 - k;
    st[o] = in[i] == 1 ? 0 : s;
    s *= in[i];
  }
  return st;
}

unsigned grid_for(const Context& ctx, int64_t n, int threads) {
  int64_t blocks = ceil_div(std::max<int64_t>(n, 1), threads);
  // Grid-stride loops: a few waves of resident blocks are enough to saturate memory.
  int64_t cap = int64_t(std::max(ctx.sm_count, 1)) * 32;
  return static_cast<unsigned>(std::min(blocks, cap));
}

float time_launches_ms(Context& ctx, const std::function<void()>& launch, float give_up_ms) {
  cudaEvent_t start, stop;
  KILN_CUDA_CHECK(cudaEventCreate(&start));
  KILN_CUDA_CHECK(cudaEventCreate(&stop));
  launch();  // loads the kernel's module
  // The host's cost of queueing one launch, to size the hold below (capped: a launch that waits on
  // the GPU itself, which none should, would otherwise hold the stream for long).
  const auto queued = std::chrono::steady_clock::now();
  launch();
  const double host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - queued).count();
  auto timed = [&](int runs) {
    hold_stream(ctx, std::min(20000.0, 20.0 + 1.5 * host_us * runs));
    KILN_CUDA_CHECK(cudaEventRecord(start, ctx.stream));
    for (int i = 0; i < runs; ++i) launch();
    KILN_CUDA_CHECK(cudaEventRecord(stop, ctx.stream));
    KILN_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return ms / float(runs);
  };
  float ms = timed(1);
  if (!(ms > give_up_ms)) {
    launch();
    ms = timed(10);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

float time_launches_ms(Context& ctx, const std::function<void()>& launch) {
  return time_launches_ms(ctx, launch, std::numeric_limits<float>::infinity());
}

StackReservationScope::StackReservationScope(std::string what) : what_(std::move(what)) {
  if (cudaDeviceGetLimit(&limit_, cudaLimitStackSize) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so the next check does not blame its own call
    limit_ = 0;
    return;
  }
  size_t total = 0;  // the free memory only feeds KILN_LOG=debug's report
  if (detail::debug_logging() && cudaMemGetInfo(&free_at_start_, &total) != cudaSuccess) cudaGetLastError();
}

StackReservationScope::~StackReservationScope() {
  if (limit_ == 0) return;
  // Set back whether or not the reported limit moved: the driver's automatic growth is not
  // documented to show in cudaDeviceGetLimit, and setting the limit is what releases the memory.
  // It waits for the device to go idle, once per search, at build time.
  size_t free_before = 0, free_after = 0, total = 0;
  const bool log = detail::debug_logging();
  if (log) cudaMemGetInfo(&free_before, &total);
  if (cudaDeviceSetLimit(cudaLimitStackSize, limit_) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  if (!log) return;
  cudaMemGetInfo(&free_after, &total);
  auto mib = [](double bytes) { return std::to_string(int64_t(bytes / (1 << 20))); };
  const double released = double(free_after) - double(free_before);
  const double kept = double(free_at_start_) - double(free_after);
  if (released >= (1 << 20) || kept >= (1 << 20))
    detail::log_debug(what_ + ": resetting the per-thread stack released " + mib(released) +
                      " MiB of local memory; the search kept " + mib(kept) + " MiB");
}

namespace {
std::atomic<uint64_t> graph_captures{0};
}  // namespace
uint64_t graph_captures_begun() { return graph_captures.load(); }
void note_graph_capture() { ++graph_captures; }

void DeviceWorkspace::reserve(size_t need) {
  if (need <= bytes) return;
  const size_t before = bytes;
  if (data && captures_at_allocation_ == graph_captures_begun()) {
    // In no recorded graph: once the kernels queued on it are done, nothing can reach it.
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
    cudaFree(data);
  } else if (data) {
    retired_.push_back(data);
    retired_bytes_ += bytes;
  }
  data = nullptr;
  bytes = 0;
  KILN_CUDA_CHECK(cudaMalloc(&data, need));
  bytes = need;
  captures_at_allocation_ = graph_captures_begun();
  if (detail::debug_logging())
    detail::log_debug("CUDA scratch grown from " + std::to_string(before >> 10) + " to " + std::to_string(need >> 10) +
                      " KiB (" + std::to_string(retired_bytes_ >> 10) + " KiB kept for recorded graphs)");
}

DeviceWorkspace::~DeviceWorkspace() {
  for (void* p : retired_) cudaFree(p);
  if (data) cudaFree(data);
}

bool Context::capturing() const {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &st) != cudaSuccess) return false;
  return st != cudaStreamCaptureStatusNone;
}

Context::~Context() {
  // Caches first: their descriptors belong to the handles below.
  matmul.reset();
  conv.reset();
  for (auto& [host, dev] : constants) cudaFree(dev);
  if (lt_handle) cublasLtDestroy(static_cast<cublasLtHandle_t>(lt_handle));
}

namespace {

// What a tactic choice depends on: the GPU and the libraries whose kernels were timed. A cached
// choice is only read back for the same signature. kTactics changes when the meaning of a cache
// key or choice changes, or when choices made before would now be made differently (2: candidates
// timed on the GPU alone, and the 1x2 and 1x1 depthwise tiles).
std::string device_signature(const cudaDeviceProp& prop) {
  constexpr int kTactics = 2;
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  std::ostringstream s;
  s << prop.name << " sm" << prop.major << prop.minor << " " << prop.multiProcessorCount << "SM "
    << (prop.totalGlobalMem >> 20) << "MiB cuda" << runtime << " driver" << driver << " cublasLt"
    << cublasLtGetVersion();
#ifdef KILN_HAS_CUDNN
  s << " cudnn" << cudnnGetVersion();
#endif
  s << " tactics" << kTactics;
  return s.str();
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(void* stream) {
    KILN_CUDA_CHECK(cudaGetDevice(&ctx_.device));
    cudaDeviceProp prop{};
    KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx_.device));
    ctx_.sm_count = prop.multiProcessorCount;
    ctx_.cc_major = prop.major;
    ctx_.cc_minor = prop.minor;
    ctx_.max_smem_optin = prop.sharedMemPerBlockOptin;
    ctx_.timing = &TimingCache::for_device(device_signature(prop));
    if (stream) {
      ctx_.stream = static_cast<cudaStream_t>(stream);
    } else {
      // The legacy default stream cannot be captured into a graph and serializes with every
      // other stream: without a caller's stream we keep our own.
      KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx_.stream, cudaStreamNonBlocking));
      own_stream_ = true;
    }
    // Keep freed device memory in the pool instead of returning it at every synchronize.
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, ctx_.device) == cudaSuccess) {
      uint64_t threshold = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
    }
    cublasLtHandle_t lt;
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) throw NetworkError("CUDA backend: cublasLtCreate failed");
    ctx_.lt_handle = lt;
  }

  ~CudaBackend() override {
    cudaStreamSynchronize(ctx_.stream);
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (own_stream_) cudaStreamDestroy(ctx_.stream);
  }

  DeviceKind kind() const override { return DeviceKind::kCUDA; }

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    KILN_CUDA_CHECK(cudaMallocAsync(&p, bytes, ctx_.stream));
    return p;
  }
  void deallocate(void* p) override {
    if (p) cudaFreeAsync(p, ctx_.stream);
  }

  void copy(void* dst, DeviceKind dst_kind, const void* src, DeviceKind src_kind, size_t bytes) override {
    if (bytes == 0) return;
    if (dst_kind == DeviceKind::kCPU && src_kind == DeviceKind::kCPU) {
      std::memcpy(dst, src, bytes);
      return;
    }
    KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, ctx_.stream));
    // Host memory involved: the caller reads it (or frees it) as soon as we return.
    if (dst_kind == DeviceKind::kCPU || src_kind == DeviceKind::kCPU) KILN_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }

  size_t workspace_bytes(const Layer& layer, const std::vector<TensorView>& inputs) override {
    if (auto* p = layer.as<ShuffleParams>()) return cuda::shuffle_workspace(*p, inputs);
    if (auto* p = layer.as<ReduceParams>()) return cuda::reduce_workspace(ctx_, *p, inputs);
    if (auto* p = layer.as<PoolingParams>()) return cuda::pooling_workspace(ctx_, *p, inputs);
    return 0;
  }

  void execute(LayerCall& call) override {
    const Layer& layer = call.layer;
    std::visit([&](const auto& p) { dispatch(p, call); }, layer.params());
  }

  void synchronize() override {
    KILN_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    ctx_.timing->flush();  // choices made by this run's first calls; nothing to do on later ones
  }
  void flush_timing_cache() override { ctx_.timing->flush(); }

  bool supports_capture() const override { return true; }
  void begin_capture() override {
    cuda::note_graph_capture();  // before capturing: the scratch buffers now in use may be recorded
    KILN_CUDA_CHECK(cudaStreamBeginCapture(ctx_.stream, cudaStreamCaptureModeThreadLocal));
  }
  void end_capture(const std::string& key) override {
    cudaGraph_t graph = nullptr;
    KILN_CUDA_CHECK(cudaStreamEndCapture(ctx_.stream, &graph));
    cudaGraphExec_t exec = nullptr;
    cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    KILN_CUDA_CHECK(err);
    auto it = graphs_.find(key);
    if (it != graphs_.end()) cudaGraphExecDestroy(it->second);
    graphs_[key] = exec;
  }
  bool replay(const std::string& key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return false;
    KILN_CUDA_CHECK(cudaGraphLaunch(it->second, ctx_.stream));
    return true;
  }
  void* native_stream() const override { return ctx_.stream; }
  void set_workspace_limit(size_t bytes) override { ctx_.workspace_limit = bytes; }
  size_t scratch_bytes() const override { return ctx_.scratch.bytes; }

 private:
  template <class P>
  void dispatch(const P& p, LayerCall& call) {
    using namespace cuda;
    if constexpr (std::is_same_v<P, ElementwiseParams> || std::is_same_v<P, UnaryParams> ||
                  std::is_same_v<P, ActivationParams> || std::is_same_v<P, CastParams> ||
                  std::is_same_v<P, SelectParams> || std::is_same_v<P, FusedPointwiseParams>) {
      run_pointwise(ctx_, call.layer, call);
    } else if constexpr (std::is_same_v<P, ConstantParams>) {
      run_constant(p, call);
    } else if constexpr (std::is_same_v<P, IdentityParams>) {
      run_copy(ctx_, call.outputs.at(0), call.inputs.at(0));
    } else if constexpr (std::is_same_v<P, MatMulParams>) {
      run_matmul(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, ConvolutionParams>) {
      run_convolution(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, PoolingParams>) {
      run_pooling(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, ReduceParams>) {
      run_reduce(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, SoftmaxParams>) {
      run_softmax(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, NormalizationParams>) {
      run_normalization(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, ShuffleParams>) {
      run_shuffle(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, ConcatParams>) {
      run_concat(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, SliceParams>) {
      run_slice(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, GatherParams>) {
      run_gather(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, ScatterParams>) {
      run_scatter(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, ShapeParams>) {
      run_shape(ctx_, call);
    } else if constexpr (std::is_same_v<P, FillParams>) {
      run_fill(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, PadParams>) {
      run_pad(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, ResizeParams>) {
      run_resize(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, CumSumParams>) {
      run_cumsum(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, TopKParams>) {
      run_topk(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, NonZeroParams>) {
      run_nonzero(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, AttentionParams>) {
      run_attention(ctx_, p, call);
    } else if constexpr (std::is_same_v<P, PluginParams>) {
      const PluginKernel* k = find_plugin(p.plugin);
      if (!k || !k->cuda) fail(call.layer, "plugin '" + p.plugin + "' has no CUDA kernel");
      for (size_t i = 0; i < call.outputs.size(); ++i)
        if (!call.outputs[i].data && !call.outputs[i].dims.empty())
          fail(call.layer, "plugin outputs must be allocated before the CUDA kernel runs");
      k->cuda(call.inputs, call.outputs, p.attributes, ctx_.stream);
    } else {
      static_assert(sizeof(P) == 0, "layer kind without a CUDA kernel");
    }
  }

  // Constants the runtime did not upload itself: copied to the device once, then per run a
  // device-to-device copy (capturable, unlike a copy from pageable host memory).
  void run_constant(const ConstantParams& p, LayerCall& call) {
    const TensorView& out = call.outputs.at(0);
    size_t bytes = p.weights.nbytes();
    if (bytes == 0) return;
    const void* host = p.weights.data.get();
    void*& dev = ctx_.constants[host];
    if (!dev) {
      if (ctx_.capturing()) cuda::fail(call.layer, "constant first seen during graph capture");
      KILN_CUDA_CHECK(cudaMalloc(&dev, bytes));
      KILN_CUDA_CHECK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    }
    KILN_CUDA_CHECK(cudaMemcpyAsync(out.data, dev, std::min(bytes, out.nbytes()), cudaMemcpyDeviceToDevice, ctx_.stream));
  }

  cuda::Context ctx_;
  bool own_stream_ = false;
  std::map<std::string, cudaGraphExec_t> graphs_;
};

}  // namespace
}  // namespace cuda

std::vector<std::string> cuda_libraries() {
  auto dotted = [](int v, int major_unit) {  // 13000 -> "13.0"; cuDNN's 91900 -> "9.19.0" (cuBLASLt counts alike)
    std::ostringstream s;
    if (major_unit == 1000) s << v / 1000 << '.' << v % 1000 / 10;
    else s << v / 10000 << '.' << v % 10000 / 100 << '.' << v % 100;
    return s.str();
  };
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  std::vector<std::string> out{"CUDA runtime " + dotted(runtime, 1000),
                               "cuBLASLt " + dotted(int(cublasLtGetVersion()), 10000)};
#ifdef KILN_HAS_CUDNN
  out.push_back("cuDNN " + dotted(int(cudnnGetVersion()), 10000));
#endif
  return out;
}

bool cuda_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

int current_cuda_arch() {
  int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return prop.major * 10 + prop.minor;
}

std::unique_ptr<Backend> make_cuda_backend(void* stream) {
  if (!cuda_available()) throw NetworkError("CUDA backend not available: no CUDA device is visible");
  return std::make_unique<cuda::CudaBackend>(stream);
}

}  // namespace kiln::engine
