// cuDNN's graph (backend) API: the pieces every kiln graph is made of (descriptors, tensors,
// pointwise operations, plans from the heuristics, execution through a variant pack), and a
// convolution (with its bias, residual and activation) as such a graph.
// The graph API reaches engines the legacy cudnnConvolutionForward cannot: runtime-fused
// conv + pointwise kernels and the specialised NHWC kernels (depthwise and grouped ones among
// them) that cuDNN's heuristics rank. convolution.cpp times these engines beside the legacy
// algorithms and kiln's own kernels and keeps the fastest (TensorRT's tactic selection).
// cudnn_sdpa.h builds fused attention from the same pieces.
#pragma once

#ifdef KILN_HAS_CUDNN
#include <cudnn.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/network.h"

namespace kiln::engine::cuda::dnn {

// One backend descriptor, destroyed with its owner.
class Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptorType_t type);
  ~Descriptor();
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  // Returns the status so that candidates cuDNN rejects can be skipped, not thrown.
  cudnnStatus_t set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                    const void* values);
  cudnnStatus_t finalize();

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// A tensor of the graph as cuDNN sees it: logical dims (N, C, spatial...) and element strides.
struct GraphTensor {
  std::vector<int64_t> dims, strides;
};

// Every set and finalize of a graph under construction: the first failure rejects the graph and is
// kept with the step it happened in, so that KILN_LOG=debug can say why a graph was rejected.
class Builder {
 public:
  void check(cudnnStatus_t s, const char* step);
  bool ok() const { return status_ == CUDNN_STATUS_SUCCESS; }
  cudnnStatus_t status() const { return status_; }
  std::string error() const;  // "<step>: <cuDNN's message>", empty while ok

 private:
  cudnnStatus_t status_ = CUDNN_STATUS_SUCCESS;
  std::string step_;
};

// A finalized tensor descriptor: `by_value` tensors are host scalars handed over at execution.
std::unique_ptr<Descriptor> tensor(Builder& b, int64_t uid, cudnnDataType_t type, const GraphTensor& t,
                                   int64_t alignment, bool is_virtual, bool by_value = false);

// A pointwise operation and the attributes some modes take.
struct PointwiseOp {
  PointwiseOp() = default;
  explicit PointwiseOp(cudnnPointwiseMode_t m, cudnnDataType_t precision = CUDNN_DATA_FLOAT)
      : mode(m), math(precision) {}
  cudnnPointwiseMode_t mode = CUDNN_POINTWISE_IDENTITY;
  cudnnDataType_t math = CUDNN_DATA_FLOAT;  // the precision it computes in
  std::optional<double> relu_lower_clip, relu_upper_clip, swish_beta;
  std::optional<int64_t> axis;  // GEN_INDEX: the dim whose index it writes
};
// y = op(x[, b[, t]]), finalized. The pointwise descriptor it refers to goes into `parts` (it must
// outlive the graph); t is the condition of BINARY_SELECT (y = t ? x : b).
std::unique_ptr<Descriptor> pointwise(Builder& b, std::vector<std::unique_ptr<Descriptor>>& parts,
                                      const PointwiseOp& op, const Descriptor& x, const Descriptor* b_in,
                                      const Descriptor& y, const Descriptor* t_in = nullptr);

// The finalized operation graph of `ops` on `handle`.
std::unique_ptr<Descriptor> operation_graph(Builder& b, cudnnHandle_t handle,
                                            const std::vector<const Descriptor*>& ops);

// One executable engine configuration for a graph.
struct GraphPlan {
  std::unique_ptr<Descriptor> plan;
  int64_t workspace = 0;
  int64_t engine = -1;  // cuDNN's global engine index, for logs
  std::string name() const { return "engine " + std::to_string(engine); }
};

// Up to `limit` finalized plans for a finalized operation graph, in the order of preference of
// cuDNN's heuristics (mode A, then the fallback list for the engines it leaves out). With
// `skip_lossy`, engines noted as down-converting their inputs or reducing in reduced precision
// are left out. `skipped`, when given, collects why engines were left out (for logs).
std::vector<GraphPlan> finalized_plans(cudnnHandle_t handle, const Descriptor& graph, size_t limit, bool skip_lossy,
                                       std::string* skipped = nullptr);

// Runs `plan` on the stream set on `handle` with the tensors of `uids` at `pointers` (host
// pointers for by-value tensors). Returns cuDNN's status: callers choosing among tactics fall back
// on failure, others throw.
cudnnStatus_t execute_plan(cudnnHandle_t handle, const GraphPlan& plan, const std::vector<int64_t>& uids,
                           const std::vector<void*>& pointers, void* workspace);

// What the graph computes: y = act(conv(x, w) + bias + residual), each of the last three optional.
struct ConvGraphSpec {
  cudnnDataType_t io_type = CUDNN_DATA_HALF;
  GraphTensor x, w, y;  // bias is [1, K, 1...] and the residual has y's dims and strides
  std::vector<int64_t> padding, stride, dilation;
  bool bias = false, residual = false;
  std::optional<ActivationParams> activation;
  int64_t alignment = 16;  // bytes every data pointer is aligned to (at most 16)
};

// Largest power of two (at most 16) dividing every non-null pointer: the graph API's engines
// specialise on it (a tensor descriptor's byte alignment).
int64_t common_alignment(std::initializer_list<const void*> ptrs);

// Whether the graph API can fuse this activation (kiln's others run as a separate pass).
bool fusable_activation(const ActivationParams& a);

using ConvGraphPlan = GraphPlan;

// A finalized plan as cuDNN's JSON text (the timing cache keeps it), empty when cuDNN cannot
// serialize it; and back, on this handle's device (nullopt when cuDNN rejects the text, e.g. one
// written by another cuDNN version).
std::string plan_to_json(const ConvGraphPlan& plan);
std::optional<ConvGraphPlan> plan_from_json(cudnnHandle_t handle, const std::string& json, int64_t engine);

class ConvGraph {
 public:
  // nullptr when cuDNN rejects the graph: the caller keeps its other tactics.
  static std::unique_ptr<ConvGraph> build(cudnnHandle_t handle, const ConvGraphSpec& spec);
  // Up to `limit` finalized plans, in the heuristics' order of preference.
  std::vector<ConvGraphPlan> plans(cudnnHandle_t handle, size_t limit) const;
  // Runs `plan` on the stream set on `handle`. Pointers in order x, w, y, bias, residual (the last
  // two ignored when the spec has none).
  void execute(cudnnHandle_t handle, const ConvGraphPlan& plan, void* x, void* w, void* y, void* bias,
               void* residual, void* workspace) const;

 private:
  ConvGraphSpec spec_;
  std::vector<std::unique_ptr<Descriptor>> parts_;  // tensors and ops the graph refers to
  std::unique_ptr<Descriptor> graph_;
};

}  // namespace kiln::engine::cuda::dnn

#endif  // KILN_HAS_CUDNN
