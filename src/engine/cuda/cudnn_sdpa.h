// Scaled dot-product attention as a cuDNN graph-API operation graph, which cuDNN's fused
// flash-attention engines (its "SDPA" runtime fusion) run as one kernel:
//   S = Q·Kᵀ (fp32) -> S·scale -> (+ bias) -> (causal: keep key j for query i iff j <= i)
//   -> softmax over the keys -> P (the inputs' type) -> O = P·V
// attention_tactic.cpp times it against kiln's own kernel (attention.cu) per shape and keeps the
// faster one. Only the backend API is used (cudnn_graph.h's pieces): the graph is written out
// operation by operation in the shape cuDNN's pattern matcher recognises as fused attention.
#pragma once

#ifdef KILN_HAS_CUDNN
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/cuda/cudnn_graph.h"

namespace kiln::engine::cuda::dnn {

// The attention in cuDNN's terms, element strides, every last stride 1:
// Q [B, H, Sq, D], K [B, Hk, Skv, D], V [B, Hk, Skv, Dv], O [B, H, Sq, Dv]. Hk divides H (grouped-
// query attention): query head h reads key/value head h / (H / Hk).
struct SdpaSpec {
  cudnnDataType_t io_type = CUDNN_DATA_HALF;  // or CUDNN_DATA_BFLOAT16
  GraphTensor q, k, v, o;
  // An additive mask [B or 1, H or 1, Sq or 1, Skv] of io_type, added to the scaled scores.
  std::optional<GraphTensor> bias;
  bool causal = false;     // top-left aligned, as PyTorch's is_causal and kiln's kernel
  int64_t alignment = 16;  // bytes every data pointer is aligned to (at most 16)
};

// The data an execution reads and writes.
struct SdpaPointers {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  const void* bias = nullptr;  // when the spec has one
};

class SdpaGraph {
 public:
  // The graph with up to `limit` finalized plans, in the order cuDNN's heuristics prefer them.
  // nullptr when cuDNN rejects every way of writing the graph or no engine finalizes a plan for
  // it; `log` then says at which step, for KILN_LOG=debug (and which lowering won otherwise).
  static std::unique_ptr<SdpaGraph> build(cudnnHandle_t handle, const SdpaSpec& spec, size_t limit, std::string& log);
  // The graph with the one plan a timing cache kept (plan_to_json's text); nullptr when cuDNN
  // no longer accepts it (the caller times the candidates again).
  static std::unique_ptr<SdpaGraph> restore(cudnnHandle_t handle, const SdpaSpec& spec, const std::string& plan_json,
                                            int64_t engine);
  ~SdpaGraph();

  size_t plan_count() const { return plans_.size(); }
  const GraphPlan& plan(size_t i) const { return plans_.at(i); }
  // Keeps plan `i` alone (the one a tactic chose): the others' resources are released.
  void keep_only(size_t i);
  // O = attention(Q, K, V) with plan `i` on the stream set on `handle`; `scale` multiplies Q·Kᵀ.
  // cuDNN's status: the caller falls back to kiln's kernel when it is not success.
  cudnnStatus_t execute(cudnnHandle_t handle, size_t i, const SdpaPointers& data, float scale, void* workspace) const;

 private:
  SdpaGraph() = default;
  SdpaSpec spec_;
  float masked_score_ = 0;  // what the causal mask writes over hidden scores (a by-value input)
  std::vector<std::unique_ptr<Descriptor>> parts_;  // tensors, operations and their descriptors
  std::unique_ptr<Descriptor> graph_;
  std::vector<GraphPlan> plans_;
};

}  // namespace kiln::engine::cuda::dnn

#endif  // KILN_HAS_CUDNN
