// A convolution (and its bias, residual and activation) as a cuDNN graph-API operation graph.
// The graph API reaches engines the legacy cudnnConvolutionForward cannot: runtime-fused
// conv + pointwise kernels and the specialised NHWC kernels (depthwise and grouped ones among
// them) that cuDNN's heuristics rank. convolution.cpp times these engines beside the legacy
// algorithms and kiln's own kernels and keeps the fastest (TensorRT's tactic selection).
#pragma once

#ifdef KILN_HAS_CUDNN
#include <cudnn.h>

#include <cstdint>
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

// What the graph computes: y = act(conv(x, w) + bias + residual), each of the last three optional.
struct ConvGraphSpec {
  cudnnDataType_t io_type = CUDNN_DATA_HALF;
  GraphTensor x, w, y;  // bias is [1, K, 1...] and the residual has y's dims and strides
  std::vector<int64_t> padding, stride, dilation;
  bool bias = false, residual = false;
  std::optional<ActivationParams> activation;
  int64_t alignment = 16;  // bytes every data pointer is aligned to (at most 16)
};

// Whether the graph API can fuse this activation (kiln's others run as a separate pass).
bool fusable_activation(const ActivationParams& a);

// One executable engine configuration for a graph.
struct ConvGraphPlan {
  std::unique_ptr<Descriptor> plan;
  int64_t workspace = 0;
  int64_t engine = -1;  // cuDNN's global engine index, for logs
  std::string name() const { return "engine " + std::to_string(engine); }
};

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
