// The network definition: what converters build and the builder optimizes (TensorRT's
// INetworkDefinition analog). Strongly typed tensors with symbolic shapes, and a closed set of
// layer kinds, each defined once by its parameter struct in `LayerParams`. Every add_* checks its
// inputs (rank, dtype, broadcastability) and throws engine::NetworkError naming the layer and what
// it got. The engine knows nothing of PyTorch.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "engine/dim_expr.h"
#include "engine/enum_list.h"

namespace kiln::engine {

#define KILN_DATA_TYPES(X) \
  X(kFloat32, "f32") X(kFloat16, "f16") X(kBFloat16, "bf16") X(kInt64, "i64") X(kInt32, "i32") X(kInt8, "i8") \
  X(kUInt8, "u8") X(kBool, "bool")
KILN_ENUM(DataType, KILN_DATA_TYPES)
const char* to_string(DataType t);  // "f32", "f16", "bf16", "i64", "i32", "i8", "u8", "bool"
size_t element_size(DataType t);
bool is_floating(DataType t);

struct NetworkError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ShapeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A KILN_* environment setting with a value kiln does not know (a tactic name): the user's to fix,
// reported as bad input (exit 2 in the CLI, kiln.InputError in Python).
struct SettingError : NetworkError {
  using NetworkError::NetworkError;
};

// Constant data held by a network or plan, shared rather than copied (weights of a program stay
// where the program mapped them until a plan is serialized).
struct Weights {
  DataType dtype = DataType::kFloat32;
  std::vector<int64_t> dims;
  std::shared_ptr<const uint8_t> data;  // aliasing shared_ptr into the owner's storage
  size_t nbytes() const;
  int64_t numel() const;
  // Copies `bytes` into fresh owned storage.
  static Weights copy_of(DataType dtype, std::vector<int64_t> dims, const void* bytes);
  template <class T>
  const T* as() const { return reinterpret_cast<const T*>(data.get()); }
};

// ---- Layer parameters: one struct per layer kind ------------------------------------------------

// kRemainder: Python's (the sign of the divisor).
#define KILN_BINARY_OPS(X)                                                                                 \
  X(kAdd, "add") X(kSub, "sub") X(kMul, "mul") X(kDiv, "div") X(kFloorDiv, "floor_div")                    \
  X(kTruncDiv, "trunc_div") X(kRemainder, "remainder") X(kFmod, "fmod") X(kPow, "pow") X(kMin, "min")      \
  X(kMax, "max") X(kEqual, "eq") X(kNotEqual, "ne") X(kLess, "lt") X(kLessEqual, "le") X(kGreater, "gt")   \
  X(kGreaterEqual, "ge") X(kAnd, "and") X(kOr, "or") X(kXor, "xor") X(kBitAnd, "bitand") X(kBitOr, "bitor") \
  X(kBitXor, "bitxor")
KILN_ENUM(BinaryOp, KILN_BINARY_OPS)
// kRound: half to even.
#define KILN_UNARY_OPS(X)                                                                                    \
  X(kExp, "exp") X(kLog, "log") X(kLog2, "log2") X(kLog1p, "log1p") X(kExpm1, "expm1") X(kSqrt, "sqrt")      \
  X(kRsqrt, "rsqrt") X(kAbs, "abs") X(kNeg, "neg") X(kSin, "sin") X(kCos, "cos") X(kTan, "tan")              \
  X(kAsin, "asin") X(kAcos, "acos") X(kAtan, "atan") X(kSinh, "sinh") X(kCosh, "cosh") X(kTanh, "tanh")      \
  X(kErf, "erf") X(kFloor, "floor") X(kCeil, "ceil") X(kRound, "round") X(kTrunc, "trunc") X(kSign, "sign") \
  X(kReciprocal, "reciprocal") X(kNot, "not") X(kIsNan, "isnan") X(kIsInf, "isinf") X(kBitNot, "bitnot")      \
  X(kLgamma, "lgamma") X(kDigamma, "digamma") X(kErfinv, "erfinv")
KILN_ENUM(UnaryOp, KILN_UNARY_OPS)
// Parameters (ActivationParams): kLeakyRelu alpha = slope; kElu alpha; kSoftplus alpha = beta,
// beta = threshold; kClip alpha = min, beta = max.
#define KILN_ACTIVATION_OPS(X)                                                                           \
  X(kRelu, "relu") X(kSigmoid, "sigmoid") X(kTanh, "tanh") X(kGeluErf, "gelu_erf")                       \
  X(kGeluTanh, "gelu_tanh") X(kSilu, "silu") X(kHardSigmoid, "hardsigmoid") X(kHardSwish, "hardswish")   \
  X(kLeakyRelu, "leaky_relu") X(kElu, "elu") X(kSoftplus, "softplus") X(kClip, "clip") X(kMish, "mish")
KILN_ENUM(ActivationOp, KILN_ACTIVATION_OPS)
const char* to_string(BinaryOp op);
const char* to_string(UnaryOp op);
const char* to_string(ActivationOp op);

struct ConstantParams { Weights weights; };
struct ElementwiseParams { BinaryOp op; };  // inputs a, b: same dtype, broadcastable; comparisons -> bool
struct UnaryParams { UnaryOp op; };
struct ActivationParams {
  ActivationOp op;
  double alpha = 0;
  double beta = 0;
};
// y = act(op(A) @ op(B) + bias): inputs A, B[, bias]. Ranks >= 2 (batch dims broadcast).
// Converters set only the transposes; the builder's epilogue fusion fills bias / activation.
struct MatMulParams {
  bool transpose_a = false;
  bool transpose_b = false;
  bool has_bias = false;                      // third input, broadcast to the output
  // Set by epilogue fusion: a last input of the output's shape added after the bias, before the
  // activation (a residual connection: y = act(a·b + bias + r)).
  bool has_residual = false;
  std::optional<ActivationParams> activation;
};
// inputs x [N, C, *spatial], weight, [bias]; 1d/2d/3d. transposed: weight [C_in, C_out/groups, *k].
struct ConvolutionParams {
  std::vector<int64_t> stride, padding, dilation, output_padding;
  int64_t groups = 1;
  bool transposed = false;
  bool has_bias = false;
  bool has_residual = false;  // as MatMulParams: a last input of the output's shape, added before the activation
  std::optional<ActivationParams> activation;  // filled by epilogue fusion
  // Set by the builder (to_channels_last, CUDA): 2-d only; x and y are [N, H, W, C], the weight
  // [C_out, kh, kw, C_in / groups] (cuDNN's fast tensor-core kernels work in this layout).
  bool channels_last = false;
};
#define KILN_POOL_TYPES(X) X(kMax, "max") X(kAverage, "avg")
KILN_ENUM(PoolType, KILN_POOL_TYPES)
// inputs x [N, C, *spatial]; adaptive when `adaptive_output` is set (kernel/stride ignored).
struct PoolingParams {
  PoolType type = PoolType::kMax;
  std::vector<int64_t> kernel, stride, padding, dilation;
  bool ceil_mode = false;
  bool count_include_pad = true;
  std::optional<int64_t> divisor_override;
  std::vector<int64_t> adaptive_output;
  bool channels_last = false;  // 2-d only: x and the output are [N, H, W, C] (set by to_channels_last)
};
#define KILN_REDUCE_OPS(X)                                                                             \
  X(kSum, "sum") X(kMean, "mean") X(kMax, "max") X(kMin, "min") X(kProd, "prod") X(kAny, "any")          \
  X(kAll, "all") X(kArgMax, "argmax") X(kArgMin, "argmin") X(kVar, "var") X(kNorm2, "norm2")
KILN_ENUM(ReduceOp, KILN_REDUCE_OPS)
// argmax/argmin take exactly one axis and output i64; kVar uses `correction`.
struct ReduceParams {
  ReduceOp op = ReduceOp::kSum;
  std::vector<int64_t> axes;  // normalized, non-negative, sorted
  bool keep_dims = false;
  double correction = 0;
};
struct SoftmaxParams { int64_t axis = -1; bool log = false; };
#define KILN_NORM_KINDS(X) X(kLayer, "layer") X(kBatch, "batch") X(kGroup, "group")
KILN_ENUM(NormKind, KILN_NORM_KINDS)
// kLayer: inputs x[, scale][, bias], normalizes over axes [first_axis, rank).
// kBatch (inference): inputs x, mean, var[, scale][, bias], channel axis 1.
// kGroup: inputs x[, scale][, bias], `groups` groups of the channel axis 1.
struct NormalizationParams {
  NormKind kind = NormKind::kLayer;
  int64_t first_axis = -1;
  int64_t groups = 1;
  double epsilon = 1e-5;
  bool has_scale = false;
  bool has_bias = false;
};
// TensorRT's shuffle: transpose by first_perm, reshape, transpose by second_perm; each optional.
// A reshape dim of -1 is inferred (at most one).
struct ShuffleParams {
  std::vector<int64_t> first_perm;
  std::optional<Shape> reshape;
  std::vector<int64_t> second_perm;
};
struct ConcatParams { int64_t axis = 0; };
// Per dimension: start, size, stride (stride may be negative); all may be symbolic.
struct SliceParams { Shape start, size, stride; };
// kAxis: index_select/embedding: out = data.shape[:axis] + idx.shape + data.shape[axis+1:];
// kElements: torch.gather: idx has data's rank, out = idx.shape.
#define KILN_GATHER_MODES(X) X(kAxis, "axis") X(kElements, "elements")
KILN_ENUM(GatherMode, KILN_GATHER_MODES)
struct GatherParams { GatherMode mode = GatherMode::kAxis; int64_t axis = 0; };  // inputs data, indices (i64/i32)
// kMax / kMin propagate NaN (torch.maximum's rule, scatter_reduce's amax / amin); kMul multiplies.
#define KILN_SCATTER_REDUCES(X) X(kNone, "none") X(kAdd, "add") X(kMax, "max") X(kMin, "min") X(kMul, "mul")
KILN_ENUM(ScatterReduce, KILN_SCATTER_REDUCES)
// torch.scatter along `axis`: inputs data, indices (same rank), updates. kAxis mode (index_put on
// one axis / index_copy): indices 1-D, updates shaped like data with `axis` replaced by len(indices).
struct ScatterParams {
  GatherMode mode = GatherMode::kElements;
  int64_t axis = 0;
  ScatterReduce reduce = ScatterReduce::kNone;
};
struct SelectParams {};  // inputs condition (bool), then, else; broadcast
struct CastParams { DataType to = DataType::kFloat32; };
struct ShapeParams {};   // output: i64 [rank] of the input's shape
#define KILN_FILL_OPS(X) X(kConstant, "constant") X(kArange, "arange")
KILN_ENUM(FillOp, KILN_FILL_OPS)
// No tensor inputs: out[i...] = value, or start + i*step along a 1-D `dims`.
struct FillParams {
  FillOp op = FillOp::kConstant;
  Shape dims;
  DataType dtype = DataType::kFloat32;
  double value = 0;
  double start = 0;
  double step = 1;
};
#define KILN_PAD_MODES(X) X(kConstant, "constant") X(kReflect, "reflect") X(kReplicate, "replicate") X(kCircular, "circular")
KILN_ENUM(PadMode, KILN_PAD_MODES)
struct PadParams {
  std::vector<int64_t> pre, post;  // per dimension; negative crops
  PadMode mode = PadMode::kConstant;
  double value = 0;
};
// kNearest: PyTorch's 'nearest'; kLinear: (bi/tri)linear.
#define KILN_RESIZE_MODES(X) X(kNearest, "nearest") X(kNearestExact, "nearest_exact") X(kLinear, "linear")
KILN_ENUM(ResizeMode, KILN_RESIZE_MODES)
// inputs x [N, C, *spatial]; output spatial sizes, and scales when PyTorch was given them
// (they change the sampling grid for align_corners=False).
struct ResizeParams {
  ResizeMode mode = ResizeMode::kNearest;
  Shape output_spatial;
  std::vector<double> scales;
  bool align_corners = false;
};
struct CumSumParams { int64_t axis = 0; bool exclusive = false; bool reverse = false; };
// Outputs values, indices (i64). k = kWholeAxis sorts the whole axis, whatever its size (a
// data-dependent one: the scores kept above a threshold, sorted).
struct TopKParams {
  static constexpr int64_t kWholeAxis = -1;
  int64_t axis = -1;
  int64_t k = 1;
  bool largest = true;
  bool sorted = true;
};
struct IdentityParams {};
// Output [count, rank] i64 where `count` is a data-dependent symbol bound at run time.
struct NonZeroParams { std::string count_symbol; };
// Scaled dot-product attention: inputs q [.., Lq, E], k [.., Lk, E], v [.., Lk, Ev][, mask]
// (bool: true = keep; float: added). Softmax in fp32.
// A strided window on a tensor's elements: element (i0, ..., in) of a `dims`-shaped value is at
// offset + sum(i_d * strides[d]) (in elements) of the tensor.
struct StridedView {
  int64_t offset = 0;
  std::vector<int64_t> dims, strides;
};
struct AttentionParams {
  bool causal = false;
  std::optional<double> scale;  // default 1/sqrt(E)
  bool has_mask = false;
  // Set by the builder (absorb_attention_views): q, k or v read through a strided view of the
  // layer's input, so the permutes and slices that made them are never copied. Empty, or one
  // entry per q, k, v; each view's last stride is 1.
  std::vector<std::optional<StridedView>> views;
  // Also set by absorb_attention_views: the output is written permuted (out dim j is logical dim
  // output_perm[j] of [*batch, Lq, Ev]; the last dim stays last), so a following head-merge
  // permute ([B, H, L, D] -> [B, L, H, D]) costs no copy. Empty: not permuted.
  std::vector<int64_t> output_perm;
};

// A user kernel: resolved by name in the PluginRegistry when the layer is added and when a plan is
// loaded, so plans stay serializable. `attributes` is an opaque string the plugin parses.
struct PluginParams {
  std::string plugin;
  std::string attributes;
};

// Builder-made: a chain of elementwise/unary/activation/cast layers as one kernel. Instructions
// run per output element over registers: inputs first (broadcast to the output shape), then one
// register per instruction. `outputs` lists the registers written out, in output order.
#define KILN_POINTWISE_KINDS(X)                                                                       \
  X(kBinary, "binary") X(kUnary, "unary") X(kActivation, "activation") X(kCast, "cast") X(kSelect, "select") \
  X(kConstant, "constant") X(kRowReduce, "row_reduce")
struct PointwiseInstr {
  enum class Kind : uint8_t { KILN_ENUM_VALUES(KILN_POINTWISE_KINDS) } kind;
  BinaryOp binary{};
  ReduceOp reduce = ReduceOp::kSum;  // kRowReduce: kSum, kMax or kMin of its float operand over the row
  UnaryOp unary{};
  ActivationParams activation{ActivationOp::kRelu};
  DataType dtype = DataType::kFloat32;  // result dtype of this register
  double constant = 0;                  // kConstant
  std::vector<int32_t> operands;        // register indices
};
KILN_ENUM_INFO(PointwiseInstr::Kind, KILN_POINTWISE_KINDS)
// Builder-made (fold_movement): the program's input registers read through index arithmetic
// instead of from tensors broadcast to the output, so the permutes, reshapes, slices, pads and
// concatenations that made them are never copied. Integer expressions over the output's
// coordinates are SSA nodes, each reading only earlier ones.
#define KILN_INDEX_OPS(X) X(kCoord, "coord") X(kConst, "const") X(kAdd, "add") X(kMul, "mul") X(kFloorDiv, "floordiv") X(kMod, "mod")
struct IndexNode {
  enum class Op : uint8_t { KILN_ENUM_VALUES(KILN_INDEX_OPS) };
  Op op = Op::kConst;
  int32_t a = -1, b = -1;  // operands: kAdd a + b; kMul, kFloorDiv, kMod: a with k
  int64_t k = 0;           // kCoord: output dim; kConst: value; kMul: factor; kFloorDiv/kMod: divisor > 0
};
KILN_ENUM_INFO(IndexNode::Op, KILN_INDEX_OPS)
struct IndexBound {  // lo <= node < hi
  int32_t node = 0;
  int64_t lo = 0, hi = 0;
};
// One case of a register's value: where all `bounds` hold, element `offset` of layer input `input`
// (row-major), or `value` when input is -1. A register's first case whose bounds hold is taken.
struct LoadPiece {
  int32_t input = -1;
  int32_t offset = -1;
  double value = 0;
  std::vector<IndexBound> bounds;
};
struct GatherLoads {
  std::vector<int64_t> out_dims;  // the output's (static) shape
  std::vector<IndexNode> nodes;
  std::vector<std::vector<LoadPiece>> registers;  // the program's input registers, in order
};
// Row programs (builder-made, fuse_rows: layer norms, RMS norms, softmaxes with the pointwise work
// around them): with row_length R > 0 the program runs once per row of the last axis of its
// domain (the inputs' broadcast shape, whose last dim is R). A register is then either per element
// or per row: inputs whose last dim is 1, constants, kRowReduce results and what is computed from
// those alone hold one value per row (broadcast along it). An output of a per-row register has the
// domain's shape with last dim 1.
struct FusedPointwiseParams {
  std::vector<PointwiseInstr> program;
  std::vector<int32_t> outputs;
  std::optional<GatherLoads> gather;  // none: input register j is layer input j, broadcast
  int64_t row_length = 0;             // > 0: a row program (no gather)
};

using LayerParams =
    std::variant<ConstantParams, ElementwiseParams, UnaryParams, ActivationParams, MatMulParams,
                 ConvolutionParams, PoolingParams, ReduceParams, SoftmaxParams, NormalizationParams,
                 ShuffleParams, ConcatParams, SliceParams, GatherParams, ScatterParams, SelectParams,
                 CastParams, ShapeParams, FillParams, PadParams, ResizeParams, CumSumParams,
                 TopKParams, IdentityParams, NonZeroParams, AttentionParams, PluginParams,
                 FusedPointwiseParams>;
const char* layer_kind_name(const LayerParams& p);  // "Elementwise", "MatMul", ...

class Layer;

class Tensor {
 public:
  int id() const { return id_; }
  const std::string& name() const { return name_; }
  DataType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  size_t rank() const { return shape_.size(); }
  Layer* producer() const { return producer_; }  // null for network inputs
  bool is_input() const { return producer_ == nullptr; }
  std::string str() const;  // "%name: f32[s0, 16]"

