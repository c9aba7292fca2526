// fp32 and bf16 2-d convolutions through oneDNN, whose JIT kernels use the processor's vector units
// (AVX-512 / AVX2, AMX for bf16; chosen by oneDNN at run time) on channels-last data. The builder
// lays CPU networks out channels last when kiln has oneDNN (to_channels_last), so these are the
// common case; other convolutions keep kiln's own kernels (convolution.cpp).
//
// A convolution's primitive and its weights, reordered once into the layout oneDNN's kernel
// wants, are cached per layer and shape; bias, residual add and the activation run as oneDNN
// post-ops in the same pass (activations oneDNN lacks follow as kiln's own pass).
//
// A 3x3 stride-1 fp32 convolution has two candidates, oneDNN's direct kernels and its Winograd
// ones (about half the multiplies, on blocked nChw16c data reordered in and out); the faster for
// the case is chosen by timing both on its first call and kept in the timing cache
// (timing_cache.h), as the CUDA backend chooses its convolution tactics.
#include "engine/cpu/onednn.h"

#include "engine/network_internal.h"

namespace kiln::engine::cpu {
namespace {

// KILN_CPU_CONV_TACTIC: auto (time the candidates), direct or winograd (where oneDNN has it).
// Checked wherever a CPU convolution runs, also where oneDNN does not take it (or the build has
// none) and the setting changes nothing: a misspelt value is an error, never silently ignored.
enum class ConvTactic { kAuto, kDirect, kWinograd };
ConvTactic conv_tactic() {
  return ConvTactic(detail::env_choice("KILN_CPU_CONV_TACTIC", {"auto", "direct", "winograd"}));
}

}  // namespace
}  // namespace kiln::engine::cpu

#ifdef KILN_HAS_DNNL
#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "engine/cpu/cpu_kernels.h"
#include "engine/cpu/onednn_common.h"
#include "engine/timing_cache.h"

