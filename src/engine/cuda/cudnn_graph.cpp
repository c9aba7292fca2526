// cuDNN's graph (backend) API for convolutions: see cudnn_graph.h.
#ifdef KILN_HAS_CUDNN
#include "engine/cuda/cudnn_graph.h"

#include <algorithm>

#include "engine/cuda/internal.h"

namespace kiln::engine::cuda::dnn {

Descriptor::Descriptor(cudnnBackendDescriptorType_t type) {
  const cudnnStatus_t s = cudnnBackendCreateDescriptor(type, &d_);
  if (s != CUDNN_STATUS_SUCCESS)
    throw NetworkError(std::string("cuDNN: create backend descriptor: ") + cudnnGetErrorString(s));
}

Descriptor::~Descriptor() {
  if (d_) cudnnBackendDestroyDescriptor(d_);
}

cudnnStatus_t Descriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                              const void* values) {
  return cudnnBackendSetAttribute(d_, name, type, count, values);
}

cudnnStatus_t Descriptor::finalize() { return cudnnBackendFinalize(d_); }

int64_t common_alignment(std::initializer_list<const void*> ptrs) {
  int64_t a = 16;
  for (const void* p : ptrs)
    if (p)
      while (a > 1 && reinterpret_cast<uintptr_t>(p) % uintptr_t(a) != 0) a /= 2;
  return a;
}

bool fusable_activation(const ActivationParams& a) {
  switch (a.op) {
    case ActivationOp::kRelu: case ActivationOp::kSigmoid: case ActivationOp::kTanh: case ActivationOp::kGeluErf:
    case ActivationOp::kGeluTanh: case ActivationOp::kSilu: case ActivationOp::kClip:
      return true;
    default:
      return false;
  }
}

void Builder::check(cudnnStatus_t s, const char* step) {
  if (status_ == CUDNN_STATUS_SUCCESS && s != CUDNN_STATUS_SUCCESS) status_ = s, step_ = step;
}

std::string Builder::error() const {
  return ok() ? std::string() : step_ + ": " + cudnnGetErrorString(status_);
}

std::unique_ptr<Descriptor> tensor(Builder& b, int64_t uid, cudnnDataType_t type, const GraphTensor& t,
                                   int64_t alignment, bool is_virtual, bool by_value) {
  auto d = std::make_unique<Descriptor>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  b.check(d->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type), "tensor data type");
  b.check(d->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, int64_t(t.dims.size()), t.dims.data()),
          "tensor dims");
  b.check(d->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, int64_t(t.strides.size()), t.strides.data()),
          "tensor strides");
  b.check(d->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor uid");
  b.check(d->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment), "tensor alignment");
  b.check(d->set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual), "tensor virtual");
  if (by_value) b.check(d->set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value), "tensor by value");
  if (b.ok()) b.check(d->finalize(), "tensor finalize");
  return d;
}

std::unique_ptr<Descriptor> pointwise(Builder& b, std::vector<std::unique_ptr<Descriptor>>& parts,
                                      const PointwiseOp& op, const Descriptor& x, const Descriptor* b_in,
                                      const Descriptor& y, const Descriptor* t_in) {
  auto pw = std::make_unique<Descriptor>(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  b.check(pw->set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &op.mode), "pointwise mode");
  b.check(pw->set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &op.math), "pointwise precision");
  if (op.relu_lower_clip)
    b.check(pw->set(CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP, CUDNN_TYPE_DOUBLE, 1, &*op.relu_lower_clip),
            "relu lower clip");
  if (op.relu_upper_clip)
    b.check(pw->set(CUDNN_ATTR_POINTWISE_RELU_UPPER_CLIP, CUDNN_TYPE_DOUBLE, 1, &*op.relu_upper_clip),
            "relu upper clip");
  if (op.swish_beta)
    b.check(pw->set(CUDNN_ATTR_POINTWISE_SWISH_BETA, CUDNN_TYPE_DOUBLE, 1, &*op.swish_beta), "swish beta");
  if (op.axis) b.check(pw->set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &*op.axis), "pointwise axis");
  if (b.ok()) b.check(pw->finalize(), "pointwise finalize");
  auto node = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  cudnnBackendDescriptor_t pwd = pw->get(), xd = x.get(), yd = y.get();
  b.check(node->set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pwd),
          "pointwise operation descriptor");
  b.check(node->set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd), "pointwise x");
  if (b_in) {
    cudnnBackendDescriptor_t bd = b_in->get();
    b.check(node->set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bd), "pointwise b");
  }
  if (t_in) {
    cudnnBackendDescriptor_t td = t_in->get();
    b.check(node->set(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &td), "pointwise t");
  }
  b.check(node->set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd), "pointwise y");
  if (b.ok()) b.check(node->finalize(), "pointwise operation finalize");
  parts.push_back(std::move(pw));
  return node;
}