 private:
  friend class Network;
  int id_ = 0;
  std::string name_;
  DataType dtype_ = DataType::kFloat32;
  Shape shape_;
  Layer* producer_ = nullptr;
  std::vector<Layer*> users_;  // live layers that read it, once each (kept by Network: consumers())
};

class Layer {
 public:
  int id() const { return id_; }
  const std::string& name() const { return name_; }
  const char* kind() const { return layer_kind_name(params_); }
  // What the layer was converted from, for profiles and errors: the ATen op and the user's source
  // line ("aten.conv2d.default at model.py:42"); empty for hand-built layers. Layers the builder
  // makes in place of others take theirs (replace_all_uses).
  const std::string& origin() const { return origin_; }
  // "layer 'conv_3/conv' (Convolution, from aten.conv2d.default at model.py:42)": how errors name it.
  std::string label() const;
  const std::vector<Tensor*>& inputs() const { return inputs_; }
  const std::vector<Tensor*>& outputs() const { return outputs_; }
  Tensor* output(size_t i = 0) const { return outputs_.at(i); }
  const LayerParams& params() const { return params_; }
  // Computes in fp32 whatever the build precision (Network::Fp32Scope).
  bool requires_fp32() const { return requires_fp32_; }
  template <class P> const P* as() const { return std::get_if<P>(&params_); }
  std::string str() const;

