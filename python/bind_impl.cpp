// kiln.conversion.impl: the C++ impl helpers under the seed's keyword names
// (`impl.elementwise.mul(ctx, target, source_ir=..., name=..., lhs_val=..., rhs_val=...)`).
// Tensor parameters accept network tensors, torch tensors / arrays (made constants) and, where
// the helper takes a Value, Python scalars. `target` may be a torch OpOverload or a string.
#include "bind_common.h"
#include "conversion/impl/impl.h"

namespace kiln::py_bind {

namespace impl = conversion::impl;
using conversion::ConversionContext;
using conversion::SourceIR;
using conversion::Value;
using engine::Tensor;

namespace {

std::string tgt(py::handle target) { return py::str(target); }  // str(torch.ops.aten.gelu.default) == "aten.gelu.default"
Value V(ConversionContext& ctx, py::handle h, const std::string& name) { return value_from_py(&ctx, h, name); }
Tensor* T(ConversionContext& ctx, py::handle h, const std::string& name) { return V(ctx, h, name).tensor(); }
Tensor* OT(ConversionContext& ctx, py::handle h, const std::string& name) {
  return h.is_none() ? nullptr : T(ctx, h, name);
}
engine::DataType DT(py::handle h) {
  if (py::isinstance<engine::DataType>(h)) return h.cast<engine::DataType>();
  py::object mapped = py::module_::import("kiln._values").attr("engine_dtype")(h);
  return mapped.cast<engine::DataType>();
}
std::vector<engine::DimExpr> dims(py::handle h) {
  std::vector<engine::DimExpr> out;
  for (auto e : h) {
    if (py::isinstance<engine::DimExpr>(e)) out.push_back(e.cast<engine::DimExpr>());
    else out.emplace_back(e.cast<int64_t>());
  }
  return out;
}
py::object tensors(const std::vector<Tensor*>& ts) {
  py::list l;
  for (auto* t : ts) l.append(py::cast(t, py::return_value_policy::reference));
  return l;
}

#define CTX ConversionContext &ctx, py::handle target, SourceIR source_ir, const std::string &name
#define PASS ctx, tgt(target), source_ir, name
#define ARGS py::arg("ctx"), py::arg("target"), py::arg("source_ir"), py::arg("name")
constexpr auto ref = py::return_value_policy::reference;

}  // namespace

void bind_impl(py::module_& m) {
  py::module_ im = m.def_submodule("impl", "kiln.conversion.impl helpers");

  auto elementwise = im.def_submodule("elementwise");
#define BIN(fn)                                                                               \
  elementwise.def(#fn, [](CTX, py::handle lhs_val, py::handle rhs_val) {                      \
    return impl::elementwise::fn(PASS, V(ctx, lhs_val, name + "/lhs"), V(ctx, rhs_val, name + "/rhs")); \
  }, ARGS, py::arg("lhs_val"), py::arg("rhs_val"), ref);
  BIN(add) BIN(sub) BIN(mul) BIN(div) BIN(floor_divide) BIN(trunc_div) BIN(remainder) BIN(fmod) BIN(pow)
  BIN(minimum) BIN(maximum) BIN(eq) BIN(ne) BIN(lt) BIN(le) BIN(gt) BIN(ge) BIN(logical_and) BIN(logical_or)
  BIN(logical_xor) BIN(bitwise_and) BIN(bitwise_or) BIN(bitwise_xor)
#undef BIN
  elementwise.def("add_alpha", [](CTX, py::handle lhs_val, py::handle rhs_val, py::handle alpha) {
    return impl::elementwise::add_alpha(PASS, V(ctx, lhs_val, name), V(ctx, rhs_val, name), V(ctx, alpha, name));
  }, ARGS, py::arg("lhs_val"), py::arg("rhs_val"), py::arg("alpha"), ref);
  elementwise.def("sub_alpha", [](CTX, py::handle lhs_val, py::handle rhs_val, py::handle alpha) {
    return impl::elementwise::sub_alpha(PASS, V(ctx, lhs_val, name), V(ctx, rhs_val, name), V(ctx, alpha, name));
  }, ARGS, py::arg("lhs_val"), py::arg("rhs_val"), py::arg("alpha"), ref);

