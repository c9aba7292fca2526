// impl helpers: the building blocks converters are written in, composable with raw network calls.
// Names and parameter order follow the seed (Torch-TensorRT's `impl`):
//   impl::elementwise::mul(ctx, target, source_ir, name, lhs, rhs)
//   impl::activation::tanh(ctx, target, source_ir, name, input)
// `name` is the converter's name (the node's); helpers that add several layers suffix it, and
// ConversionContext::layer_name keeps every layer traceable to its node. Tensor-or-scalar operands
// are Values; scalars become constants of the tensor's dtype, mixed dtypes follow PyTorch's type
// promotion (cast to the promoted type). Axes may be negative (PyTorch style).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "conversion/context.h"
#include "conversion/registry.h"
#include "engine/network.h"

namespace kiln::conversion::impl {

using engine::DataType;
using engine::DimExpr;
using engine::Tensor;
using Target = std::string;

// ---- shared helpers -------------------------------------------------------------------------------
engine::Weights scalar_weights(double v, DataType dtype, size_t rank = 0);  // dims [1]*rank
int64_t normalize_axis(int64_t axis, size_t rank, const std::string& what = "dim");
DataType promote(DataType a, DataType b);
// PyTorch's result dtype of `tensor op scalar`.
DataType promote_with_scalar(DataType t, const Value& scalar);
// A Value (tensor or scalar) as a tensor of `dtype`, with rank raised to `rank` by leading 1s.
Tensor* get_tensor(ConversionContext& ctx, const Value& v, DataType dtype, size_t rank, const std::string& name);
// Leading 1s so both operands have the same rank (the engine broadcasts equal ranks).
Tensor* broadcast_rank(ConversionContext& ctx, Tensor* t, size_t rank, const std::string& name);
std::vector<int64_t> static_dims(const Tensor* t, const std::string& what);  // throws when symbolic
// A pooling or convolution argument with one value per spatial dim: PyTorch lets one int stand for
// every dim, and an empty list means `fill` (throws naming `what` on another count).
std::vector<int64_t> per_dim(std::vector<int64_t> v, size_t n, int64_t fill, const std::string& what);
// A symbolic int (a size, >= 0) as a 0-d i64 tensor computed at run time.
Tensor* symbolic_scalar(ConversionContext& ctx, const DimExpr& n, const std::string& name);

namespace cast {
Tensor* to_dtype(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
                 DataType dtype);
}

namespace elementwise {
using engine::BinaryOp;
// PyTorch semantics: promotion, true division for div, bool results for comparisons.
Tensor* binary(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, BinaryOp op,
               const Value& lhs, const Value& rhs);
#define KILN_IMPL_BINARY(fn)                                                                           \
  Tensor* fn(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, \
             const Value& lhs, const Value& rhs);
KILN_IMPL_BINARY(add) KILN_IMPL_BINARY(sub) KILN_IMPL_BINARY(mul) KILN_IMPL_BINARY(div)
KILN_IMPL_BINARY(floor_divide) KILN_IMPL_BINARY(trunc_div) KILN_IMPL_BINARY(remainder) KILN_IMPL_BINARY(fmod)
KILN_IMPL_BINARY(pow) KILN_IMPL_BINARY(minimum) KILN_IMPL_BINARY(maximum)
KILN_IMPL_BINARY(eq) KILN_IMPL_BINARY(ne) KILN_IMPL_BINARY(lt) KILN_IMPL_BINARY(le) KILN_IMPL_BINARY(gt)
KILN_IMPL_BINARY(ge) KILN_IMPL_BINARY(logical_and) KILN_IMPL_BINARY(logical_or) KILN_IMPL_BINARY(logical_xor)
KILN_IMPL_BINARY(bitwise_and) KILN_IMPL_BINARY(bitwise_or) KILN_IMPL_BINARY(bitwise_xor)
#undef KILN_IMPL_BINARY
// lhs + alpha * rhs / lhs - alpha * rhs (aten.add/sub with alpha).
Tensor* add_alpha(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  const Value& lhs, const Value& rhs, const Value& alpha);
Tensor* sub_alpha(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  const Value& lhs, const Value& rhs, const Value& alpha);
}  // namespace elementwise

namespace unary {
// Float-valued ops on integer inputs compute in f32, as PyTorch does.
Tensor* unary(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
              engine::UnaryOp op, Tensor* input);
}  // namespace unary

namespace activation {
Tensor* act(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
            engine::ActivationOp op, Tensor* input, double alpha = 0, double beta = 0);
#define KILN_IMPL_ACT(fn) \
  Tensor* fn(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input);
KILN_IMPL_ACT(relu) KILN_IMPL_ACT(sigmoid) KILN_IMPL_ACT(tanh) KILN_IMPL_ACT(silu) KILN_IMPL_ACT(hardsigmoid)
KILN_IMPL_ACT(hardswish) KILN_IMPL_ACT(mish)
#undef KILN_IMPL_ACT
Tensor* gelu(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
             const std::string& approximate = "none");
Tensor* leaky_relu(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, double negative_slope);
Tensor* elu(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
            double alpha);
Tensor* softplus(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                 Tensor* input, double beta, double threshold);
// min/max: None, scalar or tensor.
Tensor* clamp(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
              const Value& min, const Value& max);
}  // namespace activation

namespace matmul {
// torch.matmul semantics (1-D operands promoted and squeezed back; batch dims broadcast).
Tensor* matrix_multiply(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                        Tensor* a, Tensor* b, bool transpose_a = false, bool transpose_b = false);
// beta * bias + alpha * (a @ b)
Tensor* addmm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* bias,
              Tensor* a, Tensor* b, const Value& beta, const Value& alpha);
Tensor* linear(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
               Tensor* weight, Tensor* bias);
}  // namespace matmul