 private:
  friend class Network;
  int id_ = 0;
  std::string name_;
  std::string origin_;
  std::vector<Tensor*> inputs_;
  std::vector<Tensor*> outputs_;
  size_t position_ = 0;  // index in the network's order (kept by Network), to sort users by
  bool requires_fp32_ = false;
  LayerParams params_;
};

class Network {
 public:
  Network();
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;
  Network(Network&&) noexcept;  // tensors and layers keep their addresses
  Network& operator=(Network&&) noexcept;

  // A dynamic dim is a DimExpr::symbol; the builder's profile gives its min/opt/max.
  Tensor* add_input(const std::string& name, DataType dtype, Shape shape);
  void mark_output(Tensor* t, const std::string& name);

  // Every add_* names its layer `name` (made unique if taken) and returns it.
  Layer* add_constant(const std::string& name, Weights w);
  Layer* add_elementwise(const std::string& name, Tensor* a, Tensor* b, BinaryOp op);
  Layer* add_unary(const std::string& name, Tensor* x, UnaryOp op);
  Layer* add_activation(const std::string& name, Tensor* x, ActivationOp op, double alpha = 0, double beta = 0);
  Layer* add_matmul(const std::string& name, Tensor* a, Tensor* b, bool transpose_a = false, bool transpose_b = false);
  Layer* add_convolution(const std::string& name, Tensor* x, Tensor* weight, Tensor* bias, ConvolutionParams p);
  Layer* add_pooling(const std::string& name, Tensor* x, PoolingParams p);
  Layer* add_reduce(const std::string& name, Tensor* x, ReduceParams p);
  Layer* add_softmax(const std::string& name, Tensor* x, int64_t axis, bool log = false);
  Layer* add_normalization(const std::string& name, const std::vector<Tensor*>& inputs, NormalizationParams p);
  Layer* add_shuffle(const std::string& name, Tensor* x, ShuffleParams p);
  Layer* add_concat(const std::string& name, const std::vector<Tensor*>& xs, int64_t axis);
  Layer* add_slice(const std::string& name, Tensor* x, SliceParams p);
  Layer* add_gather(const std::string& name, Tensor* data, Tensor* indices, GatherMode mode, int64_t axis);
  Layer* add_scatter(const std::string& name, Tensor* data, Tensor* indices, Tensor* updates, ScatterParams p);
  Layer* add_select(const std::string& name, Tensor* condition, Tensor* then_value, Tensor* else_value);
  Layer* add_cast(const std::string& name, Tensor* x, DataType to);
  Layer* add_shape(const std::string& name, Tensor* x);
  Layer* add_fill(const std::string& name, FillParams p);
  Layer* add_pad(const std::string& name, Tensor* x, PadParams p);
  Layer* add_resize(const std::string& name, Tensor* x, ResizeParams p);
  Layer* add_cumsum(const std::string& name, Tensor* x, CumSumParams p);
  Layer* add_topk(const std::string& name, Tensor* x, TopKParams p);
  Layer* add_identity(const std::string& name, Tensor* x);
  Layer* add_nonzero(const std::string& name, Tensor* x);
  Layer* add_attention(const std::string& name, Tensor* q, Tensor* k, Tensor* v, Tensor* mask, AttentionParams p);
  Layer* add_plugin(const std::string& name, const std::vector<Tensor*>& inputs, PluginParams p);
  // Generic entry used by the builder and plan loader: infers and checks output types/shapes.
  Layer* add_layer(const std::string& name, std::vector<Tensor*> inputs, LayerParams params);
  // The origin layers added from now on get (the converter sets it per node; "" stops it).
  void set_origin_of_new_layers(std::string origin) { new_layer_origin_ = std::move(origin); }
  void set_origin(Layer* l, std::string origin) { l->origin_ = std::move(origin); }
  // A precision constraint (TensorRT's per-layer precision under obeyPrecisionConstraints): the
  // layers added while a scope lives compute in fp32 under an fp16/bf16 build, their inputs cast
  // up and their float outputs cast down where they meet the rest. Converters put index and
  // coordinate math in one (pixel positions past 256 are not integers in bf16, so a gather would
  // read the wrong pixel); the flag is read by the precision pass only.
  class Fp32Scope {
   public:
    explicit Fp32Scope(Network& net) : net_(net), before_(net.new_layers_fp32_) { net_.new_layers_fp32_ = true; }
    ~Fp32Scope() { net_.new_layers_fp32_ = before_; }
    Fp32Scope(const Fp32Scope&) = delete;
    Fp32Scope& operator=(const Fp32Scope&) = delete;

