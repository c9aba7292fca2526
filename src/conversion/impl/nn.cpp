// matmul, convolution, pooling, normalization, softmax and reduction helpers.
#include <algorithm>
#include <cmath>

#include "conversion/impl/impl.h"

namespace kiln::conversion::impl {

std::vector<int64_t> per_dim(std::vector<int64_t> v, size_t n, int64_t fill, const std::string& what) {
  if (v.empty()) return std::vector<int64_t>(n, fill);
  if (v.size() == 1 && n > 1) return std::vector<int64_t>(n, v[0]);
  if (v.size() != n)
    throw ConversionError(what + " has " + std::to_string(v.size()) + " values for " + std::to_string(n) + " spatial dims");
  return v;
}

// ---- matmul ---------------------------------------------------------------------------------------

namespace matmul {

Tensor* matrix_multiply(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                        Tensor* a, Tensor* b, bool transpose_a, bool transpose_b) {
  const DataType dt = promote(a->dtype(), b->dtype());
  a = cast::to_dtype(ctx, target, source_ir, name + "/cast_a", a, dt);
  b = cast::to_dtype(ctx, target, source_ir, name + "/cast_b", b, dt);
  const bool vec_a = a->rank() == 1, vec_b = b->rank() == 1;
  if (vec_a) a = shuffle::unsqueeze(ctx, target, source_ir, name + "/vec_a", a, transpose_a ? 1 : 0);
  if (vec_b) b = shuffle::unsqueeze(ctx, target, source_ir, name + "/vec_b", b, transpose_b ? 0 : 1);
  const size_t rank = std::max(a->rank(), b->rank());
  a = broadcast_rank(ctx, a, rank, name + "/a");
  b = broadcast_rank(ctx, b, rank, name + "/b");
  Tensor* out = ctx.net.add_matmul(ctx.layer_name(name), a, b, transpose_a, transpose_b)->output(0);
  if (vec_a && vec_b) return shuffle::reshape(ctx, target, source_ir, name + "/squeeze", out, {});
  if (vec_a) return shuffle::squeeze(ctx, target, source_ir, name + "/squeeze", out, {-2});
  if (vec_b) return shuffle::squeeze(ctx, target, source_ir, name + "/squeeze", out, {-1});
  return out;
}

Tensor* addmm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* bias,
              Tensor* a, Tensor* b, const Value& beta, const Value& alpha) {
  Tensor* mm = matrix_multiply(ctx, target, source_ir, name, a, b);
  if (!alpha.is_none() && alpha.to_double() != 1.0)
    mm = elementwise::mul(ctx, target, source_ir, name + "/alpha", mm, alpha);
  if (!beta.is_none() && beta.to_double() == 0.0) return mm;  // PyTorch ignores bias (even NaN) when beta == 0
  Value bterm = bias;
  if (!beta.is_none() && beta.to_double() != 1.0) bterm = elementwise::mul(ctx, target, source_ir, name + "/beta", bias, beta);
  return elementwise::add(ctx, target, source_ir, name + "/bias", mm, bterm);
}

Tensor* linear(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* input,
               Tensor* weight, Tensor* bias) {
  Tensor* out = matrix_multiply(ctx, target, source_ir, name, input, weight, false, true);
  if (bias) out = elementwise::add(ctx, target, source_ir, name + "/bias", out, bias);
  return out;
}

}  // namespace matmul

// ---- convolution ----------------------------------------------------------------------------------

