// Convolution and transposed convolution (1d/2d/3d, groups, dilation) through cuDNN's legacy API:
// descriptors and the algorithm are chosen once per shape (cudnnFind* benchmarks the candidates on
// the first run of a shape, which is never inside a graph capture) and cached. Transposed
// convolution is cuDNN's backward-data of the forward convolution it inverts. Bias and activation
// follow as one fused pointwise pass. fp32 runs in true fp32 (FMA math, no TF32); fp16/bf16 use
// the tensor cores with fp32 accumulation. 1-d convolutions run as 2-d with a unit height.
// 1x1 convolutions in NHWC (channels-last builds) skip cuDNN: they are matmuls over rows of
// channels, and cuBLASLt fuses their bias and relu.
// Depthwise convolutions in NHWC have a kernel of kiln's (depthwise.cu): for each shape, the first
// run times it against cuDNN's best algorithm and keeps the faster (TensorRT's tactic selection).
// Its kernels (4x4 or 2x4 output tiles per thread and one output row per thread, for common
// filters; generic) are candidates of their own. KILN_CONV_TACTIC=kiln (the row kernel),
// =kiln-tiled, =kiln-tiled-short (2x4 tiles), =kiln-generic or =cudnn forces one (tests, and users
// comparing them).
#include "engine/cuda/internal.h"
#include "engine/network_internal.h"

#ifdef KILN_HAS_CUDNN
#include <cudnn.h>
#endif

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <unordered_map>

namespace kiln::engine::cuda {

#ifdef KILN_HAS_CUDNN

namespace {
void dnn_check(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) throw NetworkError(std::string("cuDNN: ") + what + ": " + cudnnGetErrorString(s));
}

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int algo = 0;
  size_t workspace = 0;
  bool kiln_depthwise = false;  // the tactic timed fastest: kiln's depthwise kernel, not cuDNN
  DepthwiseKernel kiln_kernel = DepthwiseKernel::kTiled;  // which of kiln's depthwise kernels (depthwise.cu)
  ~ConvPlan() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

cudnnDataType_t dnn_type(DataType t) {
  switch (t) {
    case DataType::kFloat16: return CUDNN_DATA_HALF;
    case DataType::kBFloat16: return CUDNN_DATA_BFLOAT16;
    default: return CUDNN_DATA_FLOAT;
  }
}

void set_tensor(cudnnTensorDescriptor_t d, cudnnDataType_t t, const std::vector<int>& dims) {
  std::vector<int> st(dims.size(), 1);
  for (size_t i = dims.size() - 1; i-- > 0;) st[i] = st[i + 1] * dims[i + 1];
  dnn_check(cudnnSetTensorNdDescriptor(d, t, int(dims.size()), dims.data(), st.data()), "tensor descriptor");
}

// A [N, H, W, C] tensor described to cuDNN as NCHW with channels-last strides.
void set_tensor_nhwc(cudnnTensorDescriptor_t d, cudnnDataType_t t, const std::vector<int64_t>& nhwc) {
  const int n = int(nhwc[0]), h = int(nhwc[1]), w = int(nhwc[2]), c = int(nhwc[3]);
  const int dims[4] = {n, c, h, w}, st[4] = {h * w * c, 1, w * c, c};
  dnn_check(cudnnSetTensorNdDescriptor(d, t, 4, dims, st), "tensor descriptor (channels last)");
}

std::vector<int> to_int(const std::vector<int64_t>& v, size_t min_rank) {
  std::vector<int> r(v.begin(), v.end());
  while (r.size() < min_rank) r.push_back(1);  // 1-d as 2-d: a trailing unit dim
  return r;
}
}  // namespace

struct ConvCache {
  cudnnHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::unordered_map<std::string, std::unique_ptr<ConvPlan>> plans;
  ~ConvCache() {
    plans.clear();
    if (workspace) cudaFree(workspace);
    if (handle) cudnnDestroy(handle);
  }
};

