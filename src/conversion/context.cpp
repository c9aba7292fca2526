// The conversion context: constants, scalars and weights as network tensors.
#include "conversion/context.h"

#include <cstring>

#include "conversion/convert.h"
#include "conversion/impl/impl.h"
#include "engine/half.h"

namespace kiln::conversion {

const char* to_string(SourceIR s) {
  switch (s) {
    case SourceIR::ATEN: return "aten";
    case SourceIR::PRIM: return "prim";
    case SourceIR::TORCH: return "torch";
    case SourceIR::NN: return "nn";
    case SourceIR::ACC: return "acc";
    case SourceIR::UNKNOWN: return "unknown";
  }
  return "unknown";
}

ConversionContext::ConversionContext(engine::Network& n, const CompilationSettings& s, const ir::ExportedProgram* p)
    : net(n), settings(s), program(p) {}

engine::DimExpr ConversionContext::with_bound_sizes(const engine::DimExpr& e) const {
  using Op = engine::DimExpr::Op;
  if (data_dependent_sizes.empty() || e.is_constant()) return e;
  if (e.op() == Op::Sym) {
    auto it = data_dependent_sizes.find(e.symbol_name());
    return it == data_dependent_sizes.end() ? e : it->second;
  }
  return engine::DimExpr::binary(e.op(), with_bound_sizes(e.lhs()), with_bound_sizes(e.rhs()));
}

std::string ConversionContext::layer_name(const std::string& suffix) const {
  if (!current_node) return suffix;
  const std::string& node = current_node->name;
  // Already traceable (impl helpers pass the converter's `name`, which is the node's).
  if (suffix.rfind(node, 0) == 0 && (suffix.size() == node.size() || suffix[node.size()] == '/' ||
                                     suffix[node.size()] == '_' || suffix[node.size()] == '.'))
    return suffix;
  return node + "/" + suffix;
}

engine::Tensor* ConversionContext::constant(const engine::Weights& w, const std::string& name) {
  return net.add_constant(layer_name(name), w)->output(0);
}

namespace {
template <class T>
engine::Weights scalar_weights(engine::DataType dt, T v) {
  return engine::Weights::copy_of(dt, {}, &v);
}
}  // namespace

engine::Weights scalar_as_weights(double v, engine::DataType dtype) {
  using engine::DataType;
  switch (dtype) {
    case DataType::kFloat32: return scalar_weights<float>(dtype, static_cast<float>(v));
    case DataType::kFloat16: return scalar_weights<uint16_t>(dtype, engine::float_to_f16_bits(static_cast<float>(v)));
    case DataType::kBFloat16: return scalar_weights<uint16_t>(dtype, engine::float_to_bf16_bits(static_cast<float>(v)));
    case DataType::kInt64: return scalar_weights<int64_t>(dtype, static_cast<int64_t>(v));
    case DataType::kInt32: return scalar_weights<int32_t>(dtype, static_cast<int32_t>(v));
    case DataType::kInt8: return scalar_weights<int8_t>(dtype, static_cast<int8_t>(v));
    case DataType::kUInt8: return scalar_weights<uint8_t>(dtype, static_cast<uint8_t>(v));
    case DataType::kBool: return scalar_weights<uint8_t>(dtype, v != 0 ? 1 : 0);
  }
  throw ConversionError("unsupported scalar dtype");
}

engine::Tensor* ConversionContext::scalar(double v, engine::DataType dtype, const std::string& name) {
  return constant(scalar_as_weights(v, dtype), name);
}

engine::Tensor* ConversionContext::weight(const std::string& state_dict_name) {
  if (auto it = weight_records.find(state_dict_name); it != weight_records.end()) return it->second;
  if (!program) throw ConversionError("weight '" + state_dict_name + "' requested without a program");
  auto it = program->weights.find(state_dict_name);
  if (it == program->weights.end()) throw ConversionError("unknown weight '" + state_dict_name + "'");
  const ir::Weight& w = it->second;
  std::vector<int64_t> dims;
  for (const auto& s : w.meta.sizes) {
    if (!s.is_constant()) throw ConversionError("weight '" + state_dict_name + "' has a symbolic size");
    dims.push_back(s.value);
  }
  engine::Weights ew;
  ew.dims = dims;
  int64_t numel = 1;
  for (int64_t d : dims) numel *= d;
  const bool as_double = w.meta.dtype == ir::ScalarType::Double;
  ew.dtype = as_double ? engine::DataType::kFloat32 : to_engine_dtype(w.meta.dtype);
  if (w.is_contiguous() && !as_double) {
    // Zero-copy: the network constant aliases the program's storage and keeps it alive.
    ew.data = std::shared_ptr<const uint8_t>(w.storage, w.data());
  } else {
    // Strided (e.g. a transposed view stored once) or f64: gather into fresh contiguous memory.
    const size_t src_es = ir::element_size(w.meta.dtype), dst_es = engine::element_size(ew.dtype);
    std::vector<int64_t> strides;
    for (const auto& s : w.meta.strides) strides.push_back(s.value);
    if (strides.size() != dims.size()) {  // unknown strides: contiguous
      strides.assign(dims.size(), 1);
      for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * dims[i + 1];
    }
    auto buf = std::shared_ptr<uint8_t[]>(new uint8_t[static_cast<size_t>(numel) * dst_es]);
    std::vector<int64_t> idx(dims.size(), 0);
    for (int64_t e = 0; e < numel; ++e) {
      int64_t off = 0;
      for (size_t d = 0; d < dims.size(); ++d) off += idx[d] * strides[d];
      const uint8_t* src = w.data() + off * static_cast<int64_t>(src_es);
      uint8_t* dst = buf.get() + e * static_cast<int64_t>(dst_es);
      if (as_double) {
        double x;
        std::memcpy(&x, src, 8);
        float f = static_cast<float>(x);
        std::memcpy(dst, &f, 4);
      } else {
        std::memcpy(dst, src, src_es);
      }
      for (int d = static_cast<int>(dims.size()) - 1; d >= 0; --d) {
        if (++idx[d] < dims[d]) break;
        idx[d] = 0;
      }
    }
    ew.data = std::shared_ptr<const uint8_t>(buf, buf.get());
  }
  // Weight constants are named after the state-dict entry (not the node) so refit can find them.
  engine::Tensor* t = net.add_constant(state_dict_name, std::move(ew))->output(0);
  weight_records[state_dict_name] = t;
  return t;
}

engine::Tensor* ConversionContext::to_tensor(const Value& v, const engine::Tensor* like, const std::string& name) {
  if (v.is_tensor()) return v.tensor();
  if (v.is<engine::DimExpr>()) {
    const auto& d = std::get<engine::DimExpr>(v.v);
    if (!d.is_constant()) {
      engine::Tensor* t = impl::symbolic_scalar(*this, d, name);
      if (like && like->dtype() != t->dtype()) t = net.add_cast(layer_name(name + "/cast"), t, like->dtype())->output(0);
      return t;
    }
    return scalar(static_cast<double>(*d.constant()), like ? like->dtype() : engine::DataType::kInt64, name);
  }
  engine::DataType dt;
  if (like) dt = like->dtype();
  else if (v.is<double>()) dt = engine::DataType::kFloat32;
  else if (v.is<bool>()) dt = engine::DataType::kBool;
  else dt = engine::DataType::kInt64;
  return scalar(v.to_double(), dt, name);
}

}  // namespace kiln::conversion
