// What every built-in converter file uses: named access to converter arguments, validator helpers,
// and registration. Built-ins support dynamic shapes (plans are shape-generic) unless a validator
// or the flag says otherwise.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "conversion/context.h"
#include "conversion/convert.h"
#include "conversion/impl/impl.h"
#include "conversion/registry.h"
#include "ir/schema.h"

namespace kiln::conversion::converters {

using engine::DataType;
using engine::DimExpr;
using engine::Tensor;
using impl::Target;

// A converter's (args, kwargs), read by schema name: args hold the non-kwarg-only parameters in
// schema order (defaults filled), kwargs the kwarg-only ones.
class Args {
 public:
  Args(const std::string& target, const std::vector<Value>& args, const Kwargs& kwargs);
  const Value& operator[](const std::string& name) const;  // None when absent
  Tensor* tensor(const std::string& name) const { return (*this)[name].tensor(); }
  Tensor* opt_tensor(const std::string& name) const;       // nullptr for None
  int64_t i(const std::string& name) const { return (*this)[name].to_int(); }
  double d(const std::string& name) const { return (*this)[name].to_double(); }
  bool b(const std::string& name) const { return (*this)[name].to_bool(); }
  std::vector<int64_t> ints(const std::string& name) const;  // None -> {}
  std::vector<DimExpr> dims(const std::string& name) const { return (*this)[name].to_dims(); }
  std::vector<Tensor*> tensors(const std::string& name) const;
  bool none(const std::string& name) const { return (*this)[name].is_none(); }

 private:
  const ir::OpSchema* schema_;
  const std::vector<Value>& args_;
  const Kwargs& kwargs_;
};

// A node's argument by schema name, for validators (defaults filled). Throws when unknown.
ir::Argument node_arg(const ir::Node& node, const std::string& name);
// Every tensor the node reads or makes has an engine dtype (no f64 / complex).
bool dtypes_supported(const ir::Node& node);
// Only element 0 of a tuple-returning node is read (through getitem).
bool only_output0_used(const ir::Node& node);
// A validator's view of a literal argument: an int; a number (int or float); a list of ints
// (`size` elements when given). nullopt for anything else (a symbolic size, None, a tensor).
std::optional<int64_t> int_arg(const ir::Argument& a);
std::optional<double> number_arg(const ir::Argument& a);
std::optional<std::vector<int64_t>> ints_arg(const ir::Argument& a, std::optional<size_t> size = std::nullopt);
// The metadata of the tensor a node argument names; nullptr when it is not a tensor node.
const ir::TensorMeta* arg_meta(const ir::Node& node, const std::string& name);
// That tensor's size along `dim` (negative counts from the end) when it is a known constant.
std::optional<int64_t> static_size(const ir::Node& node, const std::string& name, int64_t dim);
// A converter's read of a size its validator found static in the trace. The engine may know it
// as data-dependent where PyTorch 1.13's trace recorded a number (the rows of x[mask]): that is a
// ConversionError naming what needed the size, never a read of an empty value.
int64_t known_extent(const DimExpr& size, const std::string& what);
int64_t known_extent(const Tensor* x, int64_t axis, const std::string& what);
// [rows, cols] i64 of column index minus row index: the diagonals of a matrix (0 the main one).
Tensor* column_minus_row(ConversionContext& ctx, const std::string& target, const std::string& name,
                         const DimExpr& rows, const DimExpr& cols);
// A 2-d max pool's indices (flat positions in each input plane), beside its values `pooled`; x of
// static height and width. Arguments as max_pool2d_with_indices takes them (windows.cpp).
Tensor* max_pool2d_indices(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
                           const std::vector<int64_t>& kernel, std::vector<int64_t> stride,
                           const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation, Tensor* pooled);
// Constant positions for a gather or scatter (`dims`: their shape, [n] when empty), stored as i32
// where every one fits (half the bytes of i64; both backends index with either).
Tensor* positions_constant(ConversionContext& ctx, const std::string& name, const std::vector<int64_t>& positions,
                           std::vector<int64_t> dims = {});
// The most positions a converter computes into one such constant (16 Mi: 64 MiB as i32).
constexpr int64_t kMaxConstantPositions = int64_t{1} << 24;
// A separable resampling along `dim` of x: output position o is sum_k weight[k][o] * x[index[k][o]]
// (index_selects of x weighted by per-position constants; bicubic and antialiased resizes). The
// last layer is named `name`.
Tensor* weighted_taps(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x, int64_t dim,
                      const std::vector<std::vector<int64_t>>& index, const std::vector<std::vector<float>>& weight);
// The node's own output dtype / shape, from its metadata.
DataType node_dtype(const ConversionContext& ctx);
std::vector<DimExpr> node_shape(const ConversionContext& ctx);

using Fn = ConverterFn;
struct Reg {
  CapabilityValidator validator;
  std::string validator_name;
  bool dynamic = true;
  bool output_allocator = false;
};
// Registers a built-in STANDARD converter for each target; every validator also requires
// dtypes_supported.
void add(const std::vector<std::string>& targets, Fn fn, Reg reg = {});

#define KILN_CONVERTER                                                                               \
  [](::kiln::conversion::ConversionContext & ctx, const std::string& target,                        \
     const std::vector<::kiln::conversion::Value>& args, const ::kiln::conversion::Kwargs& kwargs, \
     const std::string& name) -> ::kiln::conversion::Value

constexpr SourceIR kAten = SourceIR::ATEN;

void register_pointwise();
void register_nn();
void register_reduce();
void register_tensor();
void register_functional();
void register_composite();
void register_einsum();
void register_grid_sample();
void register_roi_align();
void register_matrix();
void register_windows();
void register_scan();
void register_loss();
void register_order();

}  // namespace kiln::conversion::converters