namespace conv {

Tensor* convNd(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, Tensor* weight, Tensor* bias, std::vector<int64_t> stride, const Value& padding,
               std::vector<int64_t> dilation, int64_t groups, bool transposed, std::vector<int64_t> output_padding) {
  if (weight->rank() < 3 || weight->rank() > 5)
    throw ConversionError("convolution weight must be 3-D to 5-D, got " + weight->str());
  const size_t n = weight->rank() - 2;
  const bool unbatched = input->rank() == n + 1;
  if (unbatched) input = shuffle::unsqueeze(ctx, target, source_ir, name + "/batch", input, 0);
  engine::ConvolutionParams p;
  p.stride = per_dim(stride, n, 1, "stride");
  p.dilation = per_dim(dilation, n, 1, "dilation");
  p.output_padding = per_dim(output_padding, n, 0, "output_padding");
  p.groups = groups;
  p.transposed = transposed;
  if (padding.is<std::string>()) {
    const std::string& mode = padding.str();
    p.padding.assign(n, 0);
    if (mode == "same") {
      // Total padding dilation*(k-1) per dim; odd totals put the extra element after (PyTorch).
      const std::vector<int64_t> k = static_dims(weight, "conv padding='same'");
      std::vector<int64_t> pad_list;  // PyTorch pad order: last dim first
      bool asymmetric = false;
      for (size_t i = 0; i < n; ++i) {
        const int64_t total = p.dilation[i] * (k[2 + i] - 1);
        p.padding[i] = total / 2;
        if (total % 2) asymmetric = true;
      }
      if (asymmetric) {
        for (size_t i = n; i-- > 0;) {
          const int64_t total = p.dilation[i] * (k[2 + i] - 1);
          pad_list.push_back(total / 2);
          pad_list.push_back(total - total / 2);
        }
        input = pad::pad(ctx, target, source_ir, name + "/same_pad", input, pad_list, engine::PadMode::kConstant, 0);
        p.padding.assign(n, 0);
      }
    } else if (mode != "valid") {
      throw ConversionError("conv padding='" + mode + "'");
    }
  } else {
    p.padding = per_dim(padding.is_none() ? std::vector<int64_t>{} : padding.to_ints(), n, 0, "padding");
  }
  const DataType dt = input->dtype();
  weight = cast::to_dtype(ctx, target, source_ir, name + "/cast_w", weight, dt);
  if (bias) bias = cast::to_dtype(ctx, target, source_ir, name + "/cast_b", bias, dt);
  p.has_bias = bias != nullptr;
  Tensor* out = ctx.net.add_convolution(ctx.layer_name(name), input, weight, bias, p)->output(0);
  if (unbatched) out = shuffle::squeeze(ctx, target, source_ir, name + "/unbatch", out, {0});
  return out;
}

}  // namespace conv

// ---- pooling --------------------------------------------------------------------------------------

namespace pool {

namespace {
Tensor* run_pool(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                 Tensor* input, engine::PoolingParams p, size_t n) {
  const bool unbatched = input->rank() == n + 1;
  if (unbatched) input = shuffle::unsqueeze(ctx, target, source_ir, name + "/batch", input, 0);
  if (input->rank() != n + 2)
    throw ConversionError(std::to_string(n) + "-d pooling of " + input->str());
  Tensor* out = ctx.net.add_pooling(ctx.layer_name(name), input, std::move(p))->output(0);
  if (unbatched) out = shuffle::squeeze(ctx, target, source_ir, name + "/unbatch", out, {0});
  return out;
}
}  // namespace

Tensor* max_poolNd(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, std::vector<int64_t> dilation, bool ceil_mode) {
  const size_t n = kernel.size();
  engine::PoolingParams p;
  p.type = engine::PoolType::kMax;
  p.kernel = kernel;
  p.stride = stride.empty() ? kernel : per_dim(stride, n, 1, "stride");
  p.padding = per_dim(padding, n, 0, "padding");
  p.dilation = per_dim(dilation, n, 1, "dilation");
  p.ceil_mode = ceil_mode;
  return run_pool(ctx, target, source_ir, name, input, std::move(p), n);
}

Tensor* avg_poolNd(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, bool ceil_mode, bool count_include_pad,
                   std::optional<int64_t> divisor_override) {
  const size_t n = kernel.size();
  engine::PoolingParams p;
  p.type = engine::PoolType::kAverage;
  p.kernel = kernel;
  p.stride = stride.empty() ? kernel : per_dim(stride, n, 1, "stride");
  p.padding = per_dim(padding, n, 0, "padding");
  p.dilation.assign(n, 1);
  p.ceil_mode = ceil_mode;
  p.count_include_pad = count_include_pad;
  p.divisor_override = divisor_override;
  return run_pool(ctx, target, source_ir, name, input, std::move(p), n);
}

Tensor* adaptive_poolNd(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                        Tensor* input, std::vector<int64_t> output_size, engine::PoolType type) {
  engine::PoolingParams p;
  p.type = type;
  const size_t n = output_size.size();
  p.adaptive_output = output_size;
  return run_pool(ctx, target, source_ir, name, input, std::move(p), n);
}

}  // namespace pool