namespace {

enum class Tactic { kAuto, kKiln, kKilnTiled, kKilnTiledShort, kKilnGeneric, kCudnn };

Tactic tactic_override() {
  const char* v = std::getenv("KILN_CONV_TACTIC");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return Tactic::kAuto;
  if (std::strcmp(v, "kiln") == 0) return Tactic::kKiln;
  if (std::strcmp(v, "kiln-tiled") == 0) return Tactic::kKilnTiled;
  if (std::strcmp(v, "kiln-tiled-short") == 0) return Tactic::kKilnTiledShort;
  if (std::strcmp(v, "kiln-generic") == 0) return Tactic::kKilnGeneric;
  if (std::strcmp(v, "cudnn") == 0) return Tactic::kCudnn;
  throw NetworkError(std::string("KILN_CONV_TACTIC must be auto, kiln, kiln-tiled, kiln-tiled-short, kiln-generic or "
                                 "cudnn, not '") +
                     v + "'");
}

// Mean time of `launch` on the context's stream over a few runs, after warm-up runs (the first
// launch of a kernel also loads its module).
template <class F>
float time_ms(Context& ctx, F&& launch) {
  cudaEvent_t start, stop;
  KILN_CUDA_CHECK(cudaEventCreate(&start));
  KILN_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) launch();
  KILN_CUDA_CHECK(cudaEventRecord(start, ctx.stream));
  constexpr int kRuns = 10;
  for (int i = 0; i < kRuns; ++i) launch();
  KILN_CUDA_CHECK(cudaEventRecord(stop, ctx.stream));
  KILN_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / kRuns;
}