namespace kiln::engine::cpu {

using namespace onednn;

namespace {

// oneDNN's right padding for PyTorch's output size: the left padding (PyTorch pads both sides
// alike and floors the window count, as oneDNN does), more only where the output has a window
// the floor would drop (pooling's ceil_mode).
int64_t right_padding(int64_t in, int64_t out, int64_t window, int64_t stride, int64_t pad) {
  return std::max(pad, (out - 1) * stride + window - in - pad);
}

// How oneDNN computes a convolution (a tactic; KILN_CPU_CONV_TACTIC forces one).
enum class ConvAlgorithm { kDirect, kWinograd };
const char* name_of(ConvAlgorithm a) { return a == ConvAlgorithm::kWinograd ? "winograd" : "direct"; }

struct ConvEntry {
  dnnl::convolution_forward primitive;
  dnnl::convolution_forward::primitive_desc pd;
  memory::desc src, dst, user_weights, bias, residual;  // the call's tensors (NHWC or NCHW)
  memory weights;                               // reordered (constant weights only)
  std::weak_ptr<const uint8_t> weights_source;  // the constant they came from: a dead one invalidates the entry
  bool activation_after = false;                // an activation oneDNN lacks: kiln's pass afterwards
  bool sum_residual = false;                    // the residual is dst's prior content, added by a sum post-op
  ConvAlgorithm algorithm = ConvAlgorithm::kDirect;
  // Winograd's kernels read and write blocked data: the input is reordered into this thread's
  // scratch, the output (holding the residual first, for the sum post-op) out of it.
  bool blocked = false;
  dnnl::reorder src_in, dst_in, dst_out;
};

PrimitiveCache<ConvEntry> conv_cache;

// The logical (N, C, H, W) dims of a 2-d tensor stored NHWC or NCHW.
memory::desc activation_desc(const std::vector<int64_t>& d, bool channels_last, DataType t) {
  if (channels_last) return memory::desc({d[0], d[3], d[1], d[2]}, dnnl_type(t), tag::nhwc);
  return memory::desc(to_dims(d), dnnl_type(t), tag::nchw);
}

std::shared_ptr<ConvEntry> make_conv(const ConvolutionParams& p, const TensorView& x, const TensorView& w,
                                     const TensorView& y, const TensorView* bias, const TensorView* residual,
                                     ConvAlgorithm algorithm) {
  auto e = std::make_shared<ConvEntry>();
  const bool cl = p.channels_last;
  e->src = activation_desc(x.dims, cl, x.dtype);
  e->dst = activation_desc(y.dims, cl, y.dtype);
  e->algorithm = algorithm;
  e->blocked = algorithm == ConvAlgorithm::kWinograd;
  // What the primitive reads and writes: the call's tensors, or their blocked copies.
  const memory::desc conv_src = e->blocked ? memory::desc(e->src.dims(), e->src.data_type(), tag::nChw16c) : e->src;
  const memory::desc conv_dst = e->blocked ? memory::desc(e->dst.dims(), e->dst.data_type(), tag::nChw16c) : e->dst;
  // Weights: KCRS (NCHW networks) or KRSC (channels last), grouped as G x (K/G) x (C/G) x R x S.
  const int64_t K = w.dims[0], R = cl ? w.dims[1] : w.dims[2], S = cl ? w.dims[2] : w.dims[3];
  const int64_t Cg = cl ? w.dims[3] : w.dims[1], G = p.groups;
  if (G == 1) {
    e->user_weights = memory::desc({K, Cg, R, S}, dnnl_type(w.dtype), cl ? tag::ohwi : tag::oihw);
  } else {
    e->user_weights = memory::desc({G, K / G, Cg, R, S}, dnnl_type(w.dtype), cl ? tag::gohwi : tag::goihw);
  }
  memory::desc any_weights(e->user_weights.dims(), dnnl_type(w.dtype), tag::any);
  const memory::dims stride = to_dims(p.stride.empty() ? std::vector<int64_t>{1, 1} : p.stride);
  memory::dims dilate{0, 0}, pad{0, 0};  // oneDNN's dilation counts the gaps: PyTorch's minus one
  for (size_t i = 0; i < 2; ++i) {
    if (i < p.dilation.size()) dilate[i] = p.dilation[i] - 1;
    if (i < p.padding.size()) pad[i] = p.padding[i];
  }
  const int64_t ins[2] = {cl ? x.dims[1] : x.dims[2], cl ? x.dims[2] : x.dims[3]};
  const int64_t outs[2] = {cl ? y.dims[1] : y.dims[2], cl ? y.dims[2] : y.dims[3]}, ks[2] = {R, S};
  memory::dims pad_r{0, 0};
  for (size_t i = 0; i < 2; ++i) pad_r[i] = right_padding(ins[i], outs[i], (dilate[i] + 1) * (ks[i] - 1) + 1, stride[i], pad[i]);

  dnnl::post_ops ops;
  if (residual && residual->dtype == y.dtype) {
    // dst += conv: oneDNN 2.6 keeps its brgemm kernels for a sum post-op, and falls back to older
    // JIT ones for a binary add of a whole tensor.
    ops.append_sum(1.f);
    e->sum_residual = true;
  } else if (residual) {
    if (e->blocked) throw dnnl::error(dnnl_unimplemented, "Winograd with a residual of another type");
    e->residual = activation_desc(y.dims, cl, residual->dtype);
    ops.append_binary(dnnl::algorithm::binary_add, e->residual);
  }
  if (p.activation) {
    dnnl::algorithm alg;
    float alpha, beta;
    if (eltwise_of(*p.activation, alg, alpha, beta)) ops.append_eltwise(1.f, alg, alpha, beta);
    else e->activation_after = true;
  }
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  // Scratch memory of the caller's (below), not oneDNN's: its own is shared process-wide, and one
  // program runs from many threads at once.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (bias) e->bias = memory::desc({K}, dnnl_type(bias->dtype), tag::x);
  const dnnl::algorithm alg = e->blocked ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
  auto desc = p.has_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, conv_src,
                                                            any_weights, e->bias, conv_dst, stride, dilate, pad, pad_r)
                         : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, conv_src,
                                                            any_weights, conv_dst, stride, dilate, pad, pad_r);
  e->pd = dnnl::convolution_forward::primitive_desc(desc, attr, cpu_engine());
  e->primitive = dnnl::convolution_forward(e->pd);
  if (e->blocked) {
    auto reorder = [](const memory::desc& from, const memory::desc& to) {
      return dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to));
    };
    e->src_in = reorder(e->src, e->pd.src_desc());
    e->dst_out = reorder(e->pd.dst_desc(), e->dst);
    if (e->sum_residual) e->dst_in = reorder(e->dst, e->pd.dst_desc());
  }
  return e;
}