// ---- normalization --------------------------------------------------------------------------------

namespace normalization {

namespace {
std::vector<Tensor*> with_affine(ConversionContext& ctx, const Target& target, SourceIR source_ir,
                                 const std::string& name, std::vector<Tensor*> inputs, Tensor* weight, Tensor* bias,
                                 engine::NormalizationParams& p) {
  const DataType dt = inputs[0]->dtype();
  for (size_t i = 1; i < inputs.size(); ++i)
    inputs[i] = cast::to_dtype(ctx, target, source_ir, name + "/cast_stat", inputs[i], dt);
  if (weight) inputs.push_back(cast::to_dtype(ctx, target, source_ir, name + "/cast_w", weight, dt));
  if (bias) inputs.push_back(cast::to_dtype(ctx, target, source_ir, name + "/cast_b", bias, dt));
  p.has_scale = weight != nullptr;
  p.has_bias = bias != nullptr;
  return inputs;
}
}  // namespace

Tensor* layer_norm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, const std::vector<int64_t>& normalized_shape, Tensor* weight, Tensor* bias,
                   double eps) {
  if (normalized_shape.empty() || normalized_shape.size() > input->rank())
    throw ConversionError("layer_norm normalized_shape does not fit " + input->str());
  engine::NormalizationParams p;
  p.kind = engine::NormKind::kLayer;
  p.first_axis = static_cast<int64_t>(input->rank() - normalized_shape.size());
  p.epsilon = eps;
  auto ins = with_affine(ctx, target, source_ir, name, {input}, weight, bias, p);
  return ctx.net.add_normalization(ctx.layer_name(name), ins, p)->output(0);
}

Tensor* batch_norm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, Tensor* weight, Tensor* bias, Tensor* running_mean, Tensor* running_var,
                   double eps) {
  if (!running_mean || !running_var) throw ConversionError("batch_norm without running statistics");
  engine::NormalizationParams p;
  p.kind = engine::NormKind::kBatch;
  p.first_axis = 1;
  p.epsilon = eps;
  auto ins = with_affine(ctx, target, source_ir, name, {input, running_mean, running_var}, weight, bias, p);
  return ctx.net.add_normalization(ctx.layer_name(name), ins, p)->output(0);
}

Tensor* group_norm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                   Tensor* input, int64_t num_groups, Tensor* weight, Tensor* bias, double eps) {
  engine::NormalizationParams p;
  p.kind = engine::NormKind::kGroup;
  p.first_axis = 1;
  p.groups = num_groups;
  p.epsilon = eps;
  auto ins = with_affine(ctx, target, source_ir, name, {input}, weight, bias, p);
  return ctx.net.add_normalization(ctx.layer_name(name), ins, p)->output(0);
}

Tensor* softmax(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
                Tensor* input, int64_t dim, bool log) {
  if (!engine::is_floating(input->dtype()))
    input = cast::to_dtype(ctx, target, source_ir, name + "/to_float", input, DataType::kFloat32);
  if (input->rank() == 0) {  // softmax of a scalar is 1 (log: 0)
    return ctx.constant(scalar_weights(log ? 0.0 : 1.0, input->dtype(), 0), name);
  }
  return ctx.net.add_softmax(ctx.layer_name(name), input, normalize_axis(dim, input->rank()), log)->output(0);
}

}  // namespace normalization

// ---- reductions -----------------------------------------------------------------------------------

