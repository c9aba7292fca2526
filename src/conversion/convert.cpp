// The conversion driver. Every node is converted by the converter the registry picks for it (the
// same verdict the partitioner saw), called exactly once; the driver only wires values between
// nodes, binds arguments to the op schema, and makes the result match the node's metadata.
#include "conversion/convert.h"

#include <set>

#include "ir/schema.h"
#include "ir/source_location.h"

namespace kiln::conversion {

// ---- translations --------------------------------------------------------------------------------

bool has_engine_dtype(ir::ScalarType t) {
  using S = ir::ScalarType;
  switch (t) {
    case S::Float: case S::Half: case S::BFloat16: case S::Long: case S::Int: case S::Char: case S::Byte:
    case S::Bool: return true;
    default: return false;
  }
}

engine::DataType to_engine_dtype(ir::ScalarType t) {
  using S = ir::ScalarType;
  using D = engine::DataType;
  switch (t) {
    case S::Float: return D::kFloat32;
    case S::Half: return D::kFloat16;
    case S::BFloat16: return D::kBFloat16;
    case S::Long: return D::kInt64;
    case S::Int: return D::kInt32;
    case S::Char: return D::kInt8;
    case S::Byte: return D::kUInt8;
    case S::Bool: return D::kBool;
    default: throw ConversionError(std::string("dtype ") + ir::to_string(t) + " has no engine equivalent");
  }
}

ir::ScalarType to_ir_dtype(engine::DataType t) {
  using S = ir::ScalarType;
  using D = engine::DataType;
  switch (t) {
    case D::kFloat32: return S::Float;
    case D::kFloat16: return S::Half;
    case D::kBFloat16: return S::BFloat16;
    case D::kInt64: return S::Long;
    case D::kInt32: return S::Int;
    case D::kInt8: return S::Char;
    case D::kUInt8: return S::Byte;
    case D::kBool: return S::Bool;
  }
  return S::Undefined;
}

namespace {
engine::DimExpr translate(const ir::SymExpr& e) {
  using Op = ir::SymExpr::Op;
  const auto& a = e.args();
  auto arg = [&](size_t i) { return translate(*a.at(i)); };
  switch (e.op()) {
    case Op::Integer: return engine::DimExpr(e.value());
    case Op::Symbol: return engine::DimExpr::symbol(e.name());
    case Op::Add: {
      engine::DimExpr r = arg(0);
      for (size_t i = 1; i < a.size(); ++i) r = r + arg(i);
      return r;
    }
    case Op::Mul: {
      engine::DimExpr r = arg(0);
      for (size_t i = 1; i < a.size(); ++i) r = r * arg(i);
      return r;
    }
    case Op::Pow: {
      if (a.size() == 2 && a[1]->is_integer() && a[1]->value() >= 0 && a[1]->value() <= 8) {
        engine::DimExpr r(int64_t{1}), b = arg(0);
        for (int64_t i = 0; i < a[1]->value(); ++i) r = r * b;
        return r;
      }
      break;
    }
    case Op::FloorDiv: return floor_div(arg(0), arg(1));
    case Op::CeilDiv: return ceil_div(arg(0), arg(1));
    case Op::Mod: return mod(arg(0), arg(1));
    case Op::Max: {
      engine::DimExpr r = arg(0);
      for (size_t i = 1; i < a.size(); ++i) r = max(r, arg(i));
      return r;
    }
    case Op::Min: {
      engine::DimExpr r = arg(0);
      for (size_t i = 1; i < a.size(); ++i) r = min(r, arg(i));
      return r;
    }
    default: break;
  }
  throw ConversionError("symbolic expression " + e.str() + " has no engine equivalent");
}
}  // namespace

engine::DimExpr to_dim_expr(const ir::SymInt& s) {
  if (s.is_constant()) return engine::DimExpr(s.value);
  return translate(*s.expr);
}

engine::Shape to_shape(const ir::TensorMeta& m) {
  engine::Shape out;
  for (const auto& s : m.sizes) out.push_back(to_dim_expr(s));
  return out;
}

// ---- the driver ----------------------------------------------------------------------------------

namespace {

struct Driver {
  const ir::ExportedProgram& program;
  const CompilationSettings& settings;
  ConvertedSegment seg;
  std::unique_ptr<ConversionContext> ctx;

