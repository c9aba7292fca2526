// Linear layers, layer norms, activations and GEMMs through oneDNN, whose JIT kernels use the
// processor's vector units (AVX-512 / AVX2, AMX for bf16; chosen by oneDNN at run time), and the
// state kiln's oneDNN kernels share (onednn_common.h; convolutions: onednn_conv.cpp).
#include "engine/cpu/onednn.h"

#ifdef KILN_HAS_DNNL
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <tuple>

#include "engine/cpu/onednn_common.h"
#include "engine/network_internal.h"

namespace kiln::engine::cpu {

namespace onednn {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream s(cpu_engine());
  return s;
}

bool eltwise_of(const ActivationParams& a, dnnl::algorithm& alg, float& alpha, float& beta) {
  alpha = 0.f, beta = 0.f;
  switch (a.op) {
    case ActivationOp::kRelu: alg = dnnl::algorithm::eltwise_relu; return true;
    case ActivationOp::kLeakyRelu: alg = dnnl::algorithm::eltwise_relu, alpha = float(a.alpha); return true;
    case ActivationOp::kSigmoid: alg = dnnl::algorithm::eltwise_logistic; return true;
    case ActivationOp::kTanh: alg = dnnl::algorithm::eltwise_tanh; return true;
    case ActivationOp::kGeluErf: alg = dnnl::algorithm::eltwise_gelu_erf; return true;
    case ActivationOp::kGeluTanh: alg = dnnl::algorithm::eltwise_gelu_tanh; return true;
    case ActivationOp::kSilu: alg = dnnl::algorithm::eltwise_swish, alpha = 1.f; return true;
    case ActivationOp::kElu: alg = dnnl::algorithm::eltwise_elu, alpha = float(a.alpha); return true;
    case ActivationOp::kClip: alg = dnnl::algorithm::eltwise_clip, alpha = float(a.alpha), beta = float(a.beta); return true;
    case ActivationOp::kHardSwish: alg = dnnl::algorithm::eltwise_hardswish; return true;  // x * relu6(x + 3) / 6
    case ActivationOp::kMish: alg = dnnl::algorithm::eltwise_mish; return true;            // x * tanh(softplus(x))
    default: return false;
  }
}

void* thread_scratch(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { ::operator delete(data, std::align_val_t(64)); }
  };
  thread_local Buffer buffer;
  if (buffer.size < bytes) {
    ::operator delete(buffer.data, std::align_val_t(64));
    buffer.data = ::operator new(bytes, std::align_val_t(64));
    buffer.size = bytes;
  }
  return buffer.data;
}

thread_local std::chrono::steady_clock::time_point last_onednn_work{};
std::atomic<uint64_t> executions{0}, parallel_loops{0}, winograd_executions{0};
thread_local bool timing_tactics = false;

memory pack_constant(const memory::desc& user, const memory::desc& packed, const Weights& constant) {
  memory from(user, cpu_engine(), const_cast<uint8_t*>(constant.data.get()));
  memory to(packed, cpu_engine());
  dnnl::stream s(cpu_engine());
  try {
    dnnl::reorder(from, to).execute(s, from, to);
  } catch (const dnnl::error&) {
    // Winograd's weight layouts are reached from the plain [G]OIHW order only: through it.
    memory plain(memory::desc(user.dims(), user.data_type(), user.dims().size() == 4 ? tag::oihw : tag::goihw),
                 cpu_engine());
    dnnl::reorder(from, plain).execute(s, from, plain);
    dnnl::reorder(plain, to).execute(s, plain, to);
  }
  s.wait();
  return to;
}

}  // namespace onednn

using namespace onednn;

namespace {

std::mutex cache_mutex;
std::unordered_map<std::string, std::shared_ptr<dnnl::eltwise_forward>> eltwise_cache;

struct MatmulEntry {
  dnnl::matmul primitive;
  dnnl::matmul::primitive_desc pd;
  memory::desc src, dst, bias, residual;
  memory weights;                               // packed once from a constant (else the input, per call)
  std::weak_ptr<const uint8_t> weights_source;  // that constant: a dead one invalidates the entry
  bool activation_after = false;                // an activation oneDNN lacks: kiln's pass afterwards
};
PrimitiveCache<MatmulEntry> matmul_cache;
std::unordered_map<std::string, std::shared_ptr<dnnl::layer_normalization_forward>> norm_cache;

// What selects a linear layer's cached primitive (see ConvSignature, onednn_conv.cpp).
struct MatmulSignature {
  int64_t M = 0, N = 0, K = 0;
  int a_dtype = 0, y_dtype = 0, bias_dtype = -1, residual_dtype = -1, act = -1;
  double alpha = 0, beta = 0;
  bool transpose_b = false;
  const void* weights = nullptr;