   private:
    Network& net_;
    bool before_;
  };

  const std::vector<Tensor*>& inputs() const { return inputs_; }
  const std::vector<std::pair<std::string, Tensor*>>& outputs() const { return outputs_; }
  std::vector<Layer*> layers() const;  // in insertion (topological) order
  std::vector<Tensor*> tensors() const;
  // Every symbol the input shapes use, in first-seen order.
  std::vector<std::string> input_symbols() const;
  // Whether the input shapes bind every symbol of `d` (of every dim of `s`). Where not, the size is
  // data-dependent: a count a layer computes when the plan runs (a nonzero's rows).
  bool input_bound(const DimExpr& d) const;
  bool input_bound(const Shape& s) const;

  // Structural checks: each tensor produced once, before use; outputs marked. Throws NetworkError.
  void verify() const;
  std::string str() const;  // one line per layer: `%y: f32[s0, 8] = Activation[kRelu](%x)  # name`

  // Rewrites used by builder passes (keep the network topologically ordered).
  void replace_all_uses(Tensor* from, Tensor* to);  // includes marked outputs
  void remove_layer(Layer* l);                       // its outputs must be unused
  std::vector<Layer*> consumers(const Tensor* t) const;  // in network order, from kept user lists
  // Additions for builder passes: re-sort after rewrites that append layers before their users;
  // replace a layer's parameters (re-checks and re-infers its outputs in place, so later layers
  // should be re-inferred in order too).
  void topological_sort();
  void set_layer_params(Layer* l, LayerParams params);
  void replace_output(const std::string& name, Tensor* t);  // re-points a marked output
  void replace_input(Layer* l, size_t i, Tensor* t);          // re-points one input of one layer
  // Tensor ids are below this bound (ids of removed tensors are not reused).
  int tensor_id_bound() const;

 private:
  static void add_user(Tensor* t, Layer* l);   // the user lists consumers() reads
  static void drop_user(Tensor* t, Layer* l);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<Tensor*> inputs_;
  std::vector<std::pair<std::string, Tensor*>> outputs_;
  std::string new_layer_origin_;
  bool new_layers_fp32_ = false;
};

// User kernels for PluginParams. A plugin gives output dtypes and shapes from its inputs, and a
// kernel per backend (nullptr = not available there).
struct TensorView;
struct PluginKernel {
  std::function<std::vector<std::pair<DataType, Shape>>(const std::vector<const Tensor*>& inputs,
                                                        const std::string& attributes)>
      infer;
  std::function<void(const std::vector<TensorView>& in, const std::vector<TensorView>& out,
                     const std::string& attributes)>
      cpu;
  std::function<void(const std::vector<TensorView>& in, const std::vector<TensorView>& out,
                     const std::string& attributes, void* cuda_stream)>
      cuda;
};
void register_plugin(const std::string& name, PluginKernel kernel);
const PluginKernel* find_plugin(const std::string& name);

}  // namespace kiln::engine