  // The export's unbacked symbols at the dims of a converted result, bound to the engine's dims
  // (ConversionContext::data_dependent_sizes): the first result with a bare symbol no network
  // input binds is the op that computes that size.
  void bind_data_dependent_sizes(const ir::TensorMeta& meta, const engine::Tensor* t) {
    if (t->rank() != meta.rank()) return;
    for (size_t d = 0; d < meta.rank(); ++d) {
      const ir::SymInt& s = meta.sizes[d];
      if (s.is_constant() || !s.expr->is_symbol() || ctx->data_dependent_sizes.count(s.expr->name())) continue;
      const engine::DimExpr& got = t->shape()[d];
      if (got.op() == engine::DimExpr::Op::Sym && got.symbol_name() == s.expr->name()) continue;
      if (ctx->net.input_bound(engine::DimExpr::symbol(s.expr->name()))) continue;
      ctx->data_dependent_sizes.emplace(s.expr->name(), got);
    }
  }

  Value value_of(const ir::Node* n) const {
    auto it = seg.values.find(n);
    if (it == seg.values.end())
      throw ConversionError("value %" + n->name + " is neither a segment input nor converted before its use");
    if (it->second.is<engine::DimExpr>()) return ctx->with_bound_sizes(std::get<engine::DimExpr>(it->second.v));
    return it->second;
  }

  Value to_value(const ir::Argument& a) const {
    return std::visit(
        [&](const auto& x) -> Value {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, ir::None>) return Value();
          else if constexpr (std::is_same_v<T, ir::Node*>) return value_of(x);
          else if constexpr (std::is_same_v<T, ir::Argument::List>) {
            Value::List l;
            for (const auto& e : x) l.push_back(to_value(e));
            return Value(std::move(l));
          } else return Value(x);
        },
        a.value);
  }

  void add_input(const ir::Node* n) {
    if (seg.values.count(n)) return;
    if (n->kind == ir::NodeKind::GetAttr) {
      seg.values[n] = ctx->weight(n->target);
      return;
    }
    switch (n->meta.kind) {
      case ir::ValueMeta::Kind::Tensor: {
        const auto& m = n->meta.tensor;
        seg.values[n] = ctx->net.add_input(n->name, to_engine_dtype(m.dtype), to_shape(m));
        seg.input_names.push_back(n->name);
        return;
      }
      case ir::ValueMeta::Kind::SymInt:
        seg.values[n] = to_dim_expr(n->meta.sym);
        return;
      case ir::ValueMeta::Kind::Tuple:
      case ir::ValueMeta::Kind::TensorList: {
        // A tuple made outside the segment: one network input per tensor element ("<node>.<i>").
        Value::List l;
        for (size_t i = 0; i < n->meta.tuple.size(); ++i) {
          if (!n->meta.tuple[i]) {
            l.push_back(Value());
            continue;
          }
          const std::string name = n->name + "." + std::to_string(i);
          l.push_back(ctx->net.add_input(name, to_engine_dtype(n->meta.tuple[i]->dtype), to_shape(*n->meta.tuple[i])));
          seg.input_names.push_back(name);
        }
        seg.values[n] = std::move(l);
        return;
      }
      default:
        throw ConversionError("segment input %" + n->name + " has no tensor or symbolic-int value");
    }
  }

  // The node's metadata is the contract: a converter whose result has another dtype (PyTorch's
  // promotion rules have corners impl helpers do not model, e.g. 0-d tensors) gets a cast.
  Value conform(const ir::Node* n, Value v) {
    if (!v.is_tensor() || !n->meta.is_tensor()) return v;
    engine::Tensor* t = v.tensor();
    const auto& m = n->meta.tensor;
    if (t->rank() != m.rank())
      throw ConversionError("converter produced " + t->str() + " but the node is " + m.str());
    if (has_engine_dtype(m.dtype) && t->dtype() != to_engine_dtype(m.dtype))
      t = ctx->net.add_cast(ctx->layer_name("conform_dtype"), t, to_engine_dtype(m.dtype))->output(0);
    return t;
  }

