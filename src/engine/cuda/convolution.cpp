// Convolution and transposed convolution (1d/2d/3d, groups, dilation) on cuDNN and kiln's own
// kernels. For each shape (and epilogue) the first run, never inside a graph capture, times the
// candidates and keeps the fastest (TensorRT's tactic selection):
// - cuDNN's legacy algorithms (cudnnFind*), followed by one fused pointwise pass for the bias,
//   residual and activation; transposed convolution is backward-data of the convolution it inverts;
// - for fp16/bf16 forward convolutions, the engines cuDNN's graph API ranks (cudnn_graph.h), for
//   the convolution alone and for the convolution fused with its bias, residual and activation;
// - in NHWC, kiln's depthwise kernels (depthwise.cpp: 4x4 to 1x1 output tiles per thread, one output
//   row per thread, generic), epilogue fused in their store.
// fp32 runs in true fp32 (FMA math, no TF32); fp16/bf16 use the tensor cores with fp32
// accumulation. 1-d convolutions run as 2-d with a unit height. 1x1 convolutions in NHWC
// (channels-last builds) skip all this: they are matmuls over rows of channels, and cuBLASLt fuses
// their bias, residual and relu. KILN_CONV_TACTIC=kiln (the row kernel), =kiln-tiled,
// =kiln-tiled-short (2x4 tiles), =kiln-tiled-pair (1x2), =kiln-tiled-pixel (1x1), =kiln-generic, =cudnn (legacy), =cudnn-graph or =cudnn-graph-fused
// (the fused graph wherever the epilogue can fuse) forces one (tests, and users comparing them);
// KILN_LOG=debug prints every candidate's time.
#include "engine/cuda/internal.h"
#include "engine/memory_planner.h"
#include "engine/network_internal.h"

#ifdef KILN_HAS_CUDNN
#include <cudnn.h>

#include "engine/cuda/cudnn_graph.h"
#endif

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <unordered_map>