// `kiln_candidate`: kiln's depthwise kernel can run this convolution and competes with cuDNN.
ConvPlan& plan_for(Context& ctx, const Layer& layer, const ConvolutionParams& p, const TensorView& x,
                   const TensorView& w, const TensorView& y, bool kiln_candidate, Tactic tactic) {
  ConvCache& cc = *ctx.conv;
  std::ostringstream key;
  key << int(x.dtype) << (p.transposed ? 'T' : 'F') << p.groups << (p.channels_last ? "L" : "");
  for (auto* v : {&x.dims, &w.dims, &y.dims, &p.stride, &p.padding, &p.dilation}) {
    key << '|';
    for (int64_t d : *v) key << d << ',';
  }
  if (kiln_candidate) key << "|dw" << int(tactic);
  auto& slot = cc.plans[key.str()];
  if (slot) return *slot;

  auto cp = std::make_unique<ConvPlan>();
  if (ctx.capturing()) throw NetworkError("cuDNN: a new convolution shape appeared during graph capture");
  if (kiln_candidate && tactic != Tactic::kAuto) {  // forced: no cuDNN needed
    cp->kiln_depthwise = true;
    cp->kiln_kernel = tactic == Tactic::kKiln        ? DepthwiseKernel::kUnrolled
                      : tactic == Tactic::kKilnTiled ? DepthwiseKernel::kTiled
                      : tactic == Tactic::kKilnTiledShort ? DepthwiseKernel::kTiledShort
                                                     : DepthwiseKernel::kGeneric;
    slot = std::move(cp);
    return *slot;
  }
  const size_t ns = x.dims.size() - 2;
  const size_t nsp = std::max<size_t>(ns, 2);
  const cudnnDataType_t dt = dnn_type(x.dtype);
  dnn_check(cudnnCreateTensorDescriptor(&cp->x), "create");
  dnn_check(cudnnCreateTensorDescriptor(&cp->y), "create");
  dnn_check(cudnnCreateFilterDescriptor(&cp->w), "create");
  dnn_check(cudnnCreateConvolutionDescriptor(&cp->conv), "create");
  if (p.channels_last) {  // logical NCHW dims, NHWC strides; the filter in KRSC
    set_tensor_nhwc(cp->x, dt, x.dims);
    set_tensor_nhwc(cp->y, dt, y.dims);
    const int wd[4] = {int(w.dims[0]), int(w.dims[3]), int(w.dims[1]), int(w.dims[2])};
    dnn_check(cudnnSetFilterNdDescriptor(cp->w, dt, CUDNN_TENSOR_NHWC, 4, wd), "filter descriptor");
  } else {
    set_tensor(cp->x, dt, to_int(x.dims, nsp + 2));
    set_tensor(cp->y, dt, to_int(y.dims, nsp + 2));
    std::vector<int> wd = to_int(w.dims, nsp + 2);
    dnn_check(cudnnSetFilterNdDescriptor(cp->w, dt, CUDNN_TENSOR_NCHW, int(wd.size()), wd.data()), "filter descriptor");
  }
  std::vector<int> pad(nsp, 0), str(nsp, 1), dil(nsp, 1);
  for (size_t i = 0; i < ns; ++i) {
    if (i < p.padding.size()) pad[i] = int(p.padding[i]);
    if (i < p.stride.size()) str[i] = int(p.stride[i]);
    if (i < p.dilation.size()) dil[i] = int(p.dilation[i]);
  }
  dnn_check(cudnnSetConvolutionNdDescriptor(cp->conv, int(nsp), pad.data(), str.data(), dil.data(),
                                            CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
            "convolution descriptor");
  dnn_check(cudnnSetConvolutionGroupCount(cp->conv, int(p.groups)), "groups");
  dnn_check(cudnnSetConvolutionMathType(cp->conv, x.dtype == DataType::kFloat32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH),
            "math type");

  // Benchmark the candidates once, on scratch outputs sized like the real one.
  const size_t search_ws = size_t{256} << 20;
  void* ws = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&ws, search_ws));
  void* scratch_out = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&scratch_out, std::max<size_t>(y.nbytes(), 16)));
  // Find twice: the first pass also loads each candidate's kernels (CUDA loads modules lazily),
  // which made slow CUDA-core algorithms win against tensor-core ones that were timed cold.
  int returned = 0;
  cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  float ms = 0;
  auto pick = [&](const auto* perf) {
    for (int i = 0; i < returned; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS) {
        cp->algo = int(perf[i].algo);
        cp->workspace = perf[i].memory;
        math = perf[i].mathType;
        ms = perf[i].time;
        return;
      }
    st = CUDNN_STATUS_NOT_SUPPORTED;
  };
  bool picked = false;
  for (int round = 0; round < 2 && st == CUDNN_STATUS_SUCCESS; ++round) {
    if (!p.transposed) {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      st = cudnnFindConvolutionForwardAlgorithmEx(cc.handle, cp->x, x.data, cp->w, w.data, cp->conv, cp->y, scratch_out,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf, ws, search_ws);
      if (st == CUDNN_STATUS_SUCCESS) pick(perf);
    } else {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      st = cudnnFindConvolutionBackwardDataAlgorithmEx(cc.handle, cp->w, w.data, cp->x, x.data, cp->conv, cp->y,
                                                       scratch_out, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned,
                                                       perf, ws, search_ws);
      if (st == CUDNN_STATUS_SUCCESS) pick(perf);
    }
    if (st == CUDNN_STATUS_SUCCESS) picked = true;
    else if (picked) st = CUDNN_STATUS_SUCCESS;  // the second search failed: keep the first one's choice
  }
  cudaFree(ws);
  if (kiln_candidate) {
    // cuDNN's time covers the convolution alone; kiln's kernel is timed the same way (no epilogue).
    const TensorView out{scratch_out, y.dtype, y.dims, {}, DeviceKind::kCUDA};
    auto timed = [&](DepthwiseKernel k) {
      return time_ms(ctx, [&] { run_depthwise(ctx, layer, p, x, w, nullptr, nullptr, out, k); });
    };
    float kiln_ms = timed(DepthwiseKernel::kGeneric);
    cp->kiln_kernel = DepthwiseKernel::kGeneric;
    std::vector<DepthwiseKernel> others;
    if (depthwise_unrolled(p, w)) others.push_back(DepthwiseKernel::kUnrolled);
    if (depthwise_tiled(p, x, w)) others.insert(others.end(), {DepthwiseKernel::kTiled, DepthwiseKernel::kTiledShort});
    for (DepthwiseKernel k : others)
      if (const float t = timed(k); t < kiln_ms) kiln_ms = t, cp->kiln_kernel = k;
    cp->kiln_depthwise = st != CUDNN_STATUS_SUCCESS || kiln_ms < ms;
    if (detail::debug_logging())
      detail::log_debug("convolution " + layer.name() + ": kiln depthwise (" +
                        (cp->kiln_kernel == DepthwiseKernel::kTiled        ? "tiled 4x4"
                         : cp->kiln_kernel == DepthwiseKernel::kTiledShort ? "tiled 2x4"
                         : cp->kiln_kernel == DepthwiseKernel::kUnrolled   ? "unrolled"
                                                                           : "generic") +
                        ") " + std::to_string(kiln_ms) + " ms, cuDNN " +
                        (st == CUDNN_STATUS_SUCCESS ? std::to_string(ms) + " ms" : std::string("none")) + " -> " +
                        (cp->kiln_depthwise ? "kiln" : "cuDNN"));
  }
  cudaFree(scratch_out);
  if (cp->kiln_depthwise) {
    slot = std::move(cp);
    return *slot;
  }
  dnn_check(st, "no algorithm for this convolution");
  // The algorithm was timed with this math type (it may differ from the one asked for).
  dnn_check(cudnnSetConvolutionMathType(cp->conv, math), "math type");
  if (detail::debug_logging())
    detail::log_debug("cuDNN convolution " + key.str() + ": algo " + std::to_string(cp->algo) + ", math " +
                      std::to_string(int(math)) + ", " + std::to_string(ms) + " ms, workspace " +
                      std::to_string(cp->workspace));
  if (cp->workspace > cc.workspace_bytes) {
    if (cc.workspace) KILN_CUDA_CHECK(cudaFree(cc.workspace));
    KILN_CUDA_CHECK(cudaMalloc(&cc.workspace, cp->workspace));
    cc.workspace_bytes = cp->workspace;
  }
  slot = std::move(cp);
  return *slot;
}