// Byte offsets of a blocked convolution's pieces in this thread's scratch: oneDNN's scratchpad,
// then the blocked input and output, each 64-byte aligned.
struct BlockedScratch {
  size_t src_offset, dst_offset, total;
  explicit BlockedScratch(const ConvEntry& e) {
    auto aligned = [](size_t n) { return (n + 63) / 64 * 64; };
    src_offset = aligned(e.pd.scratchpad_desc().get_size());
    dst_offset = src_offset + aligned(e.pd.src_desc().get_size());
    total = dst_offset + aligned(e.pd.dst_desc().get_size());
  }
};

// Runs a convolution entry on the call's tensors: x in, y out (holding the residual beforehand when
// e.sum_residual; `residual_operand` for a binary-add residual). `b` holds the weights.
void run_conv(const ConvEntry& e, ArgBinding& b, const TensorView& x, const TensorView& y, const TensorView* bias,
              const TensorView* residual_operand, const std::optional<ActivationParams>& act) {
  if (!e.blocked) {
    b.bind(DNNL_ARG_SRC, e.src, x.data);
    b.bind(DNNL_ARG_DST, e.dst, y.data);
    execute_layer(e, b, bias, residual_operand, y, act);
    return;
  }
  const BlockedScratch layout(e);
  auto* scratch = static_cast<uint8_t*>(thread_scratch(layout.total));
  if (e.pd.scratchpad_desc().get_size() > 0) b.bind(DNNL_ARG_SCRATCHPAD, e.pd.scratchpad_desc(), scratch);
  b.bind(DNNL_ARG_SRC, e.pd.src_desc(), scratch + layout.src_offset);
  b.bind(DNNL_ARG_DST, e.pd.dst_desc(), scratch + layout.dst_offset);
  if (bias) b.bind(DNNL_ARG_BIAS, e.bias, bias->data);
  memory user_x(e.src, cpu_engine(), x.data), user_y(e.dst, cpu_engine(), y.data);
  dnnl::stream& s = thread_stream();
  run_on_team([&] {
    e.src_in.execute(s, user_x, b.args.at(DNNL_ARG_SRC));
    if (e.sum_residual) e.dst_in.execute(s, user_y, b.args.at(DNNL_ARG_DST));
    e.primitive.execute(s, b.args);
    e.dst_out.execute(s, b.args.at(DNNL_ARG_DST), user_y);
    s.wait();
  });
  if (!timing_tactics) ++executions, ++winograd_executions;
  if (e.activation_after) apply_activation_inplace(static_cast<float*>(y.data), y.numel(), *act);
}

}  // namespace