namespace conv {
// 1d/2d/3d from the weight's rank; `padding` may be "same"/"valid" (str) or ints.
Tensor* convNd(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, Tensor* weight, Tensor* bias, std::vector<int64_t> stride, const Value& padding,
               std::vector<int64_t> dilation, int64_t groups, bool transposed = false,
               std::vector<int64_t> output_padding = {});
}  // namespace conv

namespace pool {
Tensor* max_poolNd(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, std::vector<int64_t> dilation, bool ceil_mode);
Tensor* avg_poolNd(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, bool ceil_mode, bool count_include_pad,
                   std::optional<int64_t> divisor_override);
Tensor* adaptive_poolNd(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                        Tensor* input, std::vector<int64_t> output_size, engine::PoolType type);
}  // namespace pool

namespace normalization {
Tensor* layer_norm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, const std::vector<int64_t>& normalized_shape, Tensor* weight, Tensor* bias,
                   double eps);
Tensor* batch_norm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, Tensor* weight, Tensor* bias, Tensor* running_mean, Tensor* running_var,
                   double eps);
Tensor* group_norm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, int64_t num_groups, Tensor* weight, Tensor* bias, double eps);
Tensor* softmax(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, int64_t dim, bool log = false);
}  // namespace normalization

namespace reduce {
// dims empty = every axis. sum/prod of bool/int accumulate in i64; mean/var need floats.
Tensor* reduce(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               engine::ReduceOp op, Tensor* input, std::vector<int64_t> dims, bool keepdim, double correction = 0);
// argmax/argmin; dim nullopt = over the flattened input.
Tensor* arg(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
            engine::ReduceOp op, Tensor* input, std::optional<int64_t> dim, bool keepdim);
Tensor* cumsum(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, int64_t dim);
// Vector p-norms over dims: 2 (the engine's norm reduction), 1 (sum of |x|), +-inf (max / min of
// |x|), 0 (count of nonzeros), any other p > 0 as sum(|x|^p)^(1/p).
Tensor* p_norm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* x,
               double p, const std::vector<int64_t>& dims, bool keepdim);
}  // namespace reduce

namespace shape {
std::vector<DimExpr> dims(const Tensor* t);
DimExpr numel(const Tensor* t);
}  // namespace shape

namespace shuffle {
// `shape` may hold one -1.
Tensor* reshape(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, const std::vector<DimExpr>& shape);
Tensor* permute(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, std::vector<int64_t> perm);
Tensor* transpose(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  Tensor* input, int64_t dim0, int64_t dim1);
Tensor* unsqueeze(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  Tensor* input, int64_t dim);
// dims empty = every size-1 dim; dims whose size is not 1 are kept (PyTorch semantics).
Tensor* squeeze(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, std::vector<int64_t> dims);
Tensor* flatten(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, int64_t start_dim, int64_t end_dim);
// sizes may be symbolic; -1 allowed once. Broadcasts size-1 dims (and new leading dims).
Tensor* expand(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, const std::vector<DimExpr>& sizes);
}  // namespace shuffle

namespace slice {
// PyTorch slicing: start/end may be negative, None (nullopt), past the end; step > 0.
Tensor* slice_op(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                 Tensor* input, int64_t dim, const Value& start, const Value& end, int64_t step);
std::vector<Tensor*> split(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                           Tensor* input, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor*> chunk(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                           Tensor* input, int64_t chunks, int64_t dim);
}  // namespace slice

namespace select {
Tensor* select(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, int64_t dim, const Value& index);
Tensor* index_select(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                     Tensor* input, int64_t dim, Tensor* index);
// The positions where a 1-d bool mask holds, as a [count] int64 tensor: the count is data-dependent
// (the converter needs the output allocator), and later layers see it as a symbolic size.
Tensor* true_positions(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                       Tensor* flat_mask);
Tensor* gather(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, int64_t dim, Tensor* index);
// PyTorch advanced indexing (aten.index.Tensor): `indices[d]` indexes dim d, nullptr = the whole
// dim (a None / `:`); integer index tensors broadcast together. Several index tensors gather
// through one linear index into the indexed dims; out-of-range indices are an error at run time.
Tensor* index(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
              Tensor* input, const std::vector<Tensor*>& indices);
// where(condition, x, y) with promotion of x and y (tensors or scalars).
Tensor* where(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
              Tensor* condition, const Value& x, const Value& y);
Tensor* scatter(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, int64_t dim, Tensor* index, const Value& src, engine::ScatterReduce reduce);
}  // namespace select

namespace cat {
Tensor* cat(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
            std::vector<Tensor*> inputs, int64_t dim);
Tensor* stack(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
              std::vector<Tensor*> inputs, int64_t dim);
}  // namespace cat

namespace embedding {
Tensor* embedding(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                  Tensor* indices, Tensor* weight);
}

namespace creation {
Tensor* full(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
             const std::vector<DimExpr>& size, double value, DataType dtype);
Tensor* arange(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               const Value& start, const Value& end, const Value& step, DataType dtype);
}  // namespace creation

namespace pad {
// `pad`: PyTorch order (last dim first, pairs of before/after).
Tensor* pad(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
            const std::vector<int64_t>& pad, engine::PadMode mode, double value);
}

namespace upsample {
Tensor* resize(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, const std::vector<DimExpr>& output_spatial, const std::vector<double>& scales,
               engine::ResizeMode mode, bool align_corners);
}

namespace attention {
Tensor* scaled_dot_product_attention(ConversionContext& ctx, const Target& target, SourceIR source_ir,
                                     const std::string& name, Tensor* q, Tensor* k, Tensor* v, Tensor* mask,
                                     bool is_causal, std::optional<double> scale);
}

}  // namespace kiln::conversion::impl
