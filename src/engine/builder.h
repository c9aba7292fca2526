// The builder: optimizes a network into a plan. Each pass is a function over a Network, testable
// alone; build() runs them in order and records what they did (KILN_LOG=debug prints it).
#pragma once

#include <map>
#include <optional>
#include <string>

#include "engine/network.h"
#include "engine/plan.h"

namespace kiln::engine {

enum class Precision : uint8_t { kFP32, kFP16, kBF16 };
const char* to_string(Precision p);

// min/opt/max of one symbol (dynamic input dimension).
struct SymbolRange {
  int64_t min = 1;
  int64_t opt = 1;
  int64_t max = 1;
};

struct BuilderConfig {
  Precision precision = Precision::kFP32;  // fp16/bf16: float math in that type; reductions, norms, accumulation fp32
  std::map<std::string, SymbolRange> profile;  // by symbol name; every input symbol needs one
  // The most scratch memory a GEMM, convolution or attention algorithm may use (CUDA): candidates
  // that need more are not considered. Smaller saves device memory, maybe at some speed.
  size_t workspace_limit = kDefaultWorkspaceLimit;
  DeviceKind device = DeviceKind::kCPU;
  bool fuse_pointwise = true;
  bool fuse_epilogues = true;
  bool attention_views = true;  // attention reads permuted / sliced q, k, v in place; constant masks become flags
  // CUDA fp16/bf16: 2-d convolutions (and the pooling between them) in NHWC, where cuDNN's
  // tensor-core kernels need no internal transposes and 1x1 convolutions are plain matmuls
  // (resnet50 on an H100: 5.6 -> 2.9 ms at batch 32; docs/PERFORMANCE.md). CPU fp32, when kiln
  // has oneDNN: the same, for oneDNN's channels-last kernels.
  bool channels_last = true;
  // CUDA: the architecture the plan's generated kernels are compiled for at build time (90 for
  // sm_90); 0: the current GPU's (none: they compile on the plan's first run instead).
  int cuda_arch = 0;
  // CUDA: compile the generated kernels into the plan. Off for a plan built only to hand its
  // constants to Plan::refit, which keeps the kernels it has.
  bool compile_device_code = true;
  // Data movement folded into the index arithmetic of the pointwise kernels that read it (and
  // chains of copies into one gathering copy); unset: on for CUDA, off for the CPU, whose
  // interpreter evaluates such loads element by element. KILN_FOLD_MOVEMENT=0/1 overrides.
  std::optional<bool> fold_movement;
  // Layer norms, softmaxes and reductions over the last axis fused with the pointwise layers
  // around them into row programs (one read and one write of the rows); unset: on for CUDA, off
  // for the CPU, whose own norm and softmax kernels are faster than its program interpreter.
  // KILN_FUSE_ROWS=0/1 overrides.
  std::optional<bool> fuse_rows;
};

namespace passes {
// Each returns how many changes it made.
// The value of `t` when it depends on constants alone (no network input, no data-dependent
// shape), computed by the CPU kernels with at most `max_bytes` of intermediates; else nullopt.
// For passes that need to look at a value fold_constants leaves unfolded (a large broadcast).
std::optional<Weights> evaluate_at_build_time(const Tensor* t, size_t max_bytes);
size_t fold_constants(Network& net);       // layers whose inputs are all constants become constants
// Inference batch norms: after a convolution -> its weights; elsewhere -> a per-channel scale and
// shift. `precision` is the build's: values must also fit its float type (fp16's range).
size_t fold_batch_norms(Network& net, Precision precision = Precision::kFP32);
size_t eliminate_dead_layers(Network& net);
size_t fuse_epilogues(Network& net);       // matmul/conv + bias add + activation
size_t fuse_pointwise(Network& net);       // elementwise/unary/activation/cast chains -> FusedPointwise
size_t move_permutes_across_matmuls(Network& net);  // [L,B,E] <-> [B,L,E] transposes moved next to attention
size_t simplify_attention_masks(Network& net);  // constant causal / keep-all masks -> the causal flag / none
size_t absorb_attention_views(Network& net);  // permutes/slices before attention -> strided reads
// Converts fp16/bf16 convolutions (CUDA: fp32 stays NCHW, on cuDNN's exact FMA path), or with
// `for_cpu` the fp32 and bf16 ones (the CPU, whose channels-last convolutions are oneDNN's kernels).
size_t to_channels_last(Network& net, bool for_cpu = false);
size_t fold_movement(Network& net);        // permutes/reshapes/slices/pads/concats -> gathered loads
size_t fuse_rows(Network& net);            // norms / softmaxes / last-axis reductions + pointwise neighbours -> row programs
size_t apply_precision(Network& net, Precision p);
}  // namespace passes

// Runs verification, the passes, and memory planning at the profile's `opt` shapes.
// Consumes the network (the plan takes its layers and weights). Throws NetworkError.
Plan build(Network&& net, const BuilderConfig& config);

}  // namespace kiln::engine