bool onednn_takes(const ConvolutionParams& p, const std::vector<TensorView>& inputs) {
  if (inputs.size() < 2) return false;
  const TensorView& x = inputs[0];
  const TensorView& w = inputs[1];
  // fp32, or bf16 (AMX / AVX-512-BF16 where the processor has them) with an activation oneDNN fuses
  // (kiln's pass afterwards works on fp32 outputs only).
  const bool bf16 = x.dtype == DataType::kBFloat16;
  dnnl::algorithm alg;
  float alpha, beta;
  if (bf16 && p.activation && !eltwise_of(*p.activation, alg, alpha, beta)) return false;
  return !p.transposed && x.dims.size() == 4 && w.dims.size() == 4 && (x.dtype == DataType::kFloat32 || bf16) &&
         w.dtype == x.dtype && x.numel() > 0 && have_onednn();
}

namespace {

// What selects a convolution's cached primitive (the cache's string key is made from it on a miss).
struct ConvSignature {
  std::vector<int64_t> x, w, y, stride, padding, dilation;
  int64_t groups = 1;
  int x_dtype = 0, y_dtype = 0, bias_dtype = -1, residual_dtype = -1, act = -1;
  double alpha = 0, beta = 0;
  bool channels_last = false;
  const void* weights = nullptr;  // the constant's bytes; null for computed weights

  bool operator==(const ConvSignature& o) const {
    return x == o.x && w == o.w && y == o.y && stride == o.stride && padding == o.padding && dilation == o.dilation &&
           groups == o.groups && x_dtype == o.x_dtype && y_dtype == o.y_dtype && bias_dtype == o.bias_dtype &&
           residual_dtype == o.residual_dtype && act == o.act && alpha == o.alpha && beta == o.beta &&
           channels_last == o.channels_last && weights == o.weights;
  }
  // The process cache's key: the case and the constant's address.
  std::string key() const { return weights ? case_key() + "|w" + std::to_string(uintptr_t(weights)) : case_key(); }
  // The case alone (shapes, types, epilogue): what a tactic choice depends on.
  std::string case_key() const {
    std::ostringstream k;
    k << x_dtype << y_dtype << (channels_last ? 'L' : 'F') << groups << (bias_dtype >= 0) << (residual_dtype >= 0);
    if (bias_dtype >= 0) k << bias_dtype;
    if (residual_dtype >= 0) k << residual_dtype;
    if (act >= 0) k << act << ',' << alpha << ',' << beta;
    for (auto* v : {&x, &w, &y, &stride, &padding, &dilation}) {
      k << '|';
      for (int64_t d : *v) k << d << ',';
    }
    return k.str();
  }
};

thread_local LayerSlots<ConvEntry, ConvSignature> t_conv_slots;

// What the CPU's tactic choices depend on: the processor, the threads they ran on and oneDNN.
// kTactics changes when the meaning of a key or choice changes.
std::string cpu_signature() {
  constexpr int kTactics = 1;
  std::string model = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon != std::string::npos) model = line.substr(line.find_first_not_of(' ', colon + 1));
    break;
  }
  std::ostringstream s;
  s << "cpu " << model << " threads" << max_threads() << " onednn" << onednn_version() << " isa"
    << int(dnnl::get_effective_cpu_isa()) << " tactics" << kTactics;
  return s.str();
}

std::atomic<TimingCache*> cpu_timing{nullptr};
TimingCache& cpu_timing_cache() {
  static TimingCache& cache = TimingCache::for_device(cpu_signature());
  cpu_timing.store(&cache);
  return cache;
}

