// The per-shape choice between kiln's attention kernel and cuDNN's fused attention: see
// attention_tactic.h.
#include "engine/cuda/attention_tactic.h"

#include <atomic>

#include "engine/network_internal.h"

#ifdef KILN_HAS_CUDNN
#include <cudnn.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>

#include "engine/cuda/cudnn_sdpa.h"
#endif

namespace kiln::engine {

namespace {
std::atomic<uint64_t> cudnn_attention_runs{0};
}  // namespace

uint64_t cudnn_attention_executions() { return cudnn_attention_runs.load(); }

namespace cuda {

#ifdef KILN_HAS_CUDNN

namespace {

// How one shape runs: cuDNN's graph with its one chosen plan, or (graph null) kiln's kernel.
struct AttentionPlan {
  std::unique_ptr<dnn::SdpaGraph> graph;
  // Set when the chosen plan stopped running: kiln's kernel from then on. The graph is kept: a
  // CUDA graph recorded while it ran may still launch its kernels.
  bool failed = false;
};

// A plan's workspace above this is not worth it: kiln's kernel needs none. A plan's
// workspace_limit may lower it (max_workspace).
constexpr size_t kMaxWorkspace = size_t{256} << 20;
size_t max_workspace(const Context& ctx) { return std::min(kMaxWorkspace, ctx.workspace_limit); }
// cuDNN plans timed per shape: its heuristics rank the fused engine first; the next ones rarely win.
constexpr size_t kPlansPerShape = 3;
// Shapes chosen for per family (same dtype, head sizes, masking and batch rank; any sequence
// lengths): a decoder's growing cache makes a new shape at every step, and each choice builds,
// compiles and times a cuDNN graph. Past this many, a family's new shapes run kiln's kernel.
constexpr int kShapesPerFamily = 16;

}  // namespace

struct AttentionCache {
  cudnnHandle_t handle = nullptr;
  std::string handle_error;  // why cudnnCreate failed: every shape stays on kiln's kernel
  std::unordered_map<std::string, std::unique_ptr<AttentionPlan>> plans;
  std::unordered_map<std::string, int> chosen_per_family;  // see kShapesPerFamily
  ~AttentionCache() {
    plans.clear();
    if (handle) cudnnDestroy(handle);
  }
};

namespace {

enum class Tactic { kAuto, kKiln, kCudnn };

Tactic tactic_override() { return Tactic(detail::env_choice("KILN_ATTENTION_TACTIC", {"auto", "kiln", "cudnn"})); }

// Everything the choice depends on: dims, strides, flags and pointer alignments (the scale is a
// by-value input of cuDNN's graph and changes nothing in kiln's kernel).
std::string signature(const Context& ctx, const AttentionCall& c, Tactic tactic) {
  std::ostringstream key;
  auto list = [&](const std::vector<int64_t>& v) {
    for (int64_t x : v) key << x << ',';
    key << '|';
  };
  key << int(c.dtype) << '|';
  list(c.batch);
  list({c.Lq, c.Lk, c.E, c.Ev});
  for (auto* strides : {&c.q_batch, &c.k_batch, &c.v_batch, &c.out_batch}) list(*strides);
  list({c.q_row, c.k_row, c.v_row, c.out_row});
  key << (c.causal ? "causal|" : "");
  if (c.mask) {
    key << 'm' << int(c.mask_dtype) << ':';
    list(c.mask_batch);
    list({c.mask_row, c.mask_col});
  }
  key << 'a';
  for (const void* p : {c.q, c.k, c.v, static_cast<const void*>(c.out), c.mask})
    key << (p ? dnn::common_alignment({p}) : 0) << ',';
  key << "|t" << int(tactic);
  if (max_workspace(ctx) < kMaxWorkspace) key << "|w" << max_workspace(ctx);
  return key.str();
}

// The shapes that differ only in their sequence lengths (and the strides those make).
std::string family(const AttentionCall& c) {
  std::ostringstream key;
  key << int(c.dtype) << '|' << c.batch.size() << '|' << c.E << ',' << c.Ev << '|' << c.causal << '|'
      << (c.mask ? int(c.mask_dtype) : -1);
  return key.str();
}

// A run of batch dims folded into one dim: its size and the stride that steps through it.
struct Folded {
  int64_t size = 1, stride = 0;
};

// Dims [begin, end) as one dim: possible when, size-1 dims aside, every stride is positive and is
// the next dim's stride times that dim's size (as a contiguous run of dims is).
std::optional<Folded> fold(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, size_t begin,
                           size_t end) {
  Folded f;
  bool any = false;
  for (size_t i = begin; i < end; ++i) {
    if (dims[i] == 1) continue;
    if (strides[i] <= 0 || (any && f.stride != strides[i] * dims[i])) return std::nullopt;
    f.stride = strides[i];
    f.size *= dims[i];
    any = true;
  }
  return f;
}

// The head dims of keys or values: a foldable leading run, then dims they are broadcast over
// (stride 0). That is grouped-query attention as cuDNN defines it: query head h reads key/value
// head h / (H / Hk), Hk being the leading run's size.
std::optional<Folded> fold_heads(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, size_t begin,
                                 size_t end) {
  size_t broadcast_from = end;
  for (size_t i = begin; i < end && broadcast_from == end; ++i)
    if (dims[i] > 1 && strides[i] == 0) broadcast_from = i;
  for (size_t i = broadcast_from; i < end; ++i)
    if (dims[i] > 1 && strides[i] != 0) return std::nullopt;  // a head pattern cuDNN has no name for
  return fold(dims, strides, begin, broadcast_from);
}

// The mask over dims [begin, end): broadcast over all of them (one size-1 dim for cuDNN) or
// foldable.
std::optional<Folded> fold_or_broadcast(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides,
                                        size_t begin, size_t end) {
  bool broadcast = true;
  for (size_t i = begin; i < end; ++i) broadcast &= dims[i] == 1 || strides[i] == 0;
  return broadcast ? Folded{} : fold(dims, strides, begin, end);
}

// A [B, H, S, D] tensor for cuDNN. Size-1 dims get the stride a packed tensor would have there
// (the next larger dim's extent): their stride never moves a pointer, but cuDNN infers layouts
// from strides.
dnn::GraphTensor graph_tensor(std::vector<int64_t> dims, std::vector<int64_t> strides) {
  for (size_t i = dims.size(); i-- > 0;) {
    if (dims[i] != 1) continue;
    strides[i] = 1;
    for (size_t j = i + 1; j < dims.size(); ++j)
      if (dims[j] != 1) {
        strides[i] = strides[j] * dims[j];
        break;
      }
  }
  return {std::move(dims), std::move(strides)};
}

// The call as cuDNN's attention, or nullopt with `why` not.
std::optional<dnn::SdpaSpec> sdpa_spec(const Context& ctx, const AttentionCall& c, std::string& why) {
  if (c.dtype != DataType::kFloat16 && c.dtype != DataType::kBFloat16) {
    why = "only fp16 and bf16";
    return std::nullopt;
  }
  if (ctx.cc_major < 8) {
    why = "fused attention needs sm_80 or newer";
    return std::nullopt;
  }
  // Head sizes: multiples of 8, up to 256 on Hopper and newer, 128 before (cuDNN's documented
  // support surface for fp16/bf16).
  const int64_t max_head = ctx.cc_major >= 9 ? 256 : 128;
  if (c.E % 8 || c.Ev % 8 || c.E > max_head || c.Ev > max_head) {
    why = "head sizes " + std::to_string(c.E) + "/" + std::to_string(c.Ev) + " (multiples of 8 up to " +
          std::to_string(max_head) + " only)";
    return std::nullopt;
  }
  if (c.Lq < 1 || c.Lk < 1) {
    why = "an empty sequence";
    return std::nullopt;
  }
  if (c.mask && c.mask_dtype == DataType::kBool) {
    why = "a bool mask (cuDNN takes additive ones)";
    return std::nullopt;
  }
  if (c.mask && c.mask_dtype != DataType::kFloat16) {
    // A bf16 (or fp32) mask can hold values near the float range's end (HF masks with
    // torch.finfo(bf16).min): cuDNN zeroes a row whose every score is that low, where PyTorch
    // averages over it (the H200: CudnnFusedAttentionFullyMaskedRows). An fp16 mask's lowest,
    // -65504, is far from it.
    why = "a bf16 or fp32 mask (cuDNN zeroes rows masked near the float range's end)";
    return std::nullopt;
  }
  if (c.mask && c.mask_dtype != c.dtype) {
    why = "a mask of another dtype than q, k and v";
    return std::nullopt;
  }
  if (c.mask && c.Lk > 1 && c.mask_col != 1) {
    why = "a mask whose keys are not contiguous";
    return std::nullopt;
  }
  for (int64_t row : {c.q_row, c.k_row, c.v_row, c.out_row, c.mask_row})
    if (row < 0) {
      why = "a negative stride";
      return std::nullopt;
    }
  // Output batch dims into [B, H]: the first split point at which every tensor folds. Splits with
  // a batch part come first (the usual [B, H] is split 1); [H] alone and [B] alone after.
  const size_t n = c.batch.size();
  std::vector<size_t> splits;
  for (size_t s = 1; s < n; ++s) splits.push_back(s);
  splits.push_back(0);
  if (n > 0) splits.push_back(n);
  for (size_t s : splits) {
    const auto qb = fold(c.batch, c.q_batch, 0, s), qh = fold(c.batch, c.q_batch, s, n);
    const auto ob = fold(c.batch, c.out_batch, 0, s), oh = fold(c.batch, c.out_batch, s, n);
    const auto kb = fold(c.batch, c.k_batch, 0, s), kh = fold_heads(c.batch, c.k_batch, s, n);
    const auto vb = fold(c.batch, c.v_batch, 0, s), vh = fold_heads(c.batch, c.v_batch, s, n);
    if (!qb || !qh || !ob || !oh || !kb || !kh || !vb || !vh) continue;
    std::optional<Folded> mb, mh;
    if (c.mask) {
      mb = fold_or_broadcast(c.batch, c.mask_batch, 0, s), mh = fold_or_broadcast(c.batch, c.mask_batch, s, n);
      if (!mb || !mh) continue;
    }
    // fold() refuses broadcast dims, so kb and vb cover all of B; kh and vh divide H.
    const int64_t B = product(c.batch, 0, s), H = product(c.batch, s, n);
    dnn::SdpaSpec spec;
    spec.io_type = c.dtype == DataType::kBFloat16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    spec.q = graph_tensor({B, H, c.Lq, c.E}, {qb->stride, qh->stride, c.q_row, 1});
    spec.k = graph_tensor({B, kh->size, c.Lk, c.E}, {kb->stride, kh->stride, c.k_row, 1});
    spec.v = graph_tensor({B, vh->size, c.Lk, c.Ev}, {vb->stride, vh->stride, c.v_row, 1});
    spec.o = graph_tensor({B, H, c.Lq, c.Ev}, {ob->stride, oh->stride, c.out_row, 1});
    if (c.mask)
      spec.bias = graph_tensor({mb->size, mh->size, c.mask_row == 0 ? 1 : c.Lq, c.Lk},
                               {mb->stride, mh->stride, c.mask_row, 1});
    spec.causal = c.causal;
    spec.alignment = dnn::common_alignment({c.q, c.k, c.v, c.out, c.mask});
    return spec;
  }
  why = "batch and head strides that do not fold into cuDNN's [batch, heads] layout";
  return std::nullopt;
}

// A device buffer freed on every way out of the choice.
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { KILN_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Points the cache's cuDNN handle at the context's stream before each use, as the convolutions do.
void set_stream(AttentionCache& ac, const Context& ctx) {
  const cudnnStatus_t s = cudnnSetStream(ac.handle, ctx.stream);
  if (s != CUDNN_STATUS_SUCCESS) throw NetworkError(std::string("cuDNN: set stream: ") + cudnnGetErrorString(s));
}

dnn::SdpaPointers pointers(const AttentionCall& c, void* out) { return {c.q, c.k, c.v, out, c.mask}; }

// The cache's cuDNN handle, made at the first shape cuDNN could take and pointed at the context's
// stream; false (ac.handle_error says why) when cuDNN cannot make one.
bool ensure_handle(AttentionCache& ac, const Context& ctx) {
  if (!ac.handle && ac.handle_error.empty()) {
    const cudnnStatus_t s = cudnnCreate(&ac.handle);
    if (s != CUDNN_STATUS_SUCCESS) {
      ac.handle = nullptr;
      ac.handle_error = std::string("cudnnCreate: ") + cudnnGetErrorString(s);
    }
  }
  if (ac.handle) set_stream(ac, ctx);
  return ac.handle_error.empty();
}

// Rebuilds the plan a timing-cache record names, without timing; false when it no longer applies.
bool restore_choice(Context& ctx, AttentionCache& ac, const AttentionCall& call, const nlohmann::json& record,
                    AttentionPlan& plan) {
  try {
    const std::string choice = record.at("choice").get<std::string>();
    if (choice == "kiln") return true;
    if (choice != "cudnn") return false;
    std::string why;
    auto spec = sdpa_spec(ctx, call, why);
    if (!spec || !ensure_handle(ac, ctx)) return false;
    auto graph = dnn::SdpaGraph::restore(ac.handle, *spec, record.at("plan").get<std::string>(),
                                         record.at("engine").get<int64_t>());
    if (!graph || size_t(graph->plan(0).workspace) > max_workspace(ctx)) return false;
    ctx.scratch.reserve(size_t(graph->plan(0).workspace));
    plan.graph = std::move(graph);
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

// Chooses, once per signature, how this shape runs (see attention_tactic.h).
AttentionPlan& choose(Context& ctx, AttentionCache& ac, const Layer& layer, const AttentionCall& call, Tactic tactic,
                      const std::string& key, const std::function<void(void*)>& run_kiln) {
  const auto started = std::chrono::steady_clock::now();
  auto plan = std::make_unique<AttentionPlan>();
  std::ostringstream log;  // KILN_LOG=debug
  std::string why;
  std::unique_ptr<dnn::SdpaGraph> graph;
  int& family_choices = ac.chosen_per_family[family(call)];
  // A choice timed before, by this process or an earlier one (timing_cache.h).
  const std::string cache_key = "attention " + key;
  if (tactic == Tactic::kAuto)
    if (auto record = ctx.timing->find(cache_key)) {
      if (restore_choice(ctx, ac, call, *record, *plan)) {
        if (detail::debug_logging())
          detail::log_debug("attention " + layer.name() + " [" + key + "]: " + record->value("choice", "") +
                            " from the timing cache");
        auto& slot = ac.plans[key];
        slot = std::move(plan);
        return *slot;
      }
      detail::log_debug("attention " + layer.name() + ": the timing cache's choice does not apply; timing again");
    }
  if (tactic == Tactic::kAuto && family_choices >= kShapesPerFamily) {
    why = std::to_string(kShapesPerFamily) + " shapes of this family chosen already";
  } else if (auto spec = sdpa_spec(ctx, call, why)) {
    ++family_choices;
    if (!ensure_handle(ac, ctx)) {
      why = ac.handle_error;
    } else {
      std::string built;
      graph = dnn::SdpaGraph::build(ac.handle, *spec, tactic == Tactic::kCudnn ? 1 : kPlansPerShape, built);
      why = graph ? "graph: " + built : "cuDNN rejected the graph: " + built;
    }
  }
  if (graph && tactic == Tactic::kCudnn) {
    if (size_t(graph->plan(0).workspace) <= max_workspace(ctx)) {
      ctx.scratch.reserve(size_t(graph->plan(0).workspace));
      log << " forced -> cudnn " << graph->plan(0).name() << " (" << why << ")";
      graph->keep_only(0);
      plan->graph = std::move(graph);
    } else {
      log << " forced cudnn, but " << graph->plan(0).name() << " wants " << (graph->plan(0).workspace >> 20)
          << " MiB of workspace -> kiln";
    }
  } else if (graph) {
    // kiln's kernel is the reference and the time to beat; every cuDNN plan must match its output.
    const StackReservationScope stack_scope("attention " + layer.name());
    DeviceBuffer reference(call.out_bytes), scratch(call.out_bytes);
    run_kiln(reference.p);
    float best_ms = time_launches_ms(ctx, [&] { run_kiln(scratch.p); });
    log << " kiln " << best_ms;
    const int64_t elements = int64_t(call.out_bytes / element_size(call.dtype));
    const float bound = call.dtype == DataType::kBFloat16 ? 6e-2f : 2e-2f;
    int winner = -1;
    for (size_t i = 0; i < graph->plan_count(); ++i) {
      const dnn::GraphPlan& candidate = graph->plan(i);
      if (size_t(candidate.workspace) > max_workspace(ctx)) {
        log << " (cudnn " << candidate.name() << " wants " << (candidate.workspace >> 20) << " MiB of workspace)";
        continue;
      }
      ctx.scratch.reserve(size_t(candidate.workspace));
      cudnnStatus_t status = graph->execute(ac.handle, i, pointers(call, scratch.p), call.scale, ctx.scratch.data);
      if (status != CUDNN_STATUS_SUCCESS) {
        log << " (cudnn " << candidate.name() << " failed to run: " << cudnnGetErrorString(status) << ")";
        continue;
      }
      const float d = relative_difference(ctx, scratch.p, reference.p, call.dtype, elements);
      if (!(d <= bound)) {
        log << " (cudnn " << candidate.name() << " rejected: differs from kiln's result by " << d
            << " of the largest element)";
        continue;
      }
      const float ms = time_launches_ms(ctx, [&] {
        const cudnnStatus_t s = graph->execute(ac.handle, i, pointers(call, scratch.p), call.scale, ctx.scratch.data);
        if (s != CUDNN_STATUS_SUCCESS) status = s;
      }, 1.5f * best_ms);
      if (status != CUDNN_STATUS_SUCCESS) {
        log << " (cudnn " << candidate.name() << " failed to run: " << cudnnGetErrorString(status) << ")";
        continue;
      }
      log << " cudnn " << candidate.name() << " " << ms;
      if (ms < best_ms) best_ms = ms, winner = int(i);
    }
    nlohmann::json record{{"choice", "kiln"}, {"ms", best_ms}};
    if (winner >= 0) {
      log << " ms -> cudnn " << graph->plan(size_t(winner)).name() << " (" << why << ")";
      graph->keep_only(size_t(winner));
      const std::string plan_json = dnn::plan_to_json(graph->plan(0));
      record = plan_json.empty() ? nlohmann::json()
                                 : nlohmann::json{{"choice", "cudnn"}, {"engine", graph->plan(0).engine},
                                                  {"plan", plan_json}, {"ms", best_ms}};
      plan->graph = std::move(graph);
    } else {
      log << " ms -> kiln (" << why << ")";
    }
    if (!record.is_null()) ctx.timing->store(cache_key, record);
  } else {
    log << " kiln (cuDNN declined: " << why << ")";
  }
  if (detail::debug_logging()) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    detail::log_debug("attention " + layer.name() + " [" + key + "]:" + log.str() + ", " + std::to_string(seconds) +
                      " s to choose");
  }
  auto& slot = ac.plans[key];
  slot = std::move(plan);
  return *slot;
}

}  // namespace

void run_attention_tactic(Context& ctx, const Layer& layer, const AttentionCall& call,
                          const std::function<void(void* out)>& run_kiln) {
  const Tactic tactic = tactic_override();
  // fp32 never maps onto cuDNN's fused attention: no cache entry, no cuDNN handle.
  if (tactic == Tactic::kKiln || (call.dtype != DataType::kFloat16 && call.dtype != DataType::kBFloat16)) {
    run_kiln(call.out);
    return;
  }
  if (!ctx.attention) ctx.attention = std::make_shared<AttentionCache>();
  AttentionCache& ac = *ctx.attention;
  const std::string key = signature(ctx, call, tactic);
  auto found = ac.plans.find(key);
  AttentionPlan* plan = found == ac.plans.end() ? nullptr : found->second.get();
  if (!plan) {
    if (ctx.capturing()) {  // timing cannot run inside a capture: this shape stays on kiln's kernel for now
      if (detail::debug_logging())
        detail::log_debug("attention " + layer.name() + ": a new shape during graph capture runs kiln's kernel");
      run_kiln(call.out);
      return;
    }
    plan = &choose(ctx, ac, layer, call, tactic, key, run_kiln);
  }
  if (plan->graph && !plan->failed) {
    set_stream(ac, ctx);
    const cudnnStatus_t s = plan->graph->execute(ac.handle, 0, pointers(call, call.out), call.scale, ctx.scratch.data);
    if (s == CUDNN_STATUS_SUCCESS) {
      ++cudnn_attention_runs;
      return;
    }
    // It ran at the choice; if it no longer does, kiln's kernel takes the shape from now on.
    if (detail::debug_logging())
      detail::log_debug("attention " + layer.name() + ": cuDNN's " + plan->graph->plan(0).name() + " failed (" +
                        cudnnGetErrorString(s) + "): kiln's kernel from now on");
    plan->failed = true;
  }
  run_kiln(call.out);
}

#else  // no cuDNN at build time: kiln's kernel always

struct AttentionCache {};

void run_attention_tactic(Context& ctx, const Layer& layer, const AttentionCall& call,
                          const std::function<void(void* out)>& run_kiln) {
  run_kiln(call.out);
}

#endif

}  // namespace cuda
}  // namespace kiln::engine