// A 2-d 1x1 convolution in NHWC with unit strides, no padding, one group (weights KRSC [K,1,1,C]).
bool is_pointwise_nhwc(const ConvolutionParams& p, const TensorView& w) {
  if (!p.channels_last || p.transposed || p.groups != 1 || w.dims.size() != 4 || w.dims[1] != 1 || w.dims[2] != 1)
    return false;
  auto all = [](const std::vector<int64_t>& v, int64_t x) {
    for (int64_t e : v)
      if (e != x) return false;
    return true;
  };
  return all(p.stride, 1) && all(p.padding, 0);
}

}  // namespace

void run_convolution(Context& ctx, const ConvolutionParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& w = call.inputs.at(1);
  const TensorView& y = call.outputs.at(0);
  if (y.numel() == 0) return;
  if (!is_floating(x.dtype) || w.dtype != x.dtype) fail(call.layer, "convolution needs float input and weight of one dtype");
  const size_t ns = x.dims.size() - 2;
  if (ns < 1 || ns > 3) fail(call.layer, "convolution needs 1 to 3 spatial dims");
  if (!ctx.conv) {
    auto cc = std::make_shared<ConvCache>();
    dnn_check(cudnnCreate(&cc->handle), "cudnnCreate");
    ctx.conv = cc;
  }
  dnn_check(cudnnSetStream(ctx.conv->handle, ctx.stream), "set stream");
  const TensorView* bias = p.has_bias ? &call.inputs.at(2) : nullptr;
  const TensorView* residual = residual_of(call, p.has_residual, y);
  if (is_pointwise_nhwc(p, w) && x.numel() > 0) {
    // A 1x1 convolution in NHWC is a matmul over rows of channels: cuBLASLt, bias, residual and relu fused.
    const int64_t rows = x.dims[0] * x.dims[1] * x.dims[2], channels = x.dims[3], filters = w.dims[0];
    run_linear_rows(ctx, rows, filters, channels, x, w, bias, p.activation, y, residual);
    return;
  }
  const Tactic tactic = tactic_override();
  const bool kiln_candidate = x.numel() > 0 && tactic != Tactic::kCudnn && depthwise_supported(p, x, w, y);
  if (tactic != Tactic::kAuto && tactic != Tactic::kCudnn && !kiln_candidate && !is_pointwise_nhwc(p, w))
    fail(call.layer, "KILN_CONV_TACTIC=kiln: kiln has no kernel of its own for this convolution");
  if (x.numel() == 0) {
    KILN_CUDA_CHECK(cudaMemsetAsync(y.data, 0, y.nbytes(), ctx.stream));
  } else {
    ConvPlan& cp = plan_for(ctx, call.layer, p, x, w, y, kiln_candidate, tactic);
    if (cp.kiln_depthwise) {  // bias, residual and activation fused in its store
      run_depthwise(ctx, call.layer, p, x, w, bias, residual, y, cp.kiln_kernel);
      return;
    }
    const float alpha = 1.f, beta = 0.f;
    if (!p.transposed) {
      dnn_check(cudnnConvolutionForward(ctx.conv->handle, &alpha, cp.x, x.data, cp.w, w.data, cp.conv,
                                        cudnnConvolutionFwdAlgo_t(cp.algo), ctx.conv->workspace, cp.workspace, &beta,
                                        cp.y, y.data),
                "convolution forward");
    } else {
      dnn_check(cudnnConvolutionBackwardData(ctx.conv->handle, &alpha, cp.w, w.data, cp.x, x.data, cp.conv,
                                             cudnnConvolutionBwdDataAlgo_t(cp.algo), ctx.conv->workspace, cp.workspace,
                                             &beta, cp.y, y.data),
                "transposed convolution");
    }
  }
  if (bias || residual || p.activation) {
    TensorView channel_bias;
    if (bias) {
      channel_bias = *bias;
      std::vector<int64_t> bd(y.dims.size(), 1);
      const size_t channel_axis = p.channels_last ? y.dims.size() - 1 : 1;
      bd[channel_axis] = y.dims[channel_axis];
      channel_bias.dims = bd;  // [1, C, 1, ...] (or [1, 1, 1, C]): broadcast over batch and space
      channel_bias.strides.clear();
    }
    apply_epilogue(ctx, y, bias ? &channel_bias : nullptr, p.activation, residual);
  }
}

#else  // no cuDNN at build time

struct ConvCache {};

void run_convolution(Context& ctx, const ConvolutionParams& p, LayerCall& call) {
  fail(call.layer, "kiln was built without cuDNN; the CUDA convolution needs it");
}

#endif

}  // namespace kiln::engine::cuda
