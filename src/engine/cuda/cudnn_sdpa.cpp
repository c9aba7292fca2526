// cuDNN's fused attention through the graph (backend) API: see cudnn_sdpa.h.
#ifdef KILN_HAS_CUDNN
#include "engine/cuda/cudnn_sdpa.h"

#include <limits>
#include <utility>

namespace kiln::engine::cuda::dnn {

namespace {

// Unique ids of the graph's tensors; intermediates (virtual) count up from kFirstVirtual.
enum : int64_t { kQ = 1, kK, kV, kO, kScale, kBias, kMaskedScore, kFirstVirtual = 100 };

// C = A·B, accumulated in fp32 (batch dims broadcast: K and V may have fewer heads than Q).
std::unique_ptr<Descriptor> matmul(Builder& b, std::vector<std::unique_ptr<Descriptor>>& parts, const Descriptor& a,
                                   const Descriptor& bmat, const Descriptor& c) {
  auto desc = std::make_unique<Descriptor>(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
  const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  b.check(desc->set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp), "matmul compute type");
  if (b.ok()) b.check(desc->finalize(), "matmul finalize");
  auto node = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
  cudnnBackendDescriptor_t ad = a.get(), bd = bmat.get(), cd = c.get(), md = desc->get();
  b.check(node->set(CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ad), "matmul a");
  b.check(node->set(CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bd), "matmul b");
  b.check(node->set(CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd), "matmul c");
  b.check(node->set(CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &md), "matmul descriptor");
  if (b.ok()) b.check(node->finalize(), "matmul operation finalize");
  parts.push_back(std::move(desc));
  return node;
}

// y = reduce(x) over the dims where y has size 1, in fp32.
std::unique_ptr<Descriptor> reduction(Builder& b, std::vector<std::unique_ptr<Descriptor>>& parts,
                                      cudnnReduceTensorOp_t op, const Descriptor& x, const Descriptor& y) {
  auto desc = std::make_unique<Descriptor>(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
  const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  b.check(desc->set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &op), "reduction operator");
  b.check(desc->set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp), "reduction compute type");
  if (b.ok()) b.check(desc->finalize(), "reduction finalize");
  auto node = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
  cudnnBackendDescriptor_t xd = x.get(), yd = y.get(), rd = desc->get();
  b.check(node->set(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd), "reduction x");
  b.check(node->set(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd), "reduction y");
  b.check(node->set(CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd),
          "reduction descriptor");
  if (b.ok()) b.check(node->finalize(), "reduction operation finalize");
  parts.push_back(std::move(desc));
  return node;
}

// Ways of writing the same attention, tried in order until one gets a plan. cuDNN matches the
// graph against the patterns its fused engines implement, and the frontend libraries that feed
// it write two details in ways that changed over releases: whether the softmax also computes its
// log-sum-exp statistics (into a virtual tensor nobody reads: the training pattern's shape), and
// the precision the causal mask's index generators compute in.
struct Lowering {
  const char* name;
  bool softmax_stats;
  cudnnDataType_t index_math;
};
constexpr Lowering kLowerings[] = {
    {"softmax with statistics", true, CUDNN_DATA_FLOAT},
    {"softmax with statistics, int32 indices", true, CUDNN_DATA_INT32},
    {"softmax without statistics", false, CUDNN_DATA_FLOAT},
};

// What the causal mask writes over hidden scores: releases before 9.10 want the lowest float,
// not -inf.
float masked_score_for(size_t cudnn_version) {
  return cudnn_version < 91000 ? std::numeric_limits<float>::lowest() : -std::numeric_limits<float>::infinity();
}

}  // namespace

SdpaGraph::~SdpaGraph() = default;

std::unique_ptr<SdpaGraph> SdpaGraph::restore(cudnnHandle_t handle, const SdpaSpec& spec, const std::string& plan_json,
                                              int64_t engine) {
  auto plan = plan_from_json(handle, plan_json, engine);
  if (!plan) return nullptr;
  // Execution needs the spec (which tensors the variant pack names) and the plan, not the graph.
  auto g = std::unique_ptr<SdpaGraph>(new SdpaGraph());
  g->spec_ = spec;
  g->masked_score_ = masked_score_for(cudnnGetVersion());
  g->plans_.push_back(std::move(*plan));
  return g;
}