// Whether Winograd is a candidate: fp32 3x3 stride-1 undilated ungrouped convolutions with
// constant weights (packed once into its layout) and a residual, if any, added in place.
bool winograd_candidate(const ConvolutionParams& p, const TensorView& x, const TensorView& w, const TensorView& y,
                        const TensorView* residual, bool constant_weights) {
  const bool cl = p.channels_last;
  const int64_t R = cl ? w.dims[1] : w.dims[2], S = cl ? w.dims[2] : w.dims[3];
  auto all_one = [](const std::vector<int64_t>& v) {
    return std::all_of(v.begin(), v.end(), [](int64_t d) { return d == 1; });
  };
  return constant_weights && x.dtype == DataType::kFloat32 && y.dtype == DataType::kFloat32 && p.groups == 1 &&
         R == 3 && S == 3 && all_one(p.stride) && all_one(p.dilation) && (!residual || residual->dtype == y.dtype);
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

// The entry for a convolution's case: direct where it is the only candidate or forced, else
// Winograd where forced, the timing cache's earlier choice, or the faster of the two timed on the
// call's input (best of three alternating runs each, into a scratch output; Winograd must win by
// 3%, since direct is the exact one). make(algorithm) builds a packed entry or throws dnnl::error.
std::shared_ptr<ConvEntry> choose_conv(const ConvolutionParams& p, const Layer& layer, const ConvSignature& sig,
                                       const TensorView& x, const TensorView& w, const TensorView& y,
                                       const TensorView* bias, const TensorView* residual, bool constant_weights,
                                       const std::function<std::shared_ptr<ConvEntry>(ConvAlgorithm)>& make) {
  const ConvTactic tactic = conv_tactic();
  if (tactic == ConvTactic::kDirect || !winograd_candidate(p, x, w, y, residual, constant_weights))
    return make(ConvAlgorithm::kDirect);
  auto winograd = [&]() -> std::shared_ptr<ConvEntry> {
    try {
      return make(ConvAlgorithm::kWinograd);
    } catch (const dnnl::error&) {  // none for this processor or epilogue
      return nullptr;
    }
  };
  if (tactic == ConvTactic::kWinograd) {
    auto e = winograd();
    return e ? e : make(ConvAlgorithm::kDirect);
  }
  TimingCache& cache = cpu_timing_cache();
  const std::string cache_key = "cpu conv " + sig.case_key();
  if (auto record = cache.find(cache_key)) {  // a record of another kind is timed again
    const std::string choice = record->value("choice", "");
    if (choice == "winograd" || choice == "direct") {
      detail::log_debug("convolution " + layer.name() + ": " + choice + " from the timing cache");
      std::shared_ptr<ConvEntry> e = choice == "winograd" ? winograd() : nullptr;
      return e ? e : make(ConvAlgorithm::kDirect);
    }
  }
  std::shared_ptr<ConvEntry> candidates[2] = {make(ConvAlgorithm::kDirect), winograd()};
  if (!candidates[1]) {  // nothing to time, now or in a later process
    cache.store(cache_key, {{"choice", "direct"}, {"winograd", "none"}});
    detail::log_debug("convolution " + layer.name() + ": direct; oneDNN has no Winograd kernel for this case");
    return candidates[0];
  }
  std::vector<float> scratch_out(size_t(y.numel()), 0.f);  // the residual, when added in place: zeros
  TensorView out = y;
  out.data = scratch_out.data();
  double best[2] = {1e300, 1e300};
  timing_tactics = true;
  struct Reset {
    ~Reset() { timing_tactics = false; }
  } reset;
  for (int run = 0; run < 4; ++run) {
    for (int c = 0; c < 2; ++c) {
      ArgBinding b;
      b.set(DNNL_ARG_WEIGHTS, candidates[c]->weights);
      const auto start = std::chrono::steady_clock::now();
      run_conv(*candidates[c], b, x, out, bias, nullptr, p.activation);
      if (run > 0) best[c] = std::min(best[c], elapsed_ms(start));  // run 0 warms up
    }
  }
  const int pick = best[1] < 0.97 * best[0] ? 1 : 0;
  const char* choice = name_of(candidates[pick]->algorithm);
  cache.store(cache_key, {{"choice", choice}, {"direct_ms", best[0]}, {"winograd_ms", best[1]}});
  if (detail::debug_logging()) {
    std::ostringstream msg;
    msg << "convolution " << layer.name() << ": direct " << best[0] << " ms, winograd " << best[1] << " ms: " << choice;
    detail::log_debug(msg.str());
  }
  return candidates[pick];
}

}  // namespace