  auto unary = im.def_submodule("unary");
  unary.def("unary", [](CTX, engine::UnaryOp op, py::handle input_val) {
    return impl::unary::unary(PASS, op, T(ctx, input_val, name));
  }, ARGS, py::arg("op"), py::arg("input_val"), ref);
  static const std::pair<const char*, engine::UnaryOp> unary_ops[] = {
      {"exp", engine::UnaryOp::kExp}, {"log", engine::UnaryOp::kLog}, {"log2", engine::UnaryOp::kLog2},
      {"log1p", engine::UnaryOp::kLog1p}, {"expm1", engine::UnaryOp::kExpm1}, {"sqrt", engine::UnaryOp::kSqrt},
      {"rsqrt", engine::UnaryOp::kRsqrt}, {"abs", engine::UnaryOp::kAbs}, {"neg", engine::UnaryOp::kNeg},
      {"sin", engine::UnaryOp::kSin}, {"cos", engine::UnaryOp::kCos}, {"tan", engine::UnaryOp::kTan},
      {"asin", engine::UnaryOp::kAsin}, {"acos", engine::UnaryOp::kAcos}, {"atan", engine::UnaryOp::kAtan},
      {"sinh", engine::UnaryOp::kSinh}, {"cosh", engine::UnaryOp::kCosh}, {"erf", engine::UnaryOp::kErf},
      {"floor", engine::UnaryOp::kFloor}, {"ceil", engine::UnaryOp::kCeil}, {"round", engine::UnaryOp::kRound},
      {"trunc", engine::UnaryOp::kTrunc}, {"sign", engine::UnaryOp::kSign},
      {"reciprocal", engine::UnaryOp::kReciprocal}, {"logical_not", engine::UnaryOp::kNot},
      {"isnan", engine::UnaryOp::kIsNan}, {"isinf", engine::UnaryOp::kIsInf},
      {"bitwise_not", engine::UnaryOp::kBitNot}};
  for (const auto& [fn, op] : unary_ops) {
    unary.def(fn, [op = op](CTX, py::handle input_val) {
      return impl::unary::unary(PASS, op, T(ctx, input_val, name));
    }, ARGS, py::arg("input_val"), ref);
  }

  auto activation = im.def_submodule("activation");
#define ACT(fn)                                                                                  \
  activation.def(#fn, [](CTX, py::handle input_val) {                                            \
    return impl::activation::fn(PASS, T(ctx, input_val, name));                                  \
  }, ARGS, py::arg("input_val"), ref);
  ACT(relu) ACT(sigmoid) ACT(tanh) ACT(silu) ACT(hardsigmoid) ACT(hardswish) ACT(mish)