std::unique_ptr<Descriptor> operation_graph(Builder& b, cudnnHandle_t handle,
                                            const std::vector<const Descriptor*>& ops) {
  auto graph = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  std::vector<cudnnBackendDescriptor_t> handles;
  for (const Descriptor* op : ops) handles.push_back(op->get());
  b.check(graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(handles.size()),
                     handles.data()),
          "graph operations");
  b.check(graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle), "graph handle");
  if (b.ok()) b.check(graph->finalize(), "graph finalize");
  return graph;
}

std::vector<GraphPlan> finalized_plans(cudnnHandle_t handle, const Descriptor& graph, size_t limit, bool skip_lossy,
                                       std::string* skipped) {
  std::vector<GraphPlan> out;
  auto note = [&](const std::string& why) {
    if (skipped) *skipped += (skipped->empty() ? "" : "; ") + why;
  };
  // Heuristic A ranks the engines; the fallback list adds the ones it leaves out.
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    const char* mode_name = mode == CUDNN_HEUR_MODE_A ? "heuristic A" : "fallback heuristic";
    Descriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendDescriptor_t gd = graph.get();
    cudnnStatus_t st = heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gd);
    if (st == CUDNN_STATUS_SUCCESS) st = heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (st == CUDNN_STATUS_SUCCESS) st = heur.finalize();
    int64_t count = 0;
    if (st == CUDNN_STATUS_SUCCESS)
      st = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                    nullptr);
    if (st != CUDNN_STATUS_SUCCESS || count <= 0) {
      note(std::string(mode_name) + (st != CUDNN_STATUS_SUCCESS ? std::string(": ") + cudnnGetErrorString(st)
                                                                 : std::string(": no engine")));
      continue;
    }
    std::vector<std::unique_ptr<Descriptor>> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      configs.push_back(std::make_unique<Descriptor>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
      raw.push_back(configs.back()->get());
    }
    int64_t returned = 0;
    st = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                  &returned, raw.data());
    if (st != CUDNN_STATUS_SUCCESS) {
      note(std::string(mode_name) + " results: " + cudnnGetErrorString(st));
      continue;
    }
    for (int64_t i = 0; i < returned && out.size() < limit; ++i) {
      // The engine behind the config: its index (duplicates across the two lists are skipped) and
      // numerical notes (fp16 accumulation or down-converted inputs would trade accuracy for speed).
      Descriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      cudnnBackendDescriptor_t ed = engine.get();
      int64_t n = 0, index = -1;
      if (cudnnBackendGetAttribute(raw[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &ed) !=
          CUDNN_STATUS_SUCCESS)
        continue;
      cudnnBackendGetAttribute(ed, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index);
      if (std::any_of(out.begin(), out.end(), [&](const GraphPlan& p) { return p.engine == index; })) continue;
      if (skip_lossy) {
        cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
        int64_t note_count = 0;
        cudnnBackendGetAttribute(ed, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &note_count, notes);
        bool lossy = false;
        for (int64_t k = 0; k < note_count; ++k)
          lossy |= notes[k] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS ||
                   notes[k] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION;
        if (lossy) {
          note("engine " + std::to_string(index) + ": lossy numerical note");
          continue;
        }
      }
      GraphPlan p;
      p.engine = index;
      p.plan = std::make_unique<Descriptor>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      cudnnBackendDescriptor_t cfg = raw[i];
      st = p.plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
      if (st == CUDNN_STATUS_SUCCESS)
        st = p.plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg);
      if (st == CUDNN_STATUS_SUCCESS) st = p.plan->finalize();
      if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendGetAttribute(p.plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                      &p.workspace);
      if (st != CUDNN_STATUS_SUCCESS) {
        // This engine cannot run the graph (layout, alignment, shape): the next one may.
        note("engine " + std::to_string(index) + ": " + cudnnGetErrorString(st));
        continue;
      }
      out.push_back(std::move(p));
    }
  }
  return out;
}

