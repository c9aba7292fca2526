// Argument access, validator helpers, registration and register_builtin_converters().
#include "conversion/converters/common.h"

#include <mutex>

namespace kiln::conversion {
namespace converters {

Args::Args(const std::string& target, const std::vector<Value>& args, const Kwargs& kwargs)
    : schema_(ir::find_schema(target)), args_(args), kwargs_(kwargs) {}

const Value& Args::operator[](const std::string& name) const {
  static const Value none;
  for (const auto& [k, v] : kwargs_)
    if (k == name) return v;
  if (!schema_) return none;
  size_t pos = 0;
  for (const auto& a : schema_->args) {
    if (a.kwarg_only) continue;
    if (a.name == name) return pos < args_.size() ? args_[pos] : none;
    ++pos;
  }
  return none;
}

Tensor* Args::opt_tensor(const std::string& name) const {
  const Value& v = (*this)[name];
  return v.is_none() ? nullptr : v.tensor();
}

std::vector<int64_t> Args::ints(const std::string& name) const {
  const Value& v = (*this)[name];
  return v.is_none() ? std::vector<int64_t>{} : v.to_ints();
}

std::vector<Tensor*> Args::tensors(const std::string& name) const {
  std::vector<Tensor*> out;
  for (const Value& v : (*this)[name].list()) out.push_back(v.tensor());
  return out;
}

ir::Argument node_arg(const ir::Node& node, const std::string& name) {
  const ir::OpSchema* schema = ir::find_schema(node.target);
  if (!schema) throw ConversionError("no schema for " + node.target);
  ir::BoundArgs bound(node, *schema);
  return bound[name];
}

const ir::TensorMeta* arg_meta(const ir::Node& node, const std::string& name) {
  const ir::Argument a = node_arg(node, name);
  return a.is_node() && a.node()->meta.is_tensor() ? &a.node()->meta.tensor : nullptr;
}

std::optional<int64_t> static_size(const ir::Node& node, const std::string& name, int64_t dim) {
  const ir::TensorMeta* m = arg_meta(node, name);
  if (!m) return std::nullopt;
  const int64_t rank = int64_t(m->rank());
  if (dim < 0) dim += rank;
  if (dim < 0 || dim >= rank || !m->sizes[size_t(dim)].is_constant()) return std::nullopt;
  return m->sizes[size_t(dim)].value;
}

Tensor* column_minus_row(ConversionContext& ctx, const std::string& target, const std::string& name,
                         const DimExpr& rows, const DimExpr& cols) {
  auto iota = [&](const DimExpr& n, const std::string& suffix) {
    return impl::creation::arange(ctx, target, kAten, name + suffix, int64_t{0}, n, int64_t{1}, DataType::kInt64);
  };
  const DimExpr one(int64_t{1});
  Tensor* row = impl::shuffle::reshape(ctx, target, kAten, name + "/rows_col", iota(rows, "/rows"), {rows, one});
  Tensor* col = impl::shuffle::reshape(ctx, target, kAten, name + "/cols_row", iota(cols, "/cols"), {one, cols});
  return impl::elementwise::sub(ctx, target, kAten, name + "/diagonal_of", col, row);
}

namespace {
bool meta_ok(const ir::TensorMeta& m) { return has_engine_dtype(m.dtype); }
bool value_ok(const ir::ValueMeta& m) {
  if (m.kind == ir::ValueMeta::Kind::Tensor) return meta_ok(m.tensor);
  if (m.kind == ir::ValueMeta::Kind::Tuple || m.kind == ir::ValueMeta::Kind::TensorList)
    for (const auto& t : m.tuple)
      if (t && !meta_ok(*t)) return false;
  return true;
}
}  // namespace

bool dtypes_supported(const ir::Node& node) {
  if (!value_ok(node.meta)) return false;
  for (const ir::Node* in : node.inputs())
    if (in->meta.is_tensor() && !meta_ok(in->meta.tensor)) return false;
  return true;
}

bool only_output0_used(const ir::Node& node) {
  for (const ir::Node* u : node.users()) {
    if (!(u->target == "getitem" || u->target == "_operator.getitem")) return false;
    if (u->args.size() < 2 || !u->args[1].is<int64_t>() || u->args[1].as<int64_t>() != 0) return false;
  }
  return true;
}

DataType node_dtype(const ConversionContext& ctx) {
  if (!ctx.current_node || !ctx.current_node->meta.is_tensor())
    throw ConversionError("converter needs the node's tensor metadata");
  return to_engine_dtype(ctx.current_node->meta.tensor.dtype);
}

std::vector<DimExpr> node_shape(const ConversionContext& ctx) {
  if (!ctx.current_node || !ctx.current_node->meta.is_tensor())
    throw ConversionError("converter needs the node's tensor metadata");
  return to_shape(ctx.current_node->meta.tensor);
}

void add(const std::vector<std::string>& targets, Fn fn, Reg reg) {
  CapabilityValidator v;
  if (reg.validator) {
    v = [inner = reg.validator](const ir::Node& n, const CompilationSettings& s) {
      return dtypes_supported(n) && inner(n, s);
    };
  } else {
    v = [](const ir::Node& n, const CompilationSettings&) { return dtypes_supported(n); };
  }
  const std::string vname = reg.validator_name.empty() ? "dtypes_supported" : reg.validator_name;
  for (const std::string& t : targets) {
    ConverterSpec spec;
    spec.target = t;
    spec.fn = fn;
    spec.validator = v;
    spec.validator_name = vname;
    spec.supports_dynamic_shapes = reg.dynamic;
    spec.requires_output_allocator = reg.output_allocator;
    spec.origin = "builtin";
    ConverterRegistry::global().add(std::move(spec));
  }
}

}  // namespace converters

void register_builtin_converters() {
  static std::once_flag once;
  std::call_once(once, [] {
    converters::register_pointwise();
    converters::register_nn();
    converters::register_reduce();
    converters::register_tensor();
    converters::register_functional();
    converters::register_composite();
    converters::register_einsum();
    converters::register_grid_sample();
    converters::register_roi_align();
    converters::register_matrix();
    converters::register_windows();
    converters::register_scan();
    converters::register_loss();
    converters::register_order();
  });
}

}  // namespace kiln::conversion