bool onednn_convolution(const ConvolutionParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& w = call.inputs.at(1);
  const TensorView& y = call.outputs.at(0);
  if (!onednn_takes(p, call.inputs) || y.numel() == 0) {
    conv_tactic();  // checked, though it changes nothing here
    return false;
  }
  const Tensor* weight_tensor = call.layer.inputs().at(1);
  const Weights* constant = detail::is_constant(weight_tensor) ? &detail::weights_of(weight_tensor) : nullptr;
  ConvSignature sig{x.dims, w.dims, y.dims, p.stride, p.padding, p.dilation, p.groups, int(x.dtype), int(y.dtype)};
  if (p.has_bias) sig.bias_dtype = int(call.inputs.at(2).dtype);
  if (p.has_residual) sig.residual_dtype = int(call.inputs.back().dtype);
  if (p.activation) sig.act = int(p.activation->op), sig.alpha = p.activation->alpha, sig.beta = p.activation->beta;
  sig.channels_last = p.channels_last;
  if (constant) sig.weights = constant->data.get();

  const TensorView* residual = p.has_residual ? &call.inputs.back() : nullptr;
  const TensorView* bias = p.has_bias ? &call.inputs.at(2) : nullptr;
  auto [slot, e] = entry_for(t_conv_slots, conv_cache, &call.layer, sig, [&] {
    return choose_conv(p, call.layer, sig, x, w, y, bias, residual, constant != nullptr, [&](ConvAlgorithm a) {
      std::shared_ptr<ConvEntry> made = make_conv(p, x, w, y, bias, residual, a);
      if (constant) {  // reordered once from the network's constant (the bytes the input view shows)
        made->weights = pack_constant(made->user_weights, made->pd.weights_desc(), *constant);
        made->weights_source = constant->data;
      }
      return made;
    });
  });
  if (!e) return false;  // no oneDNN implementation for this case: kiln's own kernel runs it

  ArgBinding& b = slot->binding;
  if (constant) {
    b.set(DNNL_ARG_WEIGHTS, e->weights);
  } else {  // weights computed by the network: reordered on every call
    memory user(e->user_weights, cpu_engine(), w.data);
    memory weights(e->pd.weights_desc(), cpu_engine());
    dnnl::stream& s = thread_stream();
    dnnl::reorder(user, weights).execute(s, user, weights);
    s.wait();
    b.set(DNNL_ARG_WEIGHTS, weights);
  }
  // A residual added by the sum post-op is what dst holds beforehand: in place already (the memory
  // plan's in-place residuals) or copied there.
  if (residual && e->sum_residual && residual->data != y.data)
    std::memcpy(y.data, residual->data, size_t(y.numel()) * element_size(y.dtype));
  run_conv(*e, b, x, y, bias, e->sum_residual ? nullptr : residual, p.activation);
  return true;
}

uint64_t onednn_winograd_executions() { return winograd_executions.load(); }
bool onednn_winograd_available() {
  const auto isa = unsigned(dnnl::get_effective_cpu_isa()), avx512 = unsigned(dnnl::cpu_isa::avx512_core);
  return have_onednn() && (isa & avx512) == avx512;  // ISAs are bit sets of what they include
}
void flush_timing_choices() {
  if (TimingCache* cache = cpu_timing.load()) cache->flush();
}

}  // namespace kiln::engine::cpu

#else

namespace kiln::engine::cpu {
bool onednn_takes(const ConvolutionParams&, const std::vector<TensorView>&) { return false; }
bool onednn_convolution(const ConvolutionParams&, LayerCall&) {
  conv_tactic();  // checked, though it changes nothing without oneDNN
  return false;
}
uint64_t onednn_winograd_executions() { return 0; }
bool onednn_winograd_available() { return false; }
void flush_timing_choices() {}
}  // namespace kiln::engine::cpu

#endif