  bool operator==(const MatmulSignature& o) const {
    return M == o.M && N == o.N && K == o.K && a_dtype == o.a_dtype && y_dtype == o.y_dtype &&
           bias_dtype == o.bias_dtype && residual_dtype == o.residual_dtype && act == o.act && alpha == o.alpha &&
           beta == o.beta && transpose_b == o.transpose_b && weights == o.weights;
  }
  std::string key() const {
    std::ostringstream k;
    k << "mm" << a_dtype << y_dtype << ',' << M << ',' << N << ',' << K << ',' << transpose_b << ',' << bias_dtype
      << ',' << residual_dtype;
    if (act >= 0) k << ',' << act << ',' << alpha << ',' << beta;
    if (weights) k << "|w" << weights;
    return k.str();
  }
};
thread_local LayerSlots<MatmulEntry, MatmulSignature> t_matmul_slots;
}  // namespace

bool onednn_matmul(const MatMulParams& p, LayerCall& call) {
  const TensorView& a = call.inputs.at(0);
  const TensorView& b = call.inputs.at(1);
  const TensorView& y = call.outputs.at(0);
  const Tensor* weight_tensor = call.layer.inputs().at(1);
  const bool bf16 = a.dtype == DataType::kBFloat16;
  const bool constant_b = detail::is_constant(weight_tensor);
  const size_t rb = b.dims.size();
  if (!have_onednn() || p.transpose_a || rb < 2 || a.dims.size() < 2 || !a.is_contiguous() || !b.is_contiguous() ||
      !(a.dtype == DataType::kFloat32 || bf16) || b.dtype != a.dtype || !(y.dtype == a.dtype || y.dtype == DataType::kFloat32))
    return false;
  // B one matrix (leading dims of 1, as converters broadcast a Linear's weight to A's rank).
  for (size_t d = 0; d + 2 < rb; ++d)
    if (b.dims[d] != 1) return false;
  const int64_t K = a.dims.back(), M = K ? a.numel() / K : 0;
  const int64_t N = p.transpose_b ? b.dims[rb - 2] : b.dims[rb - 1];
  if (M == 0 || N == 0 || K == 0 || (p.transpose_b ? b.dims[rb - 1] : b.dims[rb - 2]) != K) return false;
  if (!bf16 && !constant_b) return false;  // fp32: computed weights would be reordered every call
  const TensorView* bias = p.has_bias ? &call.inputs.at(2) : nullptr;
  const TensorView* residual = p.has_residual ? &call.inputs.back() : nullptr;
  if (bias && bias->numel() != N) return false;
  if (residual && (residual->numel() != M * N || !residual->is_contiguous())) return false;
  dnnl::algorithm alg;
  float alpha = 0, beta = 0;
  const bool fused_activation = p.activation && eltwise_of(*p.activation, alg, alpha, beta);
  // kiln's own pass after the matmul works on fp32 outputs only.
  if (p.activation && !fused_activation && y.dtype != DataType::kFloat32) return false;
  const Weights* constant = constant_b ? &detail::weights_of(weight_tensor) : nullptr;
  MatmulSignature sig{M, N, K, int(a.dtype), int(y.dtype)};
  if (bias) sig.bias_dtype = int(bias->dtype);
  if (residual) sig.residual_dtype = int(residual->dtype);
  if (p.activation) sig.act = int(p.activation->op), sig.alpha = p.activation->alpha, sig.beta = p.activation->beta;
  sig.transpose_b = p.transpose_b;
  if (constant) sig.weights = constant->data.get();

  auto [slot, e] = entry_for(t_matmul_slots, matmul_cache, &call.layer, sig, [&] {
    auto made = std::make_shared<MatmulEntry>();
    made->src = memory::desc({M, K}, dnnl_type(a.dtype), tag::ab);
    made->dst = memory::desc({M, N}, dnnl_type(y.dtype), tag::ab);
    const memory::desc user_weights({K, N}, dnnl_type(b.dtype), p.transpose_b ? tag::ba : tag::ab);
    // Constant weights: oneDNN's own blocked layout, packed once below; others as they are.
    const memory::desc weights = constant ? memory::desc({K, N}, dnnl_type(b.dtype), tag::any) : user_weights;
    if (bias) made->bias = memory::desc({1, N}, dnnl_type(bias->dtype), tag::ab);
    dnnl::post_ops ops;
    if (residual) {  // kiln's order: act(a·b + bias + residual)
      made->residual = memory::desc({M, N}, dnnl_type(residual->dtype), tag::ab);
      ops.append_binary(dnnl::algorithm::binary_add, made->residual);
    }
    if (fused_activation) ops.append_eltwise(1.f, alg, alpha, beta);
    made->activation_after = p.activation && !fused_activation;
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::desc desc = bias ? dnnl::matmul::desc(made->src, weights, made->bias, made->dst)
                                         : dnnl::matmul::desc(made->src, weights, made->dst);
    made->pd = dnnl::matmul::primitive_desc(desc, attr, cpu_engine());
    made->primitive = dnnl::matmul(made->pd);
    if (constant) {  // packed once from the network's constant (the bytes the input view shows)
      made->weights = pack_constant(user_weights, made->pd.weights_desc(), *constant);
      made->weights_source = constant->data;
    }
    return made;
  });
  if (!e) return false;
  ArgBinding& args = slot->binding;
  args.bind(DNNL_ARG_SRC, e->src, a.data);
  args.bind(DNNL_ARG_DST, e->dst, y.data);
  if (constant) args.set(DNNL_ARG_WEIGHTS, e->weights);
  else args.bind(DNNL_ARG_WEIGHTS, e->pd.weights_desc(), b.data);
  execute_layer(*e, args, bias, residual, y, p.activation);
  return true;
}

