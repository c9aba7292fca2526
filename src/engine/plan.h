// A plan: the optimized network, ready to run, with its weights inside. Serialized as a versioned
// binary (header, JSON description, weight blob, checksum); a corrupted plan is refused.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/network.h"

namespace kiln::engine {

struct PlanError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct MemoryReport {
  size_t peak_activation_bytes = 0;  // arena size at the profile's opt shapes
  size_t weight_bytes = 0;
};

class Plan {
 public:
  Plan();
  Plan(Plan&&) noexcept;
  Plan& operator=(Plan&&) noexcept;
  ~Plan();

  const Network& network() const;
  DeviceKind device() const;
  const MemoryReport& memory() const;
  bool requires_output_allocator() const;  // has data-dependent output shapes
  // Symbols in tensor shapes that nothing binds at run time: neither an input's dims nor a layer
  // that produces a data-dependent size (NonZero's count). A plan with any cannot run (its
  // buffers would be sized from an unset value); deserialize() refuses such plans.
  std::vector<std::string> unbound_symbols() const;
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;
  std::string summary() const;              // layers, fusions, memory
  // CUDA plans: the compiled kernels they carry ("sm_90: 12 kernels, 180 KiB"; empty when none).
  std::string device_code_summary() const;
  // CUDA plans: the GPU architecture their kernels and kernel choices were made for (90 for
  // sm_90); 0 when the build named none (no GPU at build time and no --cuda-arch).
  int cuda_arch() const;
  // The most scratch memory the GEMM, convolution and attention algorithms chosen when it runs may
  // use (BuilderConfig::workspace_limit, Torch-TensorRT's workspace_size).
  size_t workspace_limit() const;
  // Empty when this plan may run on the current GPU; else why not and how to rebuild. A CUDA plan
  // built for another architecture is refused (TensorRT's rule: its kernel choices were timed on
  // that GPU) unless KILN_ALLOW_OTHER_GPU_ARCH=1, which runs it anyway with its kernels compiled
  // for this GPU on first use. Without a GPU at hand nothing is refused here (running will be).
  std::string gpu_mismatch() const;

  // Refit (TensorRT's refitter): takes the constants of `fresh` in place of this plan's. `fresh` is
  // a plan built from the same program with other weight values; the two networks must agree layer
  // for layer in everything but the constants' bytes (kinds, wiring, parameters, constant dtypes and
  // dims), else PlanError names the first layer that differs: the weights' values decided something
  // there (a constant inlined into a kernel, a mask recognised as causal), and only a new build
  // applies them. Kernel choices, compiled kernels and recorded CUDA graphs stay valid: execution
  // contexts copy the new constants into the device buffers they already hold at their next run.
  // Not to be called while the plan runs on another thread.
  void refit(const Plan& fresh);
  void check_refit(const Plan& fresh) const;  // refit's checks alone: throws as it would, changes nothing
  void take_constants(const Plan& fresh);     // refit's second half, for a `fresh` check_refit accepted
  // Counts refits; execution contexts compare it with the one their device constants hold.
  uint64_t weights_generation() const;

  std::vector<uint8_t> serialize() const;
  // Throws PlanError naming what is wrong (bad magic, version, checksum, truncated, bad layer).
  static Plan deserialize(const uint8_t* data, size_t size);
  // The same for plan bytes inside a buffer `owner` keeps alive and a container checksum has
  // already verified (a .kiln file's blob): the plan's weights alias the buffer (64-byte aligned
  // there; copied otherwise) and its own checksum is not computed a second time.
  static Plan deserialize_verified(std::shared_ptr<const uint8_t> owner, const uint8_t* data, size_t size);

 private:
  static Plan load(std::shared_ptr<const uint8_t> owner, const uint8_t* data, size_t size);

 public:

  struct Impl;
  Impl& impl() { return *impl_; }
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::engine
