// What kiln's oneDNN kernels share (onednn.cpp: linear layers, norms, activations, GEMMs;
// onednn_conv.cpp: convolutions): the engine and this thread's stream and scratch, the OpenMP
// team's state, per-layer argument bindings and the primitive caches. Internal to those files.
#pragma once

#ifdef KILN_HAS_DNNL
#include <dnnl.hpp>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/parallel.h"

namespace kiln::engine::cpu::onednn {

using dnnl::memory;
using tag = memory::format_tag;

dnnl::engine& cpu_engine();
// One oneDNN stream per thread (making one per call costs a few microseconds).
dnnl::stream& thread_stream();
// oneDNN's eltwise for a kiln activation, when it has one.
bool eltwise_of(const ActivationParams& a, dnnl::algorithm& alg, float& alpha, float& beta);
// This thread's scratch for oneDNN's kernels, at least `bytes`, grown as needed and kept (one per
// thread: runs of one program from several threads each have their own).
void* thread_scratch(size_t bytes);

inline memory::dims to_dims(const std::vector<int64_t>& v) { return memory::dims(v.begin(), v.end()); }

// The oneDNN type of an fp32 or bf16 tensor (the two kiln runs on oneDNN).
inline memory::data_type dnnl_type(DataType t) {
  return t == DataType::kBFloat16 ? memory::data_type::bf16 : memory::data_type::f32;
}

// When this thread last ran oneDNN work (run_on_team). For a while after it, OpenMP's workers spin on the cores;
// work handed to other threads (OpenBLAS's) then waits for them. Once a convolution has started
// the team, GEMMs and activations go to oneDNN too (the same OpenMP workers) while it stays hot;
// otherwise to OpenBLAS and kiln's own loops (networks without convolutions: transformers ran
// 1.3-1.8x slower at batch 1 on oneDNN's GEMM).
extern thread_local std::chrono::steady_clock::time_point last_onednn_work;

inline bool team_is_hot() {
  return std::chrono::steady_clock::now() - last_onednn_work < std::chrono::milliseconds(20);
}

// Runs oneDNN work `f` with its OpenMP team sized like kiln's pool, whatever the calling thread's
// OpenMP setting (PyTorch's, in a Python process) says (restored after), and notes the team hot.
template <class F>
inline void run_on_team(F&& f) {
  const int caller_threads = omp_get_max_threads();
  if (caller_threads != max_threads()) omp_set_num_threads(max_threads());
  f();
  if (caller_threads != max_threads()) omp_set_num_threads(caller_threads);
  last_onednn_work = std::chrono::steady_clock::now();
}

// Counters for the tests (onednn.h): convolutions and linear layers run, parallel loops run on the
// team, Winograd convolutions run; runs that time tactics are not counted.
extern std::atomic<uint64_t> executions, parallel_loops, winograd_executions;
extern thread_local bool timing_tactics;

// Weights in the layout a primitive chose (`packed`), reordered once from a network constant whose
// bytes are in the layout `user` describes.
memory pack_constant(const memory::desc& user, const memory::desc& packed, const Weights& constant);

// This thread's memory objects for one layer's primitive arguments, made once for its entry: a call
// points them at its buffers (set_data_handle), where making them cost an allocation each, about a
// third of a small layer's time.
struct ArgBinding {
  std::unordered_map<int, memory> args;
  void bind(int arg, const memory::desc& d, void* data) {
    auto it = args.find(arg);
    if (it == args.end()) args.emplace(arg, memory(d, cpu_engine(), data));
    else it->second.set_data_handle(data);
  }
  void set(int arg, const memory& m) {
    auto it = args.find(arg);
    if (it == args.end()) args.emplace(arg, m);
    else if (it->second.get() != m.get()) it->second = m;
  }
};

// Runs a layer's primitive (convolution, matmul) with the arguments bound in `b` plus the call's
// bias, its residual when that is the first post-op's operand (a binary add), and this thread's
// scratch, on the team; then kiln's activation when oneDNN could not fuse it (fp32 outputs only:
// the callers decline otherwise).
template <class Entry>
inline void execute_layer(const Entry& e, ArgBinding& b, const TensorView* bias, const TensorView* residual_operand,
                          const TensorView& y, const std::optional<ActivationParams>& act) {
  if (bias) b.bind(DNNL_ARG_BIAS, e.bias, bias->data);
  if (residual_operand)
    b.bind(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, e.residual, residual_operand->data);
  const memory::desc scratch_desc = e.pd.scratchpad_desc();
  if (scratch_desc.get_size() > 0) b.bind(DNNL_ARG_SCRATCHPAD, scratch_desc, thread_scratch(scratch_desc.get_size()));
  dnnl::stream& s = thread_stream();
  run_on_team([&] {
    e.primitive.execute(s, b.args);
    s.wait();
  });
  if (!timing_tactics) ++executions;
  if (e.activation_after) apply_activation_inplace(static_cast<float*>(y.data), y.numel(), *act);
}

// This thread's entry and argument binding per layer: a network's layers find theirs by comparing
// the call's signature, without building the cache's string key or taking its lock on every call.
// Weak: the cache owns the entries; a layer whose network is gone finds its entry expired or its
// signature changed.
template <class Entry, class Signature>
struct LayerSlot {
  Signature signature;
  std::weak_ptr<Entry> entry;
  ArgBinding binding;
};
template <class Entry, class Signature>
class LayerSlots {
 public:
  // The slot of `layer` and its entry when the signature matches and the entry is alive (else null).
  std::pair<LayerSlot<Entry, Signature>*, std::shared_ptr<Entry>> find(const Layer* layer, const Signature& sig) {
    if (slots_.size() > 4096 && !slots_.count(layer)) slots_.clear();  // layers of networks long gone
    auto& slot = slots_[layer];
    std::shared_ptr<Entry> e = slot.signature == sig ? slot.entry.lock() : nullptr;
    if (e && sig.weights && e->weights_source.expired()) e.reset();
    return {&slot, e};
  }
  // Records `e` for `layer` (a fresh binding); returns the slot.
  LayerSlot<Entry, Signature>& store(const Layer* layer, const Signature& sig, const std::shared_ptr<Entry>& e) {
    auto& slot = slots_[layer];
    slot = LayerSlot<Entry, Signature>{sig, e, {}};
    return slot;
  }