cudnnStatus_t execute_plan(cudnnHandle_t handle, const GraphPlan& plan, const std::vector<int64_t>& uids,
                           const std::vector<void*>& pointers, void* workspace) {
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  const int64_t n = int64_t(uids.size());
  cudnnStatus_t st = pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids.data());
  if (st == CUDNN_STATUS_SUCCESS)
    st = pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, pointers.data());
  if (st == CUDNN_STATUS_SUCCESS) st = pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  if (st == CUDNN_STATUS_SUCCESS) st = pack.finalize();
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(handle, plan.plan->get(), pack.get());
  return st;
}

namespace {

// Unique ids of the graph's tensors; intermediates (virtual, fp32) count up from kFirstVirtual.
enum : int64_t { kX = 1, kW, kY, kBias, kResidual, kFirstVirtual = 100 };

// The pointwise operation computing a fusable activation.
PointwiseOp activation_op(const ActivationParams& a) {
  PointwiseOp op;
  switch (a.op) {
    case ActivationOp::kSigmoid: op.mode = CUDNN_POINTWISE_SIGMOID_FWD; break;
    case ActivationOp::kTanh: op.mode = CUDNN_POINTWISE_TANH_FWD; break;
    case ActivationOp::kGeluErf: op.mode = CUDNN_POINTWISE_GELU_FWD; break;
    case ActivationOp::kGeluTanh: op.mode = CUDNN_POINTWISE_GELU_APPROX_TANH_FWD; break;
    case ActivationOp::kSilu:
      op.mode = CUDNN_POINTWISE_SWISH_FWD;
      op.swish_beta = 1.0;
      break;
    case ActivationOp::kClip:  // relu with both clips
      op.mode = CUDNN_POINTWISE_RELU_FWD;
      op.relu_lower_clip = a.alpha;
      op.relu_upper_clip = a.beta;
      break;
    default: op.mode = CUDNN_POINTWISE_RELU_FWD;
  }
  return op;
}

}  // namespace

std::unique_ptr<ConvGraph> ConvGraph::build(cudnnHandle_t handle, const ConvGraphSpec& spec) {
  if (spec.activation && !fusable_activation(*spec.activation)) return nullptr;
  auto g = std::unique_ptr<ConvGraph>(new ConvGraph());
  g->spec_ = spec;
  Builder b;
  auto& parts = g->parts_;
  const bool epilogue = spec.bias || spec.residual || spec.activation;
  auto x = tensor(b, kX, spec.io_type, spec.x, spec.alignment, false);
  auto w = tensor(b, kW, spec.io_type, spec.w, spec.alignment, false);
  auto y = tensor(b, kY, spec.io_type, spec.y, spec.alignment, false);
  int64_t next_virtual = kFirstVirtual;
  // The convolution writes y directly, or an fp32 intermediate the epilogue reads.
  auto conv_out = epilogue ? tensor(b, next_virtual++, CUDNN_DATA_FLOAT, spec.y, spec.alignment, true)
                           : nullptr;

  const int64_t nsp = int64_t(spec.padding.size());
  auto conv = std::make_unique<Descriptor>(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp), "convolution compute type");
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode), "convolution mode");
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &nsp), "convolution spatial dims");
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, nsp, spec.dilation.data()), "dilations");
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, nsp, spec.stride.data()), "strides");
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, nsp, spec.padding.data()), "pre-paddings");
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, nsp, spec.padding.data()), "post-paddings");
  if (b.ok()) b.check(conv->finalize(), "convolution finalize");

  std::vector<std::unique_ptr<Descriptor>> ops;
  auto conv_op = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  {
    const float alpha = 1.f, beta = 0.f;
    cudnnBackendDescriptor_t xd = x->get(), wd = w->get(), yd = (conv_out ? conv_out : y)->get(), cd = conv->get();
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd), "convolution x");
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wd), "convolution w");
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd), "convolution y");
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd),
            "convolution descriptor");
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha), "alpha");
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta), "beta");
    if (b.ok()) b.check(conv_op->finalize(), "convolution operation finalize");
  }
  ops.push_back(std::move(conv_op));

  // Epilogue: (+bias) (+residual) (act), kiln's order; each step's output is the next one's input,
  // the last one writes y.
  const Descriptor* current = conv_out.get();
  int steps = int(spec.bias) + int(spec.residual) + int(bool(spec.activation));
  auto step_out = [&]() -> const Descriptor* {
    if (--steps == 0) return y.get();
    parts.push_back(tensor(b, next_virtual++, CUDNN_DATA_FLOAT, spec.y, spec.alignment, true));
    return parts.back().get();
  };
  if (spec.bias) {
    GraphTensor bt;
    bt.dims.assign(spec.y.dims.size(), 1);
    bt.dims[1] = spec.y.dims[1];
    bt.strides.assign(spec.y.dims.size(), spec.y.dims[1]);
    bt.strides[1] = 1;
    parts.push_back(tensor(b, kBias, spec.io_type, bt, spec.alignment, false));
    const Descriptor* bias = parts.back().get();
    const Descriptor* out = step_out();
    ops.push_back(pointwise(b, parts, PointwiseOp{CUDNN_POINTWISE_ADD}, *current, bias, *out));
    current = out;
  }
  if (spec.residual) {
    parts.push_back(tensor(b, kResidual, spec.io_type, spec.y, spec.alignment, false));
    const Descriptor* residual = parts.back().get();
    const Descriptor* out = step_out();
    ops.push_back(pointwise(b, parts, PointwiseOp{CUDNN_POINTWISE_ADD}, *current, residual, *out));
    current = out;
  }
  if (spec.activation) {
    const Descriptor* out = step_out();
    ops.push_back(pointwise(b, parts, activation_op(*spec.activation), *current, nullptr, *out));
  }

  std::vector<const Descriptor*> op_list;
  for (auto& op : ops) op_list.push_back(op.get());
  g->graph_ = operation_graph(b, handle, op_list);
  if (!b.ok()) return nullptr;
  for (auto* keep : {&x, &w, &y, &conv_out, &conv}) parts.push_back(std::move(*keep));
  for (auto& op : ops) parts.push_back(std::move(op));
  return g;
}