bool onednn_layer_norm(const NormalizationParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  if (p.kind != NormKind::kLayer || !team_is_hot() || !have_onednn() || x.dtype != y.dtype ||
      !(x.dtype == DataType::kFloat32 || x.dtype == DataType::kBFloat16) || !x.is_contiguous() || x.numel() == 0)
    return false;
  const int64_t rank = int64_t(x.dims.size());
  const int64_t first = canonical_axis(call.layer, p.first_axis, rank, "first_axis");
  const int64_t len = product(x.dims, size_t(first)), rows = x.numel() / len;
  size_t next = 1;
  const TensorView* scale = p.has_scale ? &call.inputs.at(next++) : nullptr;
  const TensorView* shift = p.has_bias ? &call.inputs.at(next++) : nullptr;
  for (const TensorView* t : {scale, shift})
    if (t && (t->numel() != len || !t->is_contiguous())) return false;
  std::ostringstream key;
  key << "ln" << int(x.dtype) << ',' << rows << ',' << len << ',' << p.epsilon << ',' << bool(scale) << bool(shift);
  std::shared_ptr<dnnl::layer_normalization_forward> prim;
  const memory::desc data({rows, len}, dnnl_type(x.dtype), tag::ab);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto& slot = norm_cache[key.str()];
    if (!slot) {
      auto flags = dnnl::normalization_flags::none;
      if (scale) flags = flags | dnnl::normalization_flags::use_scale;
      if (shift) flags = flags | dnnl::normalization_flags::use_shift;
      try {
        dnnl::layer_normalization_forward::desc desc(dnnl::prop_kind::forward_inference, data, float(p.epsilon),
                                                     flags);
        slot = std::make_shared<dnnl::layer_normalization_forward>(
            dnnl::layer_normalization_forward::primitive_desc(desc, cpu_engine()));
      } catch (const dnnl::error&) {
        return false;
      }
    }
    prim = slot;
  }
  // oneDNN takes the affine parameters in fp32: a bf16 model's are converted (one row's worth).
  thread_local std::vector<float> affine;
  affine.resize(size_t(2 * len));
  const memory::desc affine_desc({len}, memory::data_type::f32, tag::x);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(data, cpu_engine(), x.data)},
                                       {DNNL_ARG_DST, memory(data, cpu_engine(), y.data)}};
  for (auto [t, arg, offset] : {std::tuple{scale, DNNL_ARG_SCALE, int64_t{0}}, std::tuple{shift, DNNL_ARG_SHIFT, len}}) {
    if (!t) continue;
    float* f = affine.data() + offset;
    detail::convert_elements(t->data, t->dtype, f, DataType::kFloat32, len);
    args.emplace(arg, memory(affine_desc, cpu_engine(), f));
  }
  dnnl::stream s(cpu_engine());
  run_on_team([&] {
    prim->execute(s, args);
    s.wait();
  });
  ++executions;
  return true;
}

