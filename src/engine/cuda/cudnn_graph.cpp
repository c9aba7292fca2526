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

bool fusable_activation(const ActivationParams& a) {
  switch (a.op) {
    case ActivationOp::kRelu: case ActivationOp::kSigmoid: case ActivationOp::kTanh: case ActivationOp::kGeluErf:
    case ActivationOp::kGeluTanh: case ActivationOp::kSilu: case ActivationOp::kClip:
      return true;
    default:
      return false;
  }
}

namespace {

// Every set and finalize of a graph under construction: the first failure rejects the graph.
struct Builder {
  cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
  void check(cudnnStatus_t s) {
    if (status == CUDNN_STATUS_SUCCESS) status = s;
  }
  bool ok() const { return status == CUDNN_STATUS_SUCCESS; }
};

// Unique ids of the graph's tensors; intermediates (virtual, fp32) count up from kFirstVirtual.
enum : int64_t { kX = 1, kW, kY, kBias, kResidual, kFirstVirtual = 100 };

std::unique_ptr<Descriptor> tensor(Builder& b, int64_t uid, cudnnDataType_t type, const GraphTensor& t,
                                   int64_t alignment, bool is_virtual) {
  auto d = std::make_unique<Descriptor>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  b.check(d->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type));
  b.check(d->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, int64_t(t.dims.size()), t.dims.data()));
  b.check(d->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, int64_t(t.strides.size()), t.strides.data()));
  b.check(d->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
  b.check(d->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment));
  b.check(d->set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual));
  if (b.ok()) b.check(d->finalize());
  return d;
}

// A pointwise operation out = mode(in0[, in1]) computed in fp32.
std::unique_ptr<Descriptor> pointwise(Builder& b, std::vector<std::unique_ptr<Descriptor>>& parts,
                                      cudnnPointwiseMode_t mode, const Descriptor& in0, const Descriptor* in1,
                                      const Descriptor& out, const ActivationParams* act = nullptr) {
  auto pw = std::make_unique<Descriptor>(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  b.check(pw->set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
  b.check(pw->set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec));
  if (act && act->op == ActivationOp::kClip) {  // relu with both clips
    const double lo = act->alpha, hi = act->beta;
    b.check(pw->set(CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP, CUDNN_TYPE_DOUBLE, 1, &lo));
    b.check(pw->set(CUDNN_ATTR_POINTWISE_RELU_UPPER_CLIP, CUDNN_TYPE_DOUBLE, 1, &hi));
  }
  if (act && act->op == ActivationOp::kSilu) {
    const double beta = 1.0;
    b.check(pw->set(CUDNN_ATTR_POINTWISE_SWISH_BETA, CUDNN_TYPE_DOUBLE, 1, &beta));
  }
  if (b.ok()) b.check(pw->finalize());
  auto op = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  cudnnBackendDescriptor_t pwd = pw->get(), x = in0.get(), y = out.get();
  b.check(op->set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pwd));
  b.check(op->set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
  if (in1) {
    cudnnBackendDescriptor_t bd = in1->get();
    b.check(op->set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bd));
  }
  b.check(op->set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
  if (b.ok()) b.check(op->finalize());
  parts.push_back(std::move(pw));
  return op;
}

cudnnPointwiseMode_t activation_mode(ActivationOp op) {
  switch (op) {
    case ActivationOp::kSigmoid: return CUDNN_POINTWISE_SIGMOID_FWD;
    case ActivationOp::kTanh: return CUDNN_POINTWISE_TANH_FWD;
    case ActivationOp::kGeluErf: return CUDNN_POINTWISE_GELU_FWD;
    case ActivationOp::kGeluTanh: return CUDNN_POINTWISE_GELU_APPROX_TANH_FWD;
    case ActivationOp::kSilu: return CUDNN_POINTWISE_SWISH_FWD;
    default: return CUDNN_POINTWISE_RELU_FWD;  // relu, and clip as relu with an upper clip
  }
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
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp));
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &nsp));
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, nsp, spec.dilation.data()));
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, nsp, spec.stride.data()));
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, nsp, spec.padding.data()));
  b.check(conv->set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, nsp, spec.padding.data()));
  if (b.ok()) b.check(conv->finalize());

  std::vector<std::unique_ptr<Descriptor>> ops;
  auto conv_op = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  {
    const float alpha = 1.f, beta = 0.f;
    cudnnBackendDescriptor_t xd = x->get(), wd = w->get(), yd = (conv_out ? conv_out : y)->get(), cd = conv->get();
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd));
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wd));
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd));
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd));
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha));
    b.check(conv_op->set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta));
    if (b.ok()) b.check(conv_op->finalize());
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
    ops.push_back(pointwise(b, parts, CUDNN_POINTWISE_ADD, *current, bias, *out));
    current = out;
  }
  if (spec.residual) {
    parts.push_back(tensor(b, kResidual, spec.io_type, spec.y, spec.alignment, false));
    const Descriptor* residual = parts.back().get();
    const Descriptor* out = step_out();
    ops.push_back(pointwise(b, parts, CUDNN_POINTWISE_ADD, *current, residual, *out));
    current = out;
  }
  if (spec.activation) {
    const Descriptor* out = step_out();
    ops.push_back(pointwise(b, parts, activation_mode(spec.activation->op), *current, nullptr, *out, &*spec.activation));
  }

  g->graph_ = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  std::vector<cudnnBackendDescriptor_t> op_handles;
  for (auto& op : ops) op_handles.push_back(op->get());
  b.check(g->graph_->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(op_handles.size()),
                         op_handles.data()));
  b.check(g->graph_->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
  if (b.ok()) b.check(g->graph_->finalize());
  if (!b.ok()) return nullptr;
  for (auto* keep : {&x, &w, &y, &conv_out, &conv}) parts.push_back(std::move(*keep));
  for (auto& op : ops) parts.push_back(std::move(op));
  return g;
}

