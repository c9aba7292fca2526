// build(): verification, the passes in order, lifetimes and the memory report at the profile's
// opt shapes. Each pass is also callable alone (passes::*).
#include "engine/builder.h"
#include "engine/cpu/onednn.h"

#include <algorithm>
#include <chrono>
#include <iostream>

#include "engine/memory_planner.h"
#include "engine/network_internal.h"
#include "engine/plan_impl.h"

namespace kiln::engine {

const char* to_string(Precision p) {
  switch (p) {
    case Precision::kFP32: return "fp32";
    case Precision::kFP16: return "fp16";
    case Precision::kBF16: return "bf16";
  }
  return "?";
}

namespace {

void check_profile(const Network& net, const BuilderConfig& config) {
  for (Tensor* in : net.inputs()) {
    std::vector<std::string> syms;
    for (const DimExpr& d : in->shape()) d.collect_symbols(syms);
    for (const std::string& s : syms) {
      auto it = config.profile.find(s);
      if (it == config.profile.end())
        throw NetworkError("builder: no profile range (min/opt/max) for symbol '" + s + "' of input '" + in->name() + "'");
      const SymbolRange& r = it->second;
      if (r.min < 0 || r.min > r.opt || r.opt > r.max)
        throw NetworkError("builder: profile range of symbol '" + s + "' needs 0 <= min <= opt <= max, got " +
                           std::to_string(r.min) + "/" + std::to_string(r.opt) + "/" + std::to_string(r.max));
    }
  }
}

}  // namespace

// Arena bytes of `net` at these symbol values (tensors whose shapes these values don't resolve, the
// data-dependent ones, are left out as they are allocated at run time).
size_t planned_arena_bytes(const Network& net, const std::map<int, Lifetime>& lifetimes, const SymbolValues& values) {
  std::vector<BufferRequest> reqs;
  for (Tensor* t : net.tensors()) {
    auto it = lifetimes.find(t->id());
    if (it == lifetimes.end()) continue;
    int64_t n = 1;
    for (const DimExpr& d : t->shape()) n *= std::max<int64_t>(d.evaluate(values), 0);
    reqs.push_back({static_cast<size_t>(n) * element_size(t->dtype()), it->second.first, it->second.last});
  }
  const size_t total = plan_arena(reqs, arena_search_for(net)).total_bytes;
  if (detail::debug_logging()) {
    detail::log_debug("arena: " + std::to_string(total >> 10) + " KiB for " + std::to_string(reqs.size()) +
                      " buffers; the most alive at one step: " + std::to_string(peak_live_bytes(reqs) >> 10) + " KiB");
  }
  return total;
}

Plan build(Network&& input, const BuilderConfig& config) {
  Network net = std::move(input);
  net.verify();
  check_profile(net, config);
  std::vector<std::string> log;
  auto run = [&](const char* name, size_t changes) {
    std::string line = std::string(name) + ": " + std::to_string(changes);
    detail::log_debug("pass " + line);
    if (changes) log.push_back(line);
  };
  detail::log_debug("build: " + std::to_string(net.layers().size()) + " layers, precision " + to_string(config.precision));
  if (config.fuse_epilogues) run("fold_batch_norms", passes::fold_batch_norms(net, config.precision));
  if (config.precision != Precision::kFP32) run("apply_precision", passes::apply_precision(net, config.precision));
  run("fold_constants", passes::fold_constants(net));
  if (config.attention_views) run("simplify_attention_masks", passes::simplify_attention_masks(net));
  run("eliminate_dead_layers", passes::eliminate_dead_layers(net));
  if (config.fuse_epilogues) {
    run("fuse_epilogues", passes::fuse_epilogues(net));
    run("fold_constants", passes::fold_constants(net));  // reshaped constant biases
    run("eliminate_dead_layers", passes::eliminate_dead_layers(net));
  }
  if (config.fuse_pointwise) run("fuse_pointwise", passes::fuse_pointwise(net));
  if (config.attention_views) {
    run("move_permutes_across_matmuls", passes::move_permutes_across_matmuls(net));
    run("absorb_attention_views", passes::absorb_attention_views(net));
    // Residual adds that sat behind the transposes moved above (vit's attention projection).
    if (config.fuse_epilogues) run("fuse_epilogues", passes::fuse_epilogues(net));
  }
  // KILN_CHANNELS_LAST=0 turns the NHWC rewrite off (to measure against it).
  const bool channels_last = detail::env_flag("KILN_CHANNELS_LAST", config.channels_last);
  if (channels_last && (config.device == DeviceKind::kCUDA || cpu::have_onednn())) {
    run("to_channels_last", passes::to_channels_last(net, config.device == DeviceKind::kCPU));
    run("fold_constants", passes::fold_constants(net));  // re-laid constant operands
  }
  run("eliminate_dead_layers", passes::eliminate_dead_layers(net));
  const bool fold = detail::env_flag("KILN_FOLD_MOVEMENT", config.fold_movement.value_or(config.device == DeviceKind::kCUDA));
  if (fold) run("fold_movement", passes::fold_movement(net));
  if (detail::env_flag("KILN_FUSE_ROWS", config.fuse_rows.value_or(config.device == DeviceKind::kCUDA)))
    run("fuse_rows", passes::fuse_rows(net));
  net.verify();
  if (detail::debug_logging()) std::cerr << "[kiln engine] built network:\n" << net.str();

  Plan plan;
  Plan::Impl& impl = plan.impl();
  impl.device = config.device;
  impl.precision = config.precision;
  impl.profile = config.profile;
  impl.workspace_limit = config.workspace_limit;
  impl.build_log = std::move(log);
  compute_buffer_plan(net, config.device, &impl.lifetimes, &impl.aliases);
  SymbolValues opt;
  for (auto& [s, r] : config.profile) opt[s] = r.opt;
  impl.memory.peak_activation_bytes = planned_arena_bytes(net, impl.lifetimes, opt);
  for (Layer* l : net.layers())
    if (auto* c = l->as<ConstantParams>()) impl.memory.weight_bytes += c->weights.nbytes();
  if (config.device == DeviceKind::kCUDA && config.compile_device_code) {
    const auto t0 = std::chrono::steady_clock::now();
    impl.cuda_arch = config.cuda_arch ? config.cuda_arch : current_cuda_arch();
    impl.device_code = compile_device_code(net, impl.cuda_arch);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    detail::log_debug("build: " + std::to_string(impl.device_code.size()) + " kernels compiled for the plan in " +
                      std::to_string(ms) + " ms");
  }
  *impl.network = std::move(net);
  detail::log_debug("build: done, " + std::to_string(impl.network->layers().size()) + " layers, peak activations " +
                    std::to_string(impl.memory.peak_activation_bytes) + " bytes");
  return plan;
}

}  // namespace kiln::engine
