// Argument access, validator helpers, registration and register_builtin_converters().
#include "conversion/converters/common.h"

#include <climits>
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

std::optional<int64_t> int_arg(const ir::Argument& a) {
  if (a.is<int64_t>()) return a.as<int64_t>();
  return std::nullopt;
}

std::optional<double> number_arg(const ir::Argument& a) {
  if (a.is<double>()) return a.as<double>();
  if (a.is<int64_t>()) return double(a.as<int64_t>());
  return std::nullopt;
}

std::optional<std::vector<int64_t>> ints_arg(const ir::Argument& a, std::optional<size_t> size) {
  if (!a.is<ir::Argument::List>()) return std::nullopt;
  std::vector<int64_t> v;
  for (const ir::Argument& e : a.as<ir::Argument::List>()) {
    if (!e.is<int64_t>()) return std::nullopt;
    v.push_back(e.as<int64_t>());
  }
  if (size && v.size() != *size) return std::nullopt;
  return v;
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

int64_t known_extent(const DimExpr& size, const std::string& what) {
  if (auto n = size.constant()) return *n;
  throw ConversionError(what + " needs a static size, and this one (" + size.str() +
                        ") is only known when the program runs: it depends on the data (a count such as "
                        "x[mask]'s rows) or on a dynamic input dim");
}

int64_t known_extent(const Tensor* x, int64_t axis, const std::string& what) {
  return known_extent(x->shape().at(size_t(axis)), what + " (dim " + std::to_string(axis) + ")");
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

Tensor* positions_constant(ConversionContext& ctx, const std::string& name, const std::vector<int64_t>& positions,
                           std::vector<int64_t> dims) {
  if (dims.empty()) dims = {int64_t(positions.size())};
  bool narrow = true;
  for (int64_t p : positions) narrow &= p >= INT32_MIN && p <= INT32_MAX;
  if (!narrow) return ctx.constant(engine::Weights::copy_of(DataType::kInt64, dims, positions.data()), name);
  const std::vector<int32_t> small(positions.begin(), positions.end());
  return ctx.constant(engine::Weights::copy_of(DataType::kInt32, dims, small.data()), name);
}

Tensor* weighted_taps(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x, int64_t dim,
                      const std::vector<std::vector<int64_t>>& index, const std::vector<std::vector<float>>& weight) {
  const int64_t n = int64_t(index.at(0).size());
  std::vector<int64_t> along(x->rank(), 1);
  along[size_t(dim)] = n;
  Tensor* sum = nullptr;
  for (size_t k = 0; k < index.size(); ++k) {
    const std::string tap = name + "/tap" + std::to_string(k);
    Tensor* w = impl::cast::to_dtype(ctx, target, kAten, tap + "/weight_cast",
                                     ctx.constant(engine::Weights::copy_of(DataType::kFloat32, along, weight[k].data()), tap + "/weight"),
                                     x->dtype());
    Tensor* term = impl::elementwise::mul(
        ctx, target, kAten, index.size() == 1 ? name : tap + "/weighted",
        impl::select::index_select(ctx, target, kAten, tap + "/taps", x, dim, positions_constant(ctx, tap + "/index", index[k])), w);
    sum = sum ? impl::elementwise::add(ctx, target, kAten, k + 1 == index.size() ? name : tap + "/sum", sum, term) : term;
  }
  return sum;
}

namespace {
// The first dtype of the node's tensors (its own, then its inputs') the engine has none of.
std::optional<ir::ScalarType> unsupported_dtype(const ir::Node& node) {
  auto check = [](const ir::TensorMeta& m) { return has_engine_dtype(m.dtype) ? std::nullopt : std::optional(m.dtype); };
  const ir::ValueMeta& own = node.meta;
  if (own.kind == ir::ValueMeta::Kind::Tensor)
    if (auto t = check(own.tensor)) return t;
  if (own.kind == ir::ValueMeta::Kind::Tuple || own.kind == ir::ValueMeta::Kind::TensorList)
    for (const auto& m : own.tuple)
      if (m)
        if (auto t = check(*m)) return t;
  for (const ir::Node* in : node.inputs())
    if (in->meta.is_tensor())
      if (auto t = check(in->meta.tensor)) return t;
  return std::nullopt;
}
}  // namespace

bool dtypes_supported(const ir::Node& node) { return !unsupported_dtype(node).has_value(); }

// Built-in validators first check the dtypes, and say which one the engine lacks: the real cause,
// where "validator X rejected" alone would blame X (the registry reports a built-in validator's
// exception as its reason).
static void require_engine_dtypes(const ir::Node& node) {
  if (auto t = unsupported_dtype(node))
    throw std::runtime_error(std::string("the engine has no ") + ir::to_string(*t) + " tensors");
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
  std::vector<DimExpr> shape = to_shape(ctx.current_node->meta.tensor);
  for (DimExpr& d : shape) d = ctx.with_bound_sizes(d);  // zeros_like(x[mask]): the plan's count
  return shape;
}

void add(const std::vector<std::string>& targets, Fn fn, Reg reg) {
  CapabilityValidator v;
  if (reg.validator) {
    v = [inner = reg.validator](const ir::Node& n, const CompilationSettings& s) {
      require_engine_dtypes(n);
      return inner(n, s);
    };
  } else {
    v = [](const ir::Node& n, const CompilationSettings&) {
      require_engine_dtypes(n);
      return true;
    };
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