std::unique_ptr<SdpaGraph> SdpaGraph::build(cudnnHandle_t handle, const SdpaSpec& spec, size_t limit,
                                            std::string& log) {
  // cuDNN 9.10.0 and 9.10.1 compute fp16/bf16 fused attention wrongly in some configurations
  // (NVIDIA's frontend refuses them); older releases want the lowest float, not -inf, for
  // masked scores.
  const size_t version = cudnnGetVersion();
  if (version == 91000 || version == 91001) {
    log = "cuDNN " + std::to_string(version) + " has known fused-attention bugs";
    return nullptr;
  }
  const float masked_score = masked_score_for(version);

  const int64_t B = spec.q.dims.at(0), H = spec.q.dims.at(1), Sq = spec.q.dims.at(2), Skv = spec.k.dims.at(2);
  const GraphTensor scores{{B, H, Sq, Skv}, {H * Sq * Skv, Sq * Skv, Skv, 1}};
  const GraphTensor row_stat{{B, H, Sq, 1}, {H * Sq, Sq, 1, 1}};
  const GraphTensor scalar{{1, 1, 1, 1}, {1, 1, 1, 1}};
  // The first matmul reads Kᵀ: K's own memory described as [B, Hk, D, Skv].
  GraphTensor k_transposed = spec.k;
  std::swap(k_transposed.dims[2], k_transposed.dims[3]);
  std::swap(k_transposed.strides[2], k_transposed.strides[3]);

  std::string rejected;
  for (const Lowering& lowering : kLowerings) {
    if (!spec.causal && lowering.index_math != kLowerings[0].index_math) continue;  // no index generators
    auto g = std::unique_ptr<SdpaGraph>(new SdpaGraph());
    g->spec_ = spec;
    g->masked_score_ = masked_score;
    Builder b;
    try {
      auto& parts = g->parts_;
      std::vector<const Descriptor*> ops;
      auto keep = [&](std::unique_ptr<Descriptor> d) -> const Descriptor& {
        parts.push_back(std::move(d));
        return *parts.back();
      };
      auto op = [&](std::unique_ptr<Descriptor> d) { ops.push_back(&keep(std::move(d))); };
      int64_t next_virtual = kFirstVirtual;
      auto intermediate = [&](cudnnDataType_t type, const GraphTensor& shape) -> const Descriptor& {
        return keep(tensor(b, next_virtual++, type, shape, 16, /*is_virtual=*/true));
      };
      const Descriptor& q = keep(tensor(b, kQ, spec.io_type, spec.q, spec.alignment, false));
      const Descriptor& k = keep(tensor(b, kK, spec.io_type, k_transposed, spec.alignment, false));
      const Descriptor& v = keep(tensor(b, kV, spec.io_type, spec.v, spec.alignment, false));
      const Descriptor& o = keep(tensor(b, kO, spec.io_type, spec.o, spec.alignment, false));
      const Descriptor& scale = keep(tensor(b, kScale, CUDNN_DATA_FLOAT, scalar, 16, false, /*by_value=*/true));

      const Descriptor& s = intermediate(CUDNN_DATA_FLOAT, scores);
      op(matmul(b, parts, q, k, s));
      const Descriptor& scaled = intermediate(CUDNN_DATA_FLOAT, scores);
      op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_MUL), s, &scale, scaled));
      const Descriptor* current = &scaled;
      if (spec.bias) {
        const Descriptor& bias = keep(tensor(b, kBias, spec.io_type, *spec.bias, spec.alignment, false));
        const Descriptor& biased = intermediate(CUDNN_DATA_FLOAT, scores);
        op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_ADD), *current, &bias, biased));
        current = &biased;
      }
      if (spec.causal) {
        // Row (query) and column (key) index of every score; scores with row >= col are kept,
        // the others replaced by the masked value.
        PointwiseOp row_index(CUDNN_POINTWISE_GEN_INDEX, lowering.index_math), col_index = row_index;
        row_index.axis = 2;
        col_index.axis = 3;
        const Descriptor& row = intermediate(CUDNN_DATA_INT32, scores);
        op(pointwise(b, parts, row_index, *current, nullptr, row));
        const Descriptor& col = intermediate(CUDNN_DATA_INT32, scores);
        op(pointwise(b, parts, col_index, *current, nullptr, col));
        const Descriptor& visible = intermediate(CUDNN_DATA_BOOLEAN, scores);
        op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN), row, &col, visible));
        const Descriptor& hidden =
            keep(tensor(b, kMaskedScore, CUDNN_DATA_FLOAT, scalar, 16, false, /*by_value=*/true));
        const Descriptor& masked = intermediate(CUDNN_DATA_FLOAT, scores);
        op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_BINARY_SELECT), *current, &hidden, masked, &visible));
        current = &masked;
      }
      // Softmax over the keys: exp(s - max) / sum, the probabilities in the inputs' type (the
      // second matmul's A operand).
      const Descriptor& row_max = intermediate(CUDNN_DATA_FLOAT, row_stat);
      op(reduction(b, parts, CUDNN_REDUCE_TENSOR_MAX, *current, row_max));
      const Descriptor& shifted = intermediate(CUDNN_DATA_FLOAT, scores);
      op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_SUB), *current, &row_max, shifted));
      const Descriptor& exps = intermediate(CUDNN_DATA_FLOAT, scores);
      op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_EXP), shifted, nullptr, exps));
      const Descriptor& row_sum = intermediate(CUDNN_DATA_FLOAT, row_stat);
      op(reduction(b, parts, CUDNN_REDUCE_TENSOR_ADD, exps, row_sum));
      if (lowering.softmax_stats) {  // max + log(sum), left virtual: inference reads no statistics
        const Descriptor& log_sum = intermediate(CUDNN_DATA_FLOAT, row_stat);
        op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_LOG), row_sum, nullptr, log_sum));
        const Descriptor& stats = intermediate(CUDNN_DATA_FLOAT, row_stat);
        op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_ADD), row_max, &log_sum, stats));
      }
      const Descriptor& probabilities = intermediate(spec.io_type, scores);
      op(pointwise(b, parts, PointwiseOp(CUDNN_POINTWISE_DIV), exps, &row_sum, probabilities));
      op(matmul(b, parts, probabilities, v, o));
      g->graph_ = operation_graph(b, handle, ops);
    } catch (const NetworkError& e) {  // a descriptor cuDNN could not even create
      log = e.what();
      return nullptr;
    }
    if (!b.ok()) {
      rejected += std::string(rejected.empty() ? "" : "; ") + lowering.name + ": " + b.error();
      continue;
    }
    std::string skipped;
    g->plans_ = finalized_plans(handle, *g->graph_, limit, /*skip_lossy=*/false, &skipped);
    if (g->plans_.empty()) {
      rejected += std::string(rejected.empty() ? "" : "; ") + lowering.name + ": no plan (" + skipped + ")";
      continue;
    }
    log = lowering.name + (rejected.empty() ? std::string() : " (after " + rejected + ")");
    return g;
  }
  log = rejected;
  return nullptr;
}

void SdpaGraph::keep_only(size_t i) {
  GraphPlan chosen = std::move(plans_.at(i));
  plans_.clear();
  plans_.push_back(std::move(chosen));
}

cudnnStatus_t SdpaGraph::execute(cudnnHandle_t handle, size_t i, const SdpaPointers& data, float scale,
                                 void* workspace) const {
  // By-value scalars are read from host memory during the call.
  std::vector<int64_t> uids{kQ, kK, kV, kO, kScale};
  std::vector<void*> pointers{const_cast<void*>(data.q), const_cast<void*>(data.k), const_cast<void*>(data.v), data.o,
                              &scale};
  if (spec_.bias) uids.push_back(kBias), pointers.push_back(const_cast<void*>(data.bias));
  if (spec_.causal) uids.push_back(kMaskedScore), pointers.push_back(const_cast<float*>(&masked_score_));
  return execute_plan(handle, plans_.at(i), uids, pointers, workspace);
}

}  // namespace kiln::engine::cuda::dnn

#endif  // KILN_HAS_CUDNN