bool onednn_activation_inplace(float* data, int64_t n, const ActivationParams& act) {
  dnnl::algorithm alg;
  float alpha, beta;
  // Small tensors: a primitive's dispatch costs more than the loop.
  if (n < 4096 || !team_is_hot() || !eltwise_of(act, alg, alpha, beta) || !have_onednn()) return false;
  std::ostringstream key;
  key << "eltwise" << int(alg) << ',' << alpha << ',' << beta << ',' << n;
  std::shared_ptr<dnnl::eltwise_forward> prim;
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto& slot = eltwise_cache[key.str()];
    if (!slot) {
      memory::desc md({n}, memory::data_type::f32, tag::x);
      try {
        dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, alg, md, alpha, beta);
        slot = std::make_shared<dnnl::eltwise_forward>(dnnl::eltwise_forward::primitive_desc(desc, cpu_engine()));
      } catch (const dnnl::error&) {
        return false;
      }
    }
    prim = slot;
  }
  dnnl::stream s(cpu_engine());
  memory buf(memory::desc({n}, memory::data_type::f32, tag::x), cpu_engine(), data);
  run_on_team([&] {
    prim->execute(s, {{DNNL_ARG_SRC, buf}, {DNNL_ARG_DST, buf}});
    s.wait();
  });
  return true;
}

bool onednn_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
  // Small GEMMs (attention's per-head products) stay on OpenBLAS: waking the OpenMP team for each
  // costs more than it saves.
  if (double(M) * double(N) * double(K) < double(1 << 23) || !team_is_hot() || !have_onednn()) return false;
  dnnl_status_t status = dnnl_success;
  run_on_team([&] {
    status = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.f, A, ta ? M : K, B, tb ? K : N, 0.f, C, N);
  });
  return status == dnnl_success;
}

namespace {
// parallel_chunks' work on the OpenMP team while it is hot (see set_busy_team_runner).
bool run_chunks_on_busy_team(int64_t n, const std::function<void(int64_t, int64_t)>& part) {
  if (!team_is_hot() || !have_onednn()) return false;
  const int parts = int(std::min<int64_t>(n, max_threads()));
  run_on_team([&] {
#pragma omp parallel num_threads(parts)
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
      if (lo < hi) part(lo, hi);
    }
  });
  ++parallel_loops;
  return true;
}
const bool busy_team_registered = (set_busy_team_runner(&run_chunks_on_busy_team), true);
}  // namespace

bool onednn_parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n < 2 || !team_is_hot() || !have_onednn()) return false;
  run_on_team([&] {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) fn(i);
  });
  ++parallel_loops;
  return true;
}

void onednn_sgemm_here(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                       const float* B, int64_t ldb, float* C, int64_t ldc) {
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, 0.f, C, ldc);
}

bool have_onednn() { return detail::env_flag("KILN_CPU_ONEDNN", true); }
std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + '.' + std::to_string(v->minor) + '.' + std::to_string(v->patch);
}
uint64_t onednn_executions() { return executions.load(); }
uint64_t onednn_parallel_loops() { return parallel_loops.load(); }

}  // namespace kiln::engine::cpu

#else

namespace kiln::engine::cpu {
bool onednn_activation_inplace(float*, int64_t, const ActivationParams&) { return false; }
bool onednn_sgemm(bool, bool, int64_t, int64_t, int64_t, const float*, const float*, float*) { return false; }
bool onednn_parallel_for(int64_t, const std::function<void(int64_t)>&) { return false; }
bool onednn_matmul(const MatMulParams&, LayerCall&) { return false; }
bool onednn_layer_norm(const NormalizationParams&, LayerCall&) { return false; }
void onednn_sgemm_here(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                       float*, int64_t) {
  throw NetworkError("kiln was built without oneDNN");
}
bool have_onednn() { return false; }
std::string onednn_version() { return {}; }
uint64_t onednn_executions() { return 0; }
uint64_t onednn_parallel_loops() { return 0; }
}  // namespace kiln::engine::cpu

#endif