  void convert(const ir::Node* n) {
    if (n->kind == ir::NodeKind::GetAttr) {
      add_input(n);
      return;
    }
    if (n->kind != ir::NodeKind::CallFunction)
      throw ConversionError("node %" + n->name + ": " + ir::to_string(n->kind) + " nodes cannot be converted");
    Capability cap = ConverterRegistry::global().lookup(*n, settings);
    if (cap.verdict != Verdict::kConvertible)
      throw ConversionError("node %" + n->name + " (" + ir::target_and_source(*n) +
                            ") cannot be converted: " + cap.reason);

    std::vector<Value> args;
    Kwargs kwargs;
    try {
      if (const ir::OpSchema* schema = ir::find_schema(n->target)) {
        ir::BoundArgs bound(*n, *schema);
        for (const auto& a : bound.positional()) args.push_back(to_value(a));
        for (const auto& [k, a] : bound.keyword()) kwargs.emplace_back(k, to_value(a));
      } else {  // getitem, _operator.*: no schema, arguments as written
        for (const auto& a : n->args) args.push_back(to_value(a));
        for (const auto& [k, a] : n->kwargs) kwargs.emplace_back(k, to_value(a));
      }
    } catch (const ConversionError&) {
      throw;
    } catch (const std::exception& e) {
      throw ConversionError("node %" + n->name + " (" + ir::target_and_source(*n) + "): " + e.what());
    }

    ctx->current_node = n;
    ctx->net.set_origin_of_new_layers(ir::target_and_source(*n));
    Value result;
    try {
      result = cap.converter->fn(*ctx, n->target, args, kwargs, n->name);
      result = conform(n, std::move(result));
    } catch (const std::exception& e) {
      ctx->net.set_origin_of_new_layers("");
      throw ConversionError("node %" + n->name + " (" + ir::target_and_source(*n) + "): " + e.what());
    }
    ctx->net.set_origin_of_new_layers("");
    ctx->current_node = nullptr;
    if (cap.converter->requires_output_allocator) ctx->requires_output_allocator = true;
    if (result.is_tensor() && n->meta.is_tensor()) bind_data_dependent_sizes(n->meta.tensor, result.tensor());
    if (result.is_list())
      for (size_t i = 0; i < result.list().size() && i < n->meta.tuple.size(); ++i)
        if (result.list()[i].is_tensor() && n->meta.tuple[i])
          bind_data_dependent_sizes(*n->meta.tuple[i], result.list()[i].tensor());
    seg.values[n] = std::move(result);
    seg.used.emplace_back(n, cap.converter);
  }

  // A network output must be a layer's own output, marked once: values that are network inputs,
  // weights or already-marked tensors get an identity layer.
  void mark(engine::Tensor* t, const std::string& name, std::set<engine::Tensor*>& marked) {
    if (t->is_input() || marked.count(t) || (t->producer() && t->producer()->as<engine::ConstantParams>()))
      t = ctx->net.add_identity(name + "/output", t)->output(0);
    marked.insert(t);
    ctx->net.mark_output(t, name);
    seg.output_names.push_back(name);
  }

  void add_output(const ir::Node* n, std::set<engine::Tensor*>& marked) {
    Value v = value_of(n);
    if (v.is_tensor()) return mark(v.tensor(), n->name, marked);
    if (v.is_list()) {
      const auto& l = v.list();
      for (size_t i = 0; i < l.size(); ++i)
        if (l[i].is_tensor()) mark(l[i].tensor(), n->name + "." + std::to_string(i), marked);
      return;
    }
    throw ConversionError("segment output %" + n->name + " is not a tensor (" + v.debug() +
                          "); symbolic ints cannot leave a segment");
  }
};

}  // namespace

ConvertedSegment convert_segment(const ir::ExportedProgram& program, const std::vector<const ir::Node*>& nodes,
                                 const std::vector<const ir::Node*>& inputs,
                                 const std::vector<const ir::Node*>& outputs, const CompilationSettings& settings) {
  Driver d{program, settings, {}, nullptr};
  d.seg.network = std::make_unique<engine::Network>();
  d.ctx = std::make_unique<ConversionContext>(*d.seg.network, settings, &program);
  for (const ir::Node* n : inputs) {
    try {
      d.add_input(n);
    } catch (const ConversionError& e) {
      throw ConversionError("segment input %" + n->name + ": " + e.what());
    }
  }
  for (const ir::Node* n : nodes) d.convert(n);
  std::set<engine::Tensor*> marked;
  for (const ir::Node* n : outputs) d.add_output(n, marked);
  d.seg.weight_records = d.ctx->weight_records;
  return std::move(d.seg);
}

}  // namespace kiln::conversion