std::vector<ConvGraphPlan> ConvGraph::plans(cudnnHandle_t handle, size_t limit) const {
  return finalized_plans(handle, *graph_, limit, /*skip_lossy=*/true);
}

void ConvGraph::execute(cudnnHandle_t handle, const ConvGraphPlan& plan, void* x, void* w, void* y, void* bias,
                        void* residual, void* workspace) const {
  std::vector<int64_t> uids{kX, kW, kY};
  std::vector<void*> ptrs{x, w, y};
  if (spec_.bias) uids.push_back(kBias), ptrs.push_back(bias);
  if (spec_.residual) uids.push_back(kResidual), ptrs.push_back(residual);
  const cudnnStatus_t st = execute_plan(handle, plan, uids, ptrs, workspace);
  if (st != CUDNN_STATUS_SUCCESS)
    throw NetworkError("cuDNN graph convolution (" + plan.name() + "): " + cudnnGetErrorString(st));
}

std::string plan_to_json(const ConvGraphPlan& plan) {
  int64_t size = 0;
  if (!plan.plan ||
      cudnnBackendGetAttribute(plan.plan->get(), CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, 0,
                               &size, nullptr) != CUDNN_STATUS_SUCCESS ||
      size <= 0)
    return {};
  std::string json(size_t(size), '\0');
  int64_t written = 0;
  if (cudnnBackendGetAttribute(plan.plan->get(), CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, size,
                               &written, json.data()) != CUDNN_STATUS_SUCCESS)
    return {};
  json.resize(size_t(std::min(written, size)));
  while (!json.empty() && json.back() == '\0') json.pop_back();  // cuDNN counts the terminator
  return json;
}

std::optional<ConvGraphPlan> plan_from_json(cudnnHandle_t handle, const std::string& json, int64_t engine) {
  if (json.empty()) return std::nullopt;
  ConvGraphPlan p;
  p.engine = engine;
  p.plan = std::make_unique<Descriptor>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  if (p.plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) != CUDNN_STATUS_SUCCESS ||
      // with its terminator, as cuDNN handed it out
      p.plan->set(CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, int64_t(json.size()) + 1,
                  json.c_str()) != CUDNN_STATUS_SUCCESS ||
      p.plan->finalize() != CUDNN_STATUS_SUCCESS)
    return std::nullopt;
  int64_t n = 0;
  if (cudnnBackendGetAttribute(p.plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                               &p.workspace) != CUDNN_STATUS_SUCCESS)
    return std::nullopt;
  return p;
}

}  // namespace kiln::engine::cuda::dnn

#endif  // KILN_HAS_CUDNN