namespace reduce {

Tensor* reduce(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               engine::ReduceOp op, Tensor* input, std::vector<int64_t> dims, bool keepdim, double correction) {
  using engine::ReduceOp;
  const bool is_float = engine::is_floating(input->dtype());
  if ((op == ReduceOp::kSum || op == ReduceOp::kProd) && !is_float)
    input = cast::to_dtype(ctx, target, source_ir, name + "/to_i64", input, DataType::kInt64);
  if ((op == ReduceOp::kAny || op == ReduceOp::kAll))
    input = cast::to_dtype(ctx, target, source_ir, name + "/to_bool", input, DataType::kBool);
  if ((op == ReduceOp::kMean || op == ReduceOp::kVar || op == ReduceOp::kNorm2) && !is_float)
    throw ConversionError("mean/var of a non-float tensor " + input->str());
  engine::ReduceParams p;
  p.op = op;
  p.keep_dims = keepdim;
  p.correction = correction;
  if (dims.empty())
    for (size_t i = 0; i < input->rank(); ++i) p.axes.push_back(static_cast<int64_t>(i));
  else
    for (int64_t d : dims) p.axes.push_back(normalize_axis(d, input->rank()));
  std::sort(p.axes.begin(), p.axes.end());
  p.axes.erase(std::unique(p.axes.begin(), p.axes.end()), p.axes.end());
  if (input->rank() == 0) return ctx.net.add_identity(ctx.layer_name(name), input)->output(0);
  return ctx.net.add_reduce(ctx.layer_name(name), input, p)->output(0);
}

Tensor* arg(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
            engine::ReduceOp op, Tensor* input, std::optional<int64_t> dim, bool keepdim) {
  const size_t rank = input->rank();
  engine::ReduceParams p;
  p.op = op;
  if (!dim) {
    Tensor* flat = shuffle::reshape(ctx, target, source_ir, name + "/flatten", input, {DimExpr(int64_t{-1})});
    p.axes = {0};
    p.keep_dims = false;
    Tensor* out = ctx.net.add_reduce(ctx.layer_name(name), flat, p)->output(0);
    if (keepdim) out = shuffle::reshape(ctx, target, source_ir, name + "/keepdim", out, std::vector<DimExpr>(rank, 1));
    return out;
  }
  p.axes = {normalize_axis(*dim, rank)};
  p.keep_dims = keepdim;
  return ctx.net.add_reduce(ctx.layer_name(name), input, p)->output(0);
}

Tensor* cumsum(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name,
               Tensor* input, int64_t dim) {
  if (!engine::is_floating(input->dtype()))
    input = cast::to_dtype(ctx, target, source_ir, name + "/to_i64", input, DataType::kInt64);
  engine::CumSumParams p;
  p.axis = normalize_axis(dim, input->rank());
  return ctx.net.add_cumsum(ctx.layer_name(name), input, p)->output(0);
}

Tensor* p_norm(ConversionContext& ctx, const Target& target, SourceIR source_ir, const std::string& name, Tensor* x,
               double p, const std::vector<int64_t>& dims, bool keepdim) {
  using engine::ReduceOp;
  if (p == 2.0) return reduce(ctx, target, source_ir, name, ReduceOp::kNorm2, x, dims, keepdim);
  if (p == 0.0)
    return reduce(ctx, target, source_ir, name, ReduceOp::kSum,
                  cast::to_dtype(ctx, target, source_ir, name + "/nonzero",
                                 elementwise::ne(ctx, target, source_ir, name + "/ne", x, 0.0), x->dtype()),
                  dims, keepdim);
  Tensor* mag = unary::unary(ctx, target, source_ir, name + "/abs", engine::UnaryOp::kAbs, x);
  if (std::isinf(p)) return reduce(ctx, target, source_ir, name, p > 0 ? ReduceOp::kMax : ReduceOp::kMin, mag, dims, keepdim);
  if (p == 1.0) return reduce(ctx, target, source_ir, name, ReduceOp::kSum, mag, dims, keepdim);
  Tensor* sum = reduce(ctx, target, source_ir, name + "/sum", ReduceOp::kSum,
                       elementwise::pow(ctx, target, source_ir, name + "/pow", mag, p), dims, keepdim);
  return elementwise::pow(ctx, target, source_ir, name, sum, 1.0 / p);
}

}  // namespace reduce
}  // namespace kiln::conversion::impl