#undef ACT
  activation.def("gelu", [](CTX, py::handle input_val, const std::string& approximate) {
    return impl::activation::gelu(PASS, T(ctx, input_val, name), approximate);
  }, ARGS, py::arg("input_val"), py::arg("approximate") = "none", ref);
  activation.def("leaky_relu", [](CTX, py::handle input_val, double alpha) {
    return impl::activation::leaky_relu(PASS, T(ctx, input_val, name), alpha);
  }, ARGS, py::arg("input_val"), py::arg("alpha") = 0.01, ref);
  activation.def("elu", [](CTX, py::handle input_val, double alpha) {
    return impl::activation::elu(PASS, T(ctx, input_val, name), alpha);
  }, ARGS, py::arg("input_val"), py::arg("alpha") = 1.0, ref);
  activation.def("softplus", [](CTX, py::handle input_val, double beta, double threshold) {
    return impl::activation::softplus(PASS, T(ctx, input_val, name), beta, threshold);
  }, ARGS, py::arg("input_val"), py::arg("beta") = 1.0, py::arg("threshold") = 20.0, ref);
  activation.def("clamp", [](CTX, py::handle input_val, py::handle min_val, py::handle max_val) {
    return impl::activation::clamp(PASS, T(ctx, input_val, name), V(ctx, min_val, name), V(ctx, max_val, name));
  }, ARGS, py::arg("input_val"), py::arg("min_val") = py::none(), py::arg("max_val") = py::none(), ref);

  auto matmul = im.def_submodule("matmul");
  matmul.def("matrix_multiply", [](CTX, py::handle input, py::handle other, bool transpose_a, bool transpose_b) {
    return impl::matmul::matrix_multiply(PASS, T(ctx, input, name), T(ctx, other, name), transpose_a, transpose_b);
  }, ARGS, py::arg("input"), py::arg("other"), py::arg("transpose_a") = false, py::arg("transpose_b") = false, ref);
  matmul.def("addmm", [](CTX, py::handle input, py::handle mat1, py::handle mat2, py::handle beta, py::handle alpha) {
    return impl::matmul::addmm(PASS, T(ctx, input, name), T(ctx, mat1, name), T(ctx, mat2, name),
                               V(ctx, beta, name), V(ctx, alpha, name));
  }, ARGS, py::arg("input"), py::arg("mat1"), py::arg("mat2"), py::arg("beta") = 1, py::arg("alpha") = 1, ref);
  matmul.def("linear", [](CTX, py::handle input, py::handle weight, py::handle bias) {
    return impl::matmul::linear(PASS, T(ctx, input, name), T(ctx, weight, name), OT(ctx, bias, name));
  }, ARGS, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(), ref);

  auto conv = im.def_submodule("conv");
  conv.def("convNd", [](CTX, py::handle input, py::handle weight, py::handle bias, std::vector<int64_t> stride,
                        py::handle padding, std::vector<int64_t> dilation, int64_t groups, bool transposed,
                        std::vector<int64_t> output_padding) {
    return impl::conv::convNd(PASS, T(ctx, input, name), T(ctx, weight, name), OT(ctx, bias, name), stride,
                              V(ctx, padding, name), dilation, groups, transposed, output_padding);
  }, ARGS, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(),
     py::arg("stride") = std::vector<int64_t>{1}, py::arg("padding") = std::vector<int64_t>{0},
     py::arg("dilation") = std::vector<int64_t>{1}, py::arg("groups") = 1, py::arg("transposed") = false,
     py::arg("output_padding") = std::vector<int64_t>{}, ref);

  auto pool = im.def_submodule("pool");
  pool.def("max_poolNd", [](CTX, py::handle input, std::vector<int64_t> kernel_size, std::vector<int64_t> stride,
                            std::vector<int64_t> padding, std::vector<int64_t> dilation, bool ceil_mode) {
    return impl::pool::max_poolNd(PASS, T(ctx, input, name), kernel_size, stride, padding, dilation, ceil_mode);
  }, ARGS, py::arg("input"), py::arg("kernel_size"), py::arg("stride") = std::vector<int64_t>{},
     py::arg("padding") = std::vector<int64_t>{0}, py::arg("dilation") = std::vector<int64_t>{1},
     py::arg("ceil_mode") = false, ref);
  pool.def("avg_poolNd", [](CTX, py::handle input, std::vector<int64_t> kernel_size, std::vector<int64_t> stride,
                            std::vector<int64_t> padding, bool ceil_mode, bool count_include_pad,
                            std::optional<int64_t> divisor_override) {
    return impl::pool::avg_poolNd(PASS, T(ctx, input, name), kernel_size, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override);
  }, ARGS, py::arg("input"), py::arg("kernel_size"), py::arg("stride") = std::vector<int64_t>{},
     py::arg("padding") = std::vector<int64_t>{0}, py::arg("ceil_mode") = false,
     py::arg("count_include_pad") = true, py::arg("divisor_override") = py::none(), ref);
  pool.def("adaptive_poolNd", [](CTX, py::handle input, std::vector<int64_t> output_size, engine::PoolType type) {
    return impl::pool::adaptive_poolNd(PASS, T(ctx, input, name), output_size, type);
  }, ARGS, py::arg("input"), py::arg("output_size"), py::arg("pool_type") = engine::PoolType::kAverage, ref);

  auto norm = im.def_submodule("normalization");
  norm.def("layer_norm", [](CTX, py::handle input, std::vector<int64_t> normalized_shape, py::handle weight,
                            py::handle bias, double eps) {
    return impl::normalization::layer_norm(PASS, T(ctx, input, name), normalized_shape, OT(ctx, weight, name),
                                           OT(ctx, bias, name), eps);
  }, ARGS, py::arg("input"), py::arg("normalized_shape"), py::arg("weight") = py::none(),
     py::arg("bias") = py::none(), py::arg("eps") = 1e-5, ref);
  norm.def("batch_norm", [](CTX, py::handle input, py::handle weight, py::handle bias, py::handle running_mean,
                            py::handle running_var, double eps) {
    return impl::normalization::batch_norm(PASS, T(ctx, input, name), OT(ctx, weight, name), OT(ctx, bias, name),
                                           T(ctx, running_mean, name), T(ctx, running_var, name), eps);
  }, ARGS, py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("running_mean"),
     py::arg("running_var"), py::arg("eps") = 1e-5, ref);
  norm.def("group_norm", [](CTX, py::handle input, int64_t num_groups, py::handle weight, py::handle bias,
                            double eps) {
    return impl::normalization::group_norm(PASS, T(ctx, input, name), num_groups, OT(ctx, weight, name),
                                           OT(ctx, bias, name), eps);
  }, ARGS, py::arg("input"), py::arg("num_groups"), py::arg("weight") = py::none(), py::arg("bias") = py::none(),
     py::arg("eps") = 1e-5, ref);
  norm.def("softmax", [](CTX, py::handle input, int64_t dim, bool log) {
    return impl::normalization::softmax(PASS, T(ctx, input, name), dim, log);
  }, ARGS, py::arg("input"), py::arg("dim"), py::arg("log") = false, ref);

  auto reduce = im.def_submodule("reduce");
  reduce.def("reduce", [](CTX, engine::ReduceOp op, py::handle input_val, std::vector<int64_t> dim, bool keepdim,
                          double correction) {
    return impl::reduce::reduce(PASS, op, T(ctx, input_val, name), dim, keepdim, correction);
  }, ARGS, py::arg("op"), py::arg("input_val"), py::arg("dim") = std::vector<int64_t>{},
     py::arg("keepdim") = false, py::arg("correction") = 0.0, ref);
  static const std::pair<const char*, engine::ReduceOp> reduce_ops[] = {
      {"sum", engine::ReduceOp::kSum}, {"mean", engine::ReduceOp::kMean}, {"amax", engine::ReduceOp::kMax},
      {"amin", engine::ReduceOp::kMin}, {"prod", engine::ReduceOp::kProd}, {"any", engine::ReduceOp::kAny},
      {"all", engine::ReduceOp::kAll}};
  for (const auto& [fn, op] : reduce_ops) {
    reduce.def(fn, [op = op](CTX, py::handle input_val, std::vector<int64_t> dim, bool keepdim) {
      return impl::reduce::reduce(PASS, op, T(ctx, input_val, name), dim, keepdim);
    }, ARGS, py::arg("input_val"), py::arg("dim") = std::vector<int64_t>{}, py::arg("keepdim") = false, ref);
  }
  reduce.def("cumsum", [](CTX, py::handle input, int64_t dim) {
    return impl::reduce::cumsum(PASS, T(ctx, input, name), dim);
  }, ARGS, py::arg("input"), py::arg("dim"), ref);

  auto shuffle = im.def_submodule("shuffle");
  shuffle.def("reshape", [](CTX, py::handle input, py::handle shape) {
    return impl::shuffle::reshape(PASS, T(ctx, input, name), dims(shape));
  }, ARGS, py::arg("input"), py::arg("shape"), ref);
  shuffle.def("permute", [](CTX, py::handle input, std::vector<int64_t> permutation) {
    return impl::shuffle::permute(PASS, T(ctx, input, name), permutation);
  }, ARGS, py::arg("input"), py::arg("permutation"), ref);
  shuffle.def("transpose", [](CTX, py::handle input, int64_t dim0, int64_t dim1) {
    return impl::shuffle::transpose(PASS, T(ctx, input, name), dim0, dim1);
  }, ARGS, py::arg("input"), py::arg("dim0"), py::arg("dim1"), ref);
  shuffle.def("unsqueeze", [](CTX, py::handle input, int64_t dim) {
    return impl::shuffle::unsqueeze(PASS, T(ctx, input, name), dim);
  }, ARGS, py::arg("input"), py::arg("dim"), ref);
  shuffle.def("squeeze", [](CTX, py::handle input, std::vector<int64_t> dim) {
    return impl::shuffle::squeeze(PASS, T(ctx, input, name), dim);
  }, ARGS, py::arg("input"), py::arg("dim") = std::vector<int64_t>{}, ref);
  shuffle.def("flatten", [](CTX, py::handle input, int64_t start_dim, int64_t end_dim) {
    return impl::shuffle::flatten(PASS, T(ctx, input, name), start_dim, end_dim);
  }, ARGS, py::arg("input"), py::arg("start_dim") = 0, py::arg("end_dim") = -1, ref);
  shuffle.def("expand", [](CTX, py::handle input, py::handle shape) {
    return impl::shuffle::expand(PASS, T(ctx, input, name), dims(shape));
  }, ARGS, py::arg("input"), py::arg("shape"), ref);

  auto slice = im.def_submodule("slice");
  slice.def("slice_op", [](CTX, py::handle input, int64_t dim, py::handle start, py::handle stop, int64_t step) {
    return impl::slice::slice_op(PASS, T(ctx, input, name), dim, V(ctx, start, name), V(ctx, stop, name), step);
  }, ARGS, py::arg("input"), py::arg("dim"), py::arg("start") = py::none(), py::arg("stop") = py::none(),
     py::arg("step") = 1, ref);
  slice.def("split", [](CTX, py::handle input, std::vector<int64_t> split_sizes, int64_t dim) {
    return tensors(impl::slice::split(PASS, T(ctx, input, name), split_sizes, dim));
  }, ARGS, py::arg("input"), py::arg("split_sizes"), py::arg("dim") = 0);
  slice.def("chunk", [](CTX, py::handle input, int64_t chunks, int64_t dim) {
    return tensors(impl::slice::chunk(PASS, T(ctx, input, name), chunks, dim));
  }, ARGS, py::arg("input"), py::arg("chunks"), py::arg("dim") = 0);

  auto select = im.def_submodule("select");
  select.def("select", [](CTX, py::handle input, int64_t dim, py::handle index) {
    return impl::select::select(PASS, T(ctx, input, name), dim, V(ctx, index, name));
  }, ARGS, py::arg("input"), py::arg("dim"), py::arg("index"), ref);
  select.def("index_select", [](CTX, py::handle input, int64_t dim, py::handle index) {
    return impl::select::index_select(PASS, T(ctx, input, name), dim, T(ctx, index, name));
  }, ARGS, py::arg("input"), py::arg("dim"), py::arg("index"), ref);
  select.def("gather", [](CTX, py::handle input, int64_t dim, py::handle index) {
    return impl::select::gather(PASS, T(ctx, input, name), dim, T(ctx, index, name));
  }, ARGS, py::arg("input"), py::arg("dim"), py::arg("index"), ref);
  select.def("where", [](CTX, py::handle condition, py::handle input, py::handle other) {
    return impl::select::where(PASS, T(ctx, condition, name), V(ctx, input, name), V(ctx, other, name));
  }, ARGS, py::arg("condition"), py::arg("input"), py::arg("other"), ref);

  auto cat = im.def_submodule("cat");
  cat.def("cat", [](CTX, py::handle input, int64_t dim) {
    std::vector<Tensor*> ts;
    for (auto e : input) ts.push_back(T(ctx, e, name));
    return impl::cat::cat(PASS, ts, dim);
  }, ARGS, py::arg("input"), py::arg("dim") = 0, ref);
  cat.def("stack", [](CTX, py::handle input, int64_t dim) {
    std::vector<Tensor*> ts;
    for (auto e : input) ts.push_back(T(ctx, e, name));
    return impl::cat::stack(PASS, ts, dim);
  }, ARGS, py::arg("input"), py::arg("dim") = 0, ref);

  auto cast = im.def_submodule("cast");
  cast.def("to_dtype", [](CTX, py::handle input, py::handle dtype) {
    return impl::cast::to_dtype(PASS, T(ctx, input, name), DT(dtype));
  }, ARGS, py::arg("input"), py::arg("dtype"), ref);

  auto embedding = im.def_submodule("embedding");
  embedding.def("embedding", [](CTX, py::handle input, py::handle weight) {
    return impl::embedding::embedding(PASS, T(ctx, input, name), T(ctx, weight, name));
  }, ARGS, py::arg("input"), py::arg("weight"), ref);

  auto attention = im.def_submodule("attention");
  attention.def("scaled_dot_product_attention", [](CTX, py::handle query, py::handle key, py::handle value,
                                                   py::handle attn_mask, bool is_causal, std::optional<double> scale) {
    return impl::attention::scaled_dot_product_attention(PASS, T(ctx, query, name), T(ctx, key, name),
                                                         T(ctx, value, name), OT(ctx, attn_mask, name), is_causal,
                                                         scale);
  }, ARGS, py::arg("query"), py::arg("key"), py::arg("value"), py::arg("attn_mask") = py::none(),
     py::arg("is_causal") = false, py::arg("scale") = py::none(), ref);

  auto shape = im.def_submodule("shape");
  shape.def("shape", [](py::handle input) {
    py::list l;
    for (const auto& d : impl::shape::dims(input.cast<Tensor*>())) l.append(dim_to_py(d));
    return py::tuple(l);
  }, py::arg("input"));
  shape.def("numel", [](py::handle input) { return dim_to_py(impl::shape::numel(input.cast<Tensor*>())); },
            py::arg("input"));
}

#undef CTX
#undef PASS
#undef ARGS

}  // namespace kiln::py_bind