 private:
  std::unordered_map<const Layer*, LayerSlot<Entry, Signature>> slots_;
};

// Convolution and matmul primitives per case (key), with the constant weights packed into them.
// A case oneDNN declined is remembered (not asked again on every call). An entry whose constant
// died belongs to a network since destroyed: looked up as missing, swept when another is stored.
template <class Entry>
class PrimitiveCache {
 public:
  // The entry for `key` (null when there is none yet); `declined` when oneDNN declined the case.
  std::shared_ptr<Entry> find(const std::string& key, bool constant_weights, bool& declined) {
    std::lock_guard<std::mutex> lock(mutex_);
    declined = false;
    auto it = entries_.find(key);
    if (it == entries_.end()) return nullptr;
    declined = !it->second;
    if (declined || (constant_weights && it->second->weights_source.expired())) return nullptr;
    return it->second;
  }
  void decline(const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_[key] = nullptr;
  }
  void store(const std::string& key, std::shared_ptr<Entry> e) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end();)
      it = it->second && it->second->weights_source.expired() && it->first.find("|w") != std::string::npos
               ? entries_.erase(it)
               : std::next(it);
    entries_[key] = std::move(e);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<Entry>> entries_;
};
// The entry for a layer's call: this thread's slot when its signature matches, else the process's
// cache (by the signature's key), else make() (which throws dnnl::error where oneDNN has no
// implementation; the case is then remembered as declined). {null, null} when declined.
template <class Entry, class Signature, class Make>
inline std::pair<LayerSlot<Entry, Signature>*, std::shared_ptr<Entry>> entry_for(LayerSlots<Entry, Signature>& slots,
                                                                          PrimitiveCache<Entry>& cache,
                                                                          const Layer* layer, const Signature& sig,
                                                                          Make&& make) {
  auto [slot, e] = slots.find(layer, sig);
  if (e) return {slot, e};
  const std::string key = sig.key();
  bool declined;
  e = cache.find(key, sig.weights != nullptr, declined);
  if (declined) return {nullptr, nullptr};
  if (!e) {
    try {
      e = make();
    } catch (const dnnl::error&) {
      cache.decline(key);
      return {nullptr, nullptr};
    }
    cache.store(key, e);
  }
  return {&slots.store(layer, sig, e), e};
}

}  // namespace kiln::engine::cpu::onednn

#endif  // KILN_HAS_DNNL
