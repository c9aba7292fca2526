// Engine-internal helpers shared by network.cpp, shape_inference.cpp, the builder passes and the
// plan loader. Not part of the public interface.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/network.h"

namespace kiln::engine::detail {

struct InferredOutput {
  DataType dtype;
  Shape shape;
};

// Checks a layer's inputs and infers its outputs. May normalize `params` (negative axes, default
// strides, generated symbol names) so that kernels and plans see one canonical form. Throws
// NetworkError "layer 'name' (Kind): ...". `fresh_symbol(prefix)` returns an unused symbol name.
std::vector<InferredOutput> infer_outputs(const std::string& layer_name, const std::vector<Tensor*>& inputs,
                                          LayerParams& params,
                                          const std::function<std::string(const std::string&)>& fresh_symbol);

// Broadcast of two shapes (numpy rules, right-aligned). Equal expressions or a constant 1 combine;
// unequal constants are an error (nullopt); two different symbolic dims: the first is kept and the
// runtime checks the actual sizes.
std::optional<Shape> broadcast(const Shape& a, const Shape& b);

// Names of LayerParams alternatives, by variant index.
const char* layer_kind_name_at(size_t index);
constexpr size_t kLayerKindCount = std::variant_size_v<LayerParams>;
// The last branch of every `if constexpr` chain over the LayerParams alternatives (printing, shape
// inference, plan JSON in and out): a kind without a case is a build error naming the chain, not
// an empty printout, undefined behaviour or parameters silently defaulted when a plan loads.
template <class P>
inline constexpr bool kNoCaseFor = false;

// Product of a shape's dims as an expression.
DimExpr numel(const Shape& s);

// Element conversion between any two dtypes (through double; f16/bf16 with round-to-nearest-even).
void convert_elements(const void* src, DataType from, void* dst, DataType to, int64_t n);
double element_as_double(const void* data, DataType t, int64_t index);

// An on/off environment switch (KILN_PROFILE, KILN_CUDA_GRAPHS, ...): `fallback` when unset or
// empty, off when "0", on otherwise.
inline bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::string(v) != "0";
}

// A setting with named values (KILN_CONV_TACTIC=cudnn, ...): the index of its value in `choices`,
// 0 (the first, the default) when unset or empty; any other value is the user's to fix, a
// SettingError naming the variable and every value it takes.
inline size_t env_choice(const char* name, const std::vector<const char*>& choices) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  for (size_t i = 0; i < choices.size(); ++i)
    if (std::string(v) == choices[i]) return i;
  std::string all;
  for (size_t i = 0; i < choices.size(); ++i)
    all += std::string(i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
  throw SettingError(std::string(name) + " must be " + all + ", not '" + v + "'");
}

// KILN_LOG=debug: the builder's passes report what they did on stderr.
bool debug_logging();

// While it lives, layers added to `net` take `origin` (Layer::origin). A builder pass rewriting a
// layer opens one with that layer's origin, so the layers it makes in its place (and the reshapes,
// permutes and casts around them) still name the op and source line they came from.
class OriginScope {
 public:
  OriginScope(Network& net, const std::string& origin) : net_(net) { net_.set_origin_of_new_layers(origin); }
  ~OriginScope() { net_.set_origin_of_new_layers(""); }
  OriginScope(const OriginScope&) = delete;
  OriginScope& operator=(const OriginScope&) = delete;

 private:
  Network& net_;
};
void log_debug(const std::string& msg);

// For the passes: whether `t` is marked as a network output, and its only consumer when it has
// exactly one and is not an output (a layer reading t twice, t + t, still counts as one).
inline bool is_network_output(const Network& net, const Tensor* t) {
  for (auto& [n, o] : net.outputs())
    if (o == t) return true;
  return false;
}
inline bool is_pure_reshape(const Layer* l) {
  const auto* p = l ? l->as<ShuffleParams>() : nullptr;
  return p && p->first_perm.empty() && p->second_perm.empty() && p->reshape;
}
// A one-op pointwise layer (each is one instruction of a FusedPointwise program), and any
// pointwise layer: one of those or a fused program of them.
inline bool is_single_pointwise(const Layer* l) {
  return l->as<ElementwiseParams>() || l->as<UnaryParams>() || l->as<ActivationParams>() || l->as<CastParams>() ||
         l->as<SelectParams>();
}
// (Row programs are not: their elements depend on their whole row.)
inline bool is_pointwise(const Layer* l) {
  const auto* f = l->as<FusedPointwiseParams>();
  return is_single_pointwise(l) || (f && f->row_length == 0);
}
// Row programs (passes_rows.cpp): whether a tensor of shape `s` holds one value per row (last dim
// 1, or a scalar), and which registers of `p` hold one value per row, given that of its inputs.
bool is_row_shaped(const Shape& s);
std::vector<char> row_registers(const FusedPointwiseParams& p, const std::vector<char>& input_is_row);
// The program of a pointwise layer: a FusedPointwise's own, or one instruction over the inputs.
FusedPointwiseParams pointwise_program(const Layer& layer);
// Dim by dim the same (symbolic dims by expression).
bool same_shape(const Shape& a, const Shape& b);
// What a fused program of `members` reads from outside them, each once, in first-use order:
// `tensors` become its input registers; one-element constants of rank <= `max_scalar_rank` go to
// `scalars` instead when `inline_scalars` (scalar_instruction makes each a kConstant).
struct ProgramInputs {
  std::vector<Tensor*> tensors;
  std::vector<const Tensor*> scalars;
};
ProgramInputs program_inputs(const std::vector<Layer*>& members, bool inline_scalars,
                             size_t max_scalar_rank = SIZE_MAX);
PointwiseInstr scalar_instruction(const Tensor* scalar);
// The permutations between NCHW and NHWC (channels-last layers).
inline const std::vector<int64_t> kToNhwc{0, 2, 3, 1}, kToNchw{0, 3, 1, 2};
// The permutation of a shuffle that is one permutation and nothing else (else null).
inline const std::vector<int64_t>* pure_permutation(const Layer* l) {
  const auto* s = l ? l->as<ShuffleParams>() : nullptr;
  if (!s || s->reshape || !s->second_perm.empty() || s->first_perm.empty()) return nullptr;
  return &s->first_perm;
}
// Whether `t` is a Constant layer's output, and its weights when it is.
inline bool is_constant(const Tensor* t) { return t->producer() && t->producer()->as<ConstantParams>(); }
inline const Weights& weights_of(const Tensor* t) { return t->producer()->as<ConstantParams>()->weights; }
// `t`'s dims when they are all known numbers.
inline std::optional<std::vector<int64_t>> static_dims(const Tensor* t) {
  if (!is_static(t->shape())) return std::nullopt;
  return evaluate(t->shape(), {});
}
// A shuffle layer that only permutes `x` (out dim i = x dim perm[i]); its output.
inline Tensor* add_permute(Network& net, const std::string& name, Tensor* x, std::vector<int64_t> perm) {
  ShuffleParams p;
  p.first_perm = std::move(perm);
  return net.add_shuffle(name, x, p)->output();
}
// When `l` is a pure permutation of another pure permutation's output: the two become one
// permutation of the first one's input (or none, when they cancel). True if it rewrote.
bool merge_permute_pair(Network& net, Layer* l);
inline Layer* sole_consumer(const Network& net, const Tensor* t) {
  if (is_network_output(net, t)) return nullptr;
  auto c = net.consumers(t);
  return c.size() == 1 ? c[0] : nullptr;
}

}  // namespace kiln::engine::detail