std::vector<ConvGraphPlan> ConvGraph::plans(cudnnHandle_t handle, size_t limit) const {
  std::vector<ConvGraphPlan> out;
  // Heuristic A ranks the engines; the fallback list adds the ones it leaves out.
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    Descriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendDescriptor_t gd = graph_->get();
    if (heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gd) != CUDNN_STATUS_SUCCESS ||
        heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) != CUDNN_STATUS_SUCCESS ||
        heur.finalize() != CUDNN_STATUS_SUCCESS)
      continue;
    int64_t count = 0;
    if (cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr) != CUDNN_STATUS_SUCCESS || count <= 0)
      continue;
    std::vector<std::unique_ptr<Descriptor>> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      configs.push_back(std::make_unique<Descriptor>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
      raw.push_back(configs.back()->get());
    }
    int64_t returned = 0;
    if (cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                 &returned, raw.data()) != CUDNN_STATUS_SUCCESS)
      continue;
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
      if (std::any_of(out.begin(), out.end(), [&](const ConvGraphPlan& p) { return p.engine == index; })) continue;
      cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
      int64_t note_count = 0;
      cudnnBackendGetAttribute(ed, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                               CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &note_count, notes);
      bool lossy = false;
      for (int64_t k = 0; k < note_count; ++k)
        lossy |= notes[k] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS ||
                 notes[k] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION;
      if (lossy) continue;
      ConvGraphPlan p;
      p.engine = index;
      p.plan = std::make_unique<Descriptor>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      cudnnBackendDescriptor_t cfg = raw[i];
      if (p.plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) != CUDNN_STATUS_SUCCESS ||
          p.plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg) !=
              CUDNN_STATUS_SUCCESS ||
          p.plan->finalize() != CUDNN_STATUS_SUCCESS)
        continue;  // this engine cannot run the graph (layout, alignment, shape): the next one may
      if (cudnnBackendGetAttribute(p.plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                   &p.workspace) != CUDNN_STATUS_SUCCESS)
        continue;
      out.push_back(std::move(p));
    }
  }
  return out;
}

void ConvGraph::execute(cudnnHandle_t handle, const ConvGraphPlan& plan, void* x, void* w, void* y, void* bias,
                        void* residual, void* workspace) const {
  int64_t uids[5] = {kX, kW, kY, 0, 0};
  void* ptrs[5] = {x, w, y, nullptr, nullptr};
  int64_t n = 3;
  if (spec_.bias) uids[n] = kBias, ptrs[n++] = bias;
  if (spec_.residual) uids[n] = kResidual, ptrs[n++] = residual;
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  Builder b;
  b.check(pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids));
  b.check(pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs));
  b.check(pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace));
  if (b.ok()) b.check(pack.finalize());
  if (b.ok()) b.check(cudnnBackendExecute(handle, plan.plan->get(), pack.get()));
  if (!b.ok())
    throw NetworkError("cuDNN graph convolution (" + plan.name() + "): " + cudnnGetErrorString(b.status));
}

}  // namespace kiln::engine::cuda::dnn

#endif  // KILN_HAS_CUDNN