namespace kiln::engine::cuda {

#ifdef KILN_HAS_CUDNN

namespace {
void dnn_check(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) throw NetworkError(std::string("cuDNN: ") + what + ": " + cudnnGetErrorString(s));
}

struct ConvPlan {
  // How this convolution runs, chosen by timing (plan_for).
  enum class Choice { kLegacy, kGraph, kGraphFused, kKiln } choice = Choice::kLegacy;
  // kLegacy: cudnnConvolutionForward / BackwardData with these descriptors and algorithm.
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int algo = 0;
  size_t workspace = 0;
  // kGraph (the convolution alone) or kGraphFused (with bias, residual and activation).
  std::unique_ptr<dnn::ConvGraph> graph;
  dnn::ConvGraphPlan graph_plan;
  // kKiln: which of kiln's depthwise kernels (depthwise.cpp), bias, residual and activation fused.
  DepthwiseKernel kiln_kernel = DepthwiseKernel::kTiled;
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
  std::unordered_map<std::string, std::unique_ptr<ConvPlan>> plans;
  ~ConvCache() {
    plans.clear();
    if (handle) cudnnDestroy(handle);
  }
};

namespace {

enum class Tactic {
  kAuto,
  kKiln,
  kKilnTiled,
  kKilnTiledShort,
  kKilnTiledPair,
  kKilnTiledPixel,
  kKilnGeneric,
  kCudnn,
  kCudnnGraph,
  kCudnnGraphFused
};

Tactic tactic_override() {  // the names in Tactic's order
  return Tactic(detail::env_choice("KILN_CONV_TACTIC",
                                   {"auto", "kiln", "kiln-tiled", "kiln-tiled-short", "kiln-tiled-pair",
                                    "kiln-tiled-pixel", "kiln-generic", "cudnn", "cudnn-graph", "cudnn-graph-fused"}));
}

// cuDNN's legacy call for a plan (forward, or backward-data for a transposed convolution) into `y`.
void run_legacy(ConvCache& cc, const ConvPlan& cp, const ConvolutionParams& p, const TensorView& x,
                const TensorView& w, void* y, void* workspace) {
  const float alpha = 1.f, beta = 0.f;
  if (!p.transposed) {
    dnn_check(cudnnConvolutionForward(cc.handle, &alpha, cp.x, x.data, cp.w, w.data, cp.conv,
                                      cudnnConvolutionFwdAlgo_t(cp.algo), workspace, cp.workspace, &beta, cp.y, y),
              "convolution forward");
  } else {
    dnn_check(cudnnConvolutionBackwardData(cc.handle, &alpha, cp.w, w.data, cp.x, x.data, cp.conv,
                                           cudnnConvolutionBwdDataAlgo_t(cp.algo), workspace, cp.workspace, &beta,
                                           cp.y, y),
              "transposed convolution");
  }
}

const char* depthwise_name(DepthwiseKernel k) {
  switch (k) {
    case DepthwiseKernel::kTiled: return "tiled 4x4";
    case DepthwiseKernel::kTiledShort: return "tiled 2x4";
    case DepthwiseKernel::kTiledPair: return "tiled 1x2";
    case DepthwiseKernel::kTiledPixel: return "tiled 1x1";
    case DepthwiseKernel::kUnrolled: return "unrolled";
    default: return "generic";
  }
}

// The convolution's bias as a tensor broadcast over batch and space: [1, C, 1, ...] (or [1, 1, 1, C]).
TensorView channel_bias(const ConvolutionParams& p, const TensorView& y, const TensorView& bias) {
  TensorView b = bias;
  std::vector<int64_t> bd(y.dims.size(), 1);
  const size_t channel_axis = p.channels_last ? y.dims.size() - 1 : 1;
  bd[channel_axis] = y.dims[channel_axis];
  b.dims = bd;
  b.strides.clear();
  return b;
}

// The convolution as the graph API sees it: logical (N, C, spatial) dims with the layout's strides.
dnn::ConvGraphSpec graph_spec(const ConvolutionParams& p, const TensorView& x, const TensorView& w,
                              const TensorView& y, const TensorView* bias, const TensorView* residual,
                              bool with_epilogue) {
  auto describe = [&](const std::vector<int64_t>& d) {
    dnn::GraphTensor t;
    if (p.channels_last) {  // stored [N, H, W, C] (filters [K, R, S, C/g])
      t.dims = {d[0], d[3], d[1], d[2]};
      t.strides = {d[1] * d[2] * d[3], 1, d[2] * d[3], d[3]};
    } else {
      t.dims = d;
      while (t.dims.size() < 4) t.dims.push_back(1);  // 1-d as 2-d, as the legacy path
      t.strides.assign(t.dims.size(), 1);
      for (size_t i = t.dims.size() - 1; i-- > 0;) t.strides[i] = t.strides[i + 1] * t.dims[i + 1];
    }
    return t;
  };
  dnn::ConvGraphSpec s;
  s.io_type = x.dtype == DataType::kBFloat16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  s.x = describe(x.dims);
  s.w = describe(w.dims);
  s.y = describe(y.dims);
  const size_t nsp = s.x.dims.size() - 2;
  s.padding.assign(nsp, 0), s.stride.assign(nsp, 1), s.dilation.assign(nsp, 1);
  for (size_t i = 0; i < nsp; ++i) {
    if (i < p.padding.size()) s.padding[i] = p.padding[i];
    if (i < p.stride.size()) s.stride[i] = p.stride[i];
    if (i < p.dilation.size()) s.dilation[i] = p.dilation[i];
  }
  if (with_epilogue) {
    s.bias = bias != nullptr;
    s.residual = residual != nullptr;
    s.activation = p.activation;
  }
  s.alignment = dnn::common_alignment({x.data, w.data, y.data, with_epilogue && bias ? bias->data : nullptr,
                                  with_epilogue && residual ? residual->data : nullptr});
  return s;
}

// The legacy API's descriptors for a convolution (its math type the default for the dtype; the
// chosen algorithm's may differ).
void describe_legacy(ConvPlan& cp, const ConvolutionParams& p, const TensorView& x, const TensorView& w,
                     const TensorView& y) {
  const size_t ns = x.dims.size() - 2;
  const size_t nsp = std::max<size_t>(ns, 2);
  const cudnnDataType_t dt = dnn_type(x.dtype);
  dnn_check(cudnnCreateTensorDescriptor(&cp.x), "create");
  dnn_check(cudnnCreateTensorDescriptor(&cp.y), "create");
  dnn_check(cudnnCreateFilterDescriptor(&cp.w), "create");
  dnn_check(cudnnCreateConvolutionDescriptor(&cp.conv), "create");
  if (p.channels_last) {  // logical NCHW dims, NHWC strides; the filter in KRSC
    set_tensor_nhwc(cp.x, dt, x.dims);
    set_tensor_nhwc(cp.y, dt, y.dims);
    const int wd[4] = {int(w.dims[0]), int(w.dims[3]), int(w.dims[1]), int(w.dims[2])};
    dnn_check(cudnnSetFilterNdDescriptor(cp.w, dt, CUDNN_TENSOR_NHWC, 4, wd), "filter descriptor");
  } else {
    set_tensor(cp.x, dt, to_int(x.dims, nsp + 2));
    set_tensor(cp.y, dt, to_int(y.dims, nsp + 2));
    std::vector<int> wd = to_int(w.dims, nsp + 2);
    dnn_check(cudnnSetFilterNdDescriptor(cp.w, dt, CUDNN_TENSOR_NCHW, int(wd.size()), wd.data()),
              "filter descriptor");
  }
  std::vector<int> pad(nsp, 0), str(nsp, 1), dil(nsp, 1);
  for (size_t i = 0; i < ns; ++i) {
    if (i < p.padding.size()) pad[i] = int(p.padding[i]);
    if (i < p.stride.size()) str[i] = int(p.stride[i]);
    if (i < p.dilation.size()) dil[i] = int(p.dilation[i]);
  }
  dnn_check(cudnnSetConvolutionNdDescriptor(cp.conv, int(nsp), pad.data(), str.data(), dil.data(),
                                            CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
            "convolution descriptor");
  dnn_check(cudnnSetConvolutionGroupCount(cp.conv, int(p.groups)), "groups");
  dnn_check(cudnnSetConvolutionMathType(cp.conv,
                                        x.dtype == DataType::kFloat32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH),
            "math type");
}

// The workspace a chosen plan runs with, grown in the backend's scratch buffer when needed.
void reserve_workspace(Context& ctx, const ConvPlan& cp) {
  const size_t need = cp.choice == ConvPlan::Choice::kLegacy ? cp.workspace
                      : cp.choice == ConvPlan::Choice::kKiln ? 0
                                                             : size_t(cp.graph_plan.workspace);
  ctx.scratch.reserve(need);
}

// A choice as the timing cache keeps it; null when it cannot be rebuilt in another process (a
// graph plan cuDNN cannot serialize).
nlohmann::json choice_record(const ConvPlan& cp, float ms) {
  nlohmann::json j{{"ms", ms}};
  switch (cp.choice) {
    case ConvPlan::Choice::kLegacy: {
      cudnnMathType_t math = CUDNN_DEFAULT_MATH;
      cudnnGetConvolutionMathType(cp.conv, &math);
      j["choice"] = "legacy", j["algo"] = cp.algo, j["math"] = int(math), j["workspace"] = cp.workspace;
      break;
    }
    case ConvPlan::Choice::kKiln:
      j["choice"] = "kiln", j["kernel"] = int(cp.kiln_kernel);
      break;
    case ConvPlan::Choice::kGraph: case ConvPlan::Choice::kGraphFused: {
      const std::string plan = dnn::plan_to_json(cp.graph_plan);
      if (plan.empty()) return nullptr;
      j["choice"] = cp.choice == ConvPlan::Choice::kGraph ? "graph" : "graph-fused";
      j["engine"] = cp.graph_plan.engine, j["plan"] = plan;
      break;
    }
  }
  return j;
}

// Rebuilds a plan from the timing cache's record, without timing; false (and `cp` half made)
// when the record does not apply: the caller times the candidates as if it were absent.
bool restore_choice(ConvCache& cc, ConvPlan& cp, const nlohmann::json& r, const ConvolutionParams& p,
                    const TensorView& x, const TensorView& w, const TensorView& y, const TensorView* bias,
                    const TensorView* residual, bool kiln_candidate) {
  try {
    const std::string choice = r.at("choice").get<std::string>();
    if (choice == "kiln") {
      const int k = r.at("kernel").get<int>();
      if (!kiln_candidate || k < 0 || k > int(kLastDepthwiseKernel)) return false;
      cp.choice = ConvPlan::Choice::kKiln, cp.kiln_kernel = DepthwiseKernel(k);
      return true;
    }
    if (choice == "legacy") {
      describe_legacy(cp, p, x, w, y);
      if (cudnnSetConvolutionMathType(cp.conv, cudnnMathType_t(r.at("math").get<int>())) != CUDNN_STATUS_SUCCESS)
        return false;
      cp.choice = ConvPlan::Choice::kLegacy;
      cp.algo = r.at("algo").get<int>();
      cp.workspace = r.at("workspace").get<size_t>();
      return true;
    }
    const bool fused = choice == "graph-fused";
    if (!fused && choice != "graph") return false;
    auto graph = dnn::ConvGraph::build(cc.handle, graph_spec(p, x, w, y, bias, residual, fused));
    if (!graph) return false;
    auto plan = dnn::plan_from_json(cc.handle, r.at("plan").get<std::string>(), r.at("engine").get<int64_t>());
    if (!plan) return false;
    cp.choice = fused ? ConvPlan::Choice::kGraphFused : ConvPlan::Choice::kGraph;
    cp.graph = std::move(graph), cp.graph_plan = std::move(*plan);
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;  // a record of another shape of format: time again
  }
}

// Picks, once per shape and epilogue, the fastest way to run a convolution on this GPU: cuDNN's
// legacy algorithms (cudnnFind), the engines cuDNN's graph API ranks for the convolution alone and
// for the convolution fused with its bias, residual and activation, and (`kiln_candidate`) kiln's
// depthwise kernels. Candidates without a fused epilogue are charged the epilogue pass they need.
ConvPlan& plan_for(Context& ctx, const Layer& layer, const ConvolutionParams& p, const TensorView& x,
                   const TensorView& w, const TensorView& y, const TensorView* bias, const TensorView* residual,
                   bool kiln_candidate, Tactic tactic) {
  ConvCache& cc = *ctx.conv;
  std::ostringstream key;
  key << int(x.dtype) << (p.transposed ? 'T' : 'F') << p.groups << (p.channels_last ? "L" : "");
  for (auto* v : {&x.dims, &w.dims, &y.dims, &p.stride, &p.padding, &p.dilation}) {
    key << '|';
    for (int64_t d : *v) key << d << ',';
  }
  key << "|e" << bool(bias) << bool(residual);
  if (p.activation) key << int(p.activation->op) << ',' << p.activation->alpha << ',' << p.activation->beta;
  key << "|a" << dnn::common_alignment({x.data, w.data, y.data, bias ? bias->data : nullptr,
                                   residual ? residual->data : nullptr});
  if (kiln_candidate) key << "|dw";
  key << "|t" << int(tactic);
  // The search's workspace, lowered by the plan's workspace_limit (a key of its own when it binds).
  const size_t search_ws = std::min(size_t{256} << 20, ctx.workspace_limit);
  if (search_ws < (size_t{256} << 20)) key << "|w" << search_ws;
  auto& slot = cc.plans[key.str()];
  if (slot) return *slot;

  auto cp = std::make_unique<ConvPlan>();
  if (ctx.capturing()) throw NetworkError("cuDNN: a new convolution shape appeared during graph capture");
  if (kiln_candidate && tactic != Tactic::kAuto) {  // forced: no cuDNN needed
    cp->choice = ConvPlan::Choice::kKiln;
    cp->kiln_kernel = tactic == Tactic::kKiln        ? DepthwiseKernel::kUnrolled
                      : tactic == Tactic::kKilnTiled ? DepthwiseKernel::kTiled
                      : tactic == Tactic::kKilnTiledShort ? DepthwiseKernel::kTiledShort
                      : tactic == Tactic::kKilnTiledPair  ? DepthwiseKernel::kTiledPair
                      : tactic == Tactic::kKilnTiledPixel ? DepthwiseKernel::kTiledPixel
                                                     : DepthwiseKernel::kGeneric;
    slot = std::move(cp);
    return *slot;
  }
  const auto started = std::chrono::steady_clock::now();
  auto seconds_since = [](auto t) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(); };
  // KILN_LOG=debug: the device memory each stage of the choice leaves taken (the search's own
  // buffers are freed by the end, so what remains was kept by a library: cuDNN's compiled engines).
  const bool memory_log = detail::debug_logging();
  auto free_mib = [] {
    size_t free = 0, total = 0;
    return cudaMemGetInfo(&free, &total) == cudaSuccess ? double(free) / (1 << 20) : 0.0;
  };
  const double free_at_start = memory_log ? free_mib() : 0.0;
  std::ostringstream memory_stages;  // "legacy 12.0 graph 1380.5 ..." MiB taken since the start
  auto note_memory = [&](const char* stage) {
    if (memory_log) memory_stages << " " << stage << " " << (free_at_start - free_mib());
  };
  // KILN_LOG=debug: what one candidate left taken, after its timing (" [+444 MiB]"), to find the
  // engines that keep memory.
  double free_before_candidate = 0;
  auto candidate_starts = [&] {
    if (memory_log) free_before_candidate = free_mib();
  };
  auto candidate_memory = [&]() -> std::string {
    if (!memory_log) return {};
    const double taken = free_before_candidate - free_mib();
    return taken >= 1 ? " [+" + std::to_string(int(taken)) + " MiB]" : std::string();
  };
  // A choice timed before, by this process or an earlier one (only automatic choices are kept).
  const std::string cache_key = "conv " + key.str();
  if (tactic == Tactic::kAuto) {
    if (auto record = ctx.timing->find(cache_key)) {
      if (restore_choice(cc, *cp, *record, p, x, w, y, bias, residual, kiln_candidate)) {
        if (detail::debug_logging())
          detail::log_debug("convolution " + layer.name() + " [" + key.str() + "]: " + record->value("choice", "") +
                            " from the timing cache (" + std::to_string(seconds_since(started)) + " s)");
        reserve_workspace(ctx, *cp);
        slot = std::move(cp);
        return *slot;
      }
      detail::log_debug("convolution " + layer.name() + ": the timing cache's choice does not apply; timing again");
      cp = std::make_unique<ConvPlan>();
    }
  }
  const bool has_epilogue = bias || residual || p.activation;
  const StackReservationScope stack_scope("convolution " + layer.name());
  void* ws = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&ws, std::max<size_t>(search_ws, 256)));
  void* scratch_out = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&scratch_out, std::max<size_t>(y.nbytes(), 16)));
  const TensorView out{scratch_out, y.dtype, y.dims, {}, DeviceKind::kCUDA};
  const TensorView cb = bias ? channel_bias(p, y, *bias) : TensorView{};
  // The separate epilogue pass an unfused candidate needs, timed once.
  float epilogue_ms = 0;
  if (has_epilogue)
    epilogue_ms = time_launches_ms(ctx, [&] { apply_epilogue(ctx, out, bias ? &cb : nullptr, p.activation, residual); });
  void* reference = nullptr;  // the legacy algorithm's output with its epilogue (auto tactic)
  float best_ms = std::numeric_limits<float>::infinity();
  std::string best_name = "none";
  std::ostringstream timings;  // every candidate's time, for KILN_LOG=debug

  if (tactic == Tactic::kAuto || tactic == Tactic::kCudnn) {
    describe_legacy(*cp, p, x, w, y);
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
    // Where the graph API competes (fp16/bf16 forward), its engines beat every legacy algorithm on
    // Hopper; the legacy path then only needs its heuristic's first choice, timed once, as a
    // candidate and as the reference result, not a search that runs every algorithm twice.
    const bool graph_competes = tactic == Tactic::kAuto && !p.transposed && x.dtype != DataType::kFloat32;
    if (graph_competes) {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      st = cudnnGetConvolutionForwardAlgorithm_v7(cc.handle, cp->x, cp->w, cp->conv, cp->y,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf);
      if (st == CUDNN_STATUS_SUCCESS) {
        int kept = 0;  // within the search workspace
        for (int i = 0; i < returned; ++i)
          if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= search_ws) perf[kept++] = perf[i];
        returned = kept;
        pick(perf);
      }
      if (st == CUDNN_STATUS_SUCCESS) {
        try {
          dnn_check(cudnnSetConvolutionMathType(cp->conv, math), "math type");
          ms = time_launches_ms(ctx, [&] { run_legacy(cc, *cp, p, x, w, scratch_out, ws); });
        } catch (const NetworkError&) {
          st = CUDNN_STATUS_NOT_SUPPORTED;  // the graph engines and kiln's kernels remain
        }
      }
    }
    for (int round = 0; round < 2 && st == CUDNN_STATUS_SUCCESS && !graph_competes; ++round) {
      if (!p.transposed) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        st = cudnnFindConvolutionForwardAlgorithmEx(cc.handle, cp->x, x.data, cp->w, w.data, cp->conv, cp->y,
                                                    scratch_out, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf, ws,
                                                    search_ws);
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
    if (st == CUDNN_STATUS_SUCCESS) {
      // The algorithm was timed with this math type (it may differ from the one asked for).
      dnn_check(cudnnSetConvolutionMathType(cp->conv, math), "math type");
      const float total = ms + epilogue_ms;
      timings << " legacy algo " << cp->algo << " " << total;
      if (total < best_ms) best_ms = total, best_name = "legacy algo " + std::to_string(cp->algo),
                           cp->choice = ConvPlan::Choice::kLegacy;
      if (tactic == Tactic::kAuto && !p.transposed) {  // the reference the other candidates must match
        KILN_CUDA_CHECK(cudaMalloc(&reference, std::max<size_t>(y.nbytes(), 16)));
        run_legacy(cc, *cp, p, x, w, reference, ws);
        if (has_epilogue) {
          const TensorView ref{reference, y.dtype, y.dims, {}, DeviceKind::kCUDA};
          apply_epilogue(ctx, ref, bias ? &cb : nullptr, p.activation, residual);
        }
      }
    }
  }
  note_memory("legacy");
  // Whether a candidate's output (in scratch_out, `with_epilogue` when it fused the epilogue)
  // matches the reference: an engine or kernel that computes the wrong thing fast must not win.
  // The bound is loose (a few ulps of the largest output element): it separates a different
  // order of summation from a wrong result.
  auto agrees = [&](bool with_epilogue, const char* what) {
    if (!reference) return true;
    if (has_epilogue && !with_epilogue) apply_epilogue(ctx, out, bias ? &cb : nullptr, p.activation, residual);
    const float d = relative_difference(ctx, scratch_out, reference, y.dtype, y.numel());
    const float bound = y.dtype == DataType::kBFloat16 ? 6e-2f : 2e-2f;
    if (d <= bound) return true;
    timings << " (" << what << " rejected: differs from the legacy result by " << d << " of the largest element)";
    return false;
  };

  // The graph API, for reduced-precision forward convolutions (fp32 stays on the legacy path's
  // true-fp32 FMA math): the convolution alone, and fused with its epilogue.
  const bool graph_tactic = tactic == Tactic::kCudnnGraph || tactic == Tactic::kCudnnGraphFused;
  if ((tactic == Tactic::kAuto || graph_tactic) && !p.transposed && x.dtype != DataType::kFloat32) {
    constexpr size_t kPlansPerGraph = 4;
    const bool can_fuse = has_epilogue && !(p.activation && !dnn::fusable_activation(*p.activation));
    for (const bool fused : {true, false}) {
      if (fused && !can_fuse) continue;
      if (!fused && can_fuse && tactic == Tactic::kCudnnGraphFused) continue;
      candidate_starts();
      auto graph = dnn::ConvGraph::build(cc.handle, graph_spec(p, x, w, y, bias, residual, fused));
      if (!graph) {
        timings << (fused ? " graph+epilogue rejected" : " graph rejected");
        continue;
      }
      std::vector<dnn::ConvGraphPlan> plans = graph->plans(cc.handle, kPlansPerGraph);
      if (std::string m = candidate_memory(); !m.empty()) timings << " (plans" << m << ")";
      int winner = -1;
      for (size_t i = 0; i < plans.size(); ++i) {
        const dnn::ConvGraphPlan& plan = plans[i];
        if (size_t(plan.workspace) > search_ws) continue;
        auto launch = [&] {
          graph->execute(cc.handle, plan, x.data, w.data, scratch_out, bias ? bias->data : nullptr,
                         residual ? residual->data : nullptr, ws);
        };
        float t = 0;
        candidate_starts();
        try {
          launch();
          if (!agrees(fused, plan.name().c_str())) continue;
          t = time_launches_ms(ctx, launch, 1.5f * best_ms);
        } catch (const NetworkError&) {
          continue;  // finalized but failed to run: not a candidate
        }
        if (!fused) t += epilogue_ms;
        timings << (fused ? " graph+epilogue " : " graph ") << plan.name() << " " << t << candidate_memory();
        if (t < best_ms) {
          best_ms = t, winner = int(i);
          best_name = std::string(fused ? "graph+epilogue " : "graph ") + plan.name();
          cp->choice = fused ? ConvPlan::Choice::kGraphFused : ConvPlan::Choice::kGraph;
        }
      }
      if (winner >= 0) cp->graph = std::move(graph), cp->graph_plan = std::move(plans[size_t(winner)]);
    }
  }
  note_memory("graph");
  cudaFree(ws);

  if (kiln_candidate) {
    // kiln's kernels fuse the epilogue in their store: timed with it.
    std::vector<DepthwiseKernel> kernels{DepthwiseKernel::kGeneric};
    if (depthwise_unrolled(p, w)) kernels.push_back(DepthwiseKernel::kUnrolled);
    if (depthwise_tiled(p, x, w))
      kernels.insert(kernels.end(), {DepthwiseKernel::kTiled, DepthwiseKernel::kTiledShort, DepthwiseKernel::kTiledPair,
                                     DepthwiseKernel::kTiledPixel});
    for (DepthwiseKernel k : kernels) {
      auto launch = [&] { run_depthwise(ctx, layer, p, x, w, bias, residual, out, k); };
      launch();
      if (!agrees(true, depthwise_name(k))) continue;
      const float t = time_launches_ms(ctx, launch, 1.5f * best_ms);
      timings << " kiln " << depthwise_name(k) << " " << t;
      if (t < best_ms) best_ms = t, best_name = std::string("kiln ") + depthwise_name(k),
                       cp->choice = ConvPlan::Choice::kKiln, cp->kiln_kernel = k;
    }
  }
  cudaFree(scratch_out);
  if (reference) cudaFree(reference);
  note_memory("done");
  if (!std::isfinite(best_ms))
    fail(layer, graph_tactic ? "KILN_CONV_TACTIC=cudnn-graph: no cuDNN graph engine runs this convolution"
                             : "cuDNN: no algorithm for this convolution");
  if (detail::debug_logging())
    detail::log_debug("convolution " + layer.name() + " [" + key.str() + "]:" + timings.str() + " ms -> " +
                      best_name + " (" + std::to_string(seconds_since(started)) + " s to choose; device MiB taken:" +
                      memory_stages.str() + ")");
  reserve_workspace(ctx, *cp);
  if (tactic == Tactic::kAuto)
    if (nlohmann::json record = choice_record(*cp, best_ms); !record.is_null()) ctx.timing->store(cache_key, record);
  slot = std::move(cp);
  return *slot;
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
  if (is_pointwise_channels_last(p, w.dims) && x.numel() > 0) {
    // A 1x1 convolution in NHWC is a matmul over rows of channels: cuBLASLt, bias, residual and relu fused.
    const int64_t rows = x.dims[0] * x.dims[1] * x.dims[2], channels = x.dims[3], filters = w.dims[0];
    run_linear_rows(ctx, rows, filters, channels, x, w, bias, p.activation, y, residual);
    return;
  }
  const Tactic tactic = tactic_override();
  const bool cudnn_tactic =
      tactic == Tactic::kCudnn || tactic == Tactic::kCudnnGraph || tactic == Tactic::kCudnnGraphFused;
  const bool kiln_candidate = x.numel() > 0 && !cudnn_tactic && depthwise_supported(p, x, w, y);
  if (tactic != Tactic::kAuto && !cudnn_tactic && !kiln_candidate)
    fail(call.layer, "KILN_CONV_TACTIC=kiln: kiln has no kernel of its own for this convolution");
  if (x.numel() == 0) {  // no input channels: the convolution is zeros
    const TensorView cb = bias ? channel_bias(p, y, *bias) : TensorView{};
    apply_epilogue_to_zeros(ctx, y, bias ? &cb : nullptr, p.activation, residual);
    return;
  }
  // Every other path writes y before its epilogue reads the residual (the memory plan gives only a
  // 1x1 channels-last convolution its residual's buffer, compute_buffer_plan).
  if (residual && residual->data == y.data)
    fail(call.layer, "the output shares the residual's buffer, which only a 1x1 channels-last convolution allows");
  ConvPlan& cp = plan_for(ctx, call.layer, p, x, w, y, bias, residual, kiln_candidate, tactic);
  switch (cp.choice) {
    case ConvPlan::Choice::kKiln:  // bias, residual and activation fused in its store
      run_depthwise(ctx, call.layer, p, x, w, bias, residual, y, cp.kiln_kernel);
      return;
    case ConvPlan::Choice::kGraphFused:
      cp.graph->execute(ctx.conv->handle, cp.graph_plan, x.data, w.data, y.data, bias ? bias->data : nullptr,
                        residual ? residual->data : nullptr, ctx.scratch.data);
      return;
    case ConvPlan::Choice::kGraph:
      cp.graph->execute(ctx.conv->handle, cp.graph_plan, x.data, w.data, y.data, nullptr, nullptr,
                        ctx.scratch.data);
      break;
    case ConvPlan::Choice::kLegacy:
      run_legacy(*ctx.conv, cp, p, x, w, y.data, ctx.scratch.data);
      break;
  }
  if (bias || residual || p.activation) {
    const TensorView cb = bias ? channel_bias(p, y, *bias) : TensorView{};
    apply_epilogue(ctx, y, bias ? &cb : nullptr, p.activation, residual);
  }
}

#else  // no cuDNN at build time

struct ConvCache {};

void run_convolution(Context& ctx, const ConvolutionParams& p, LayerCall& call) {
  fail(call.layer, "kiln was built without cuDNN; the CUDA convolution needs it");
}

#endif

}  // namespace kiln::engine::cuda
