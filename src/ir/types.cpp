#include "ir/types.h"

#include <stdexcept>

namespace kiln::ir {
namespace {

struct DtypeInfo {
  ScalarType type;
  const char* name;   // torch's: torch.float32 -> "float32"
  const char* c10;    // c10's: "Float"
  const char* brief;  // fx's meta print: "f32"
  size_t size;
  bool floating;
};

constexpr DtypeInfo kDtypes[] = {
    {ScalarType::Undefined, "undefined", "Undefined", "?", 0, false},
    {ScalarType::Byte, "uint8", "Byte", "u8", 1, false},
    {ScalarType::Char, "int8", "Char", "i8", 1, false},
    {ScalarType::Short, "int16", "Short", "i16", 2, false},
    {ScalarType::Int, "int32", "Int", "i32", 4, false},
    {ScalarType::Long, "int64", "Long", "i64", 8, false},
    {ScalarType::Half, "float16", "Half", "f16", 2, true},
    {ScalarType::Float, "float32", "Float", "f32", 4, true},
    {ScalarType::Double, "float64", "Double", "f64", 8, true},
    {ScalarType::ComplexHalf, "complex32", "ComplexHalf", "c32", 4, false},
    {ScalarType::ComplexFloat, "complex64", "ComplexFloat", "c64", 8, false},
    {ScalarType::ComplexDouble, "complex128", "ComplexDouble", "c128", 16, false},
    {ScalarType::Bool, "bool", "Bool", "b8", 1, false},
    {ScalarType::BFloat16, "bfloat16", "BFloat16", "bf16", 2, true},
    {ScalarType::UInt16, "uint16", "UInt16", "u16", 2, false},
    {ScalarType::Float8_e4m3fn, "float8_e4m3fn", "Float8_e4m3fn", "f8e4m3fn", 1, true},
    {ScalarType::Float8_e5m2, "float8_e5m2", "Float8_e5m2", "f8e5m2", 1, true},
    {ScalarType::Float8_e4m3fnuz, "float8_e4m3fnuz", "Float8_e4m3fnuz", "f8e4m3fnuz", 1, true},
    {ScalarType::Float8_e5m2fnuz, "float8_e5m2fnuz", "Float8_e5m2fnuz", "f8e5m2fnuz", 1, true},
};

const DtypeInfo& info(ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d;
  return kDtypes[0];
}

}  // namespace

const char* to_string(ScalarType t) { return info(t).name; }
size_t element_size(ScalarType t) { return info(t).size; }
bool is_floating(ScalarType t) { return info(t).floating; }

std::optional<ScalarType> scalar_type_from_name(const std::string& name_in) {
  std::string name = name_in;
  if (name.rfind("torch.", 0) == 0) name = name.substr(6);
  for (const auto& d : kDtypes)
    if (d.type != ScalarType::Undefined && (name == d.name || name == d.c10 || name == d.brief)) return d.type;
  // torch's aliases (torch.float, torch.half, torch.long, ...).
  static const std::pair<const char*, ScalarType> aliases[] = {
      {"float", ScalarType::Float},   {"double", ScalarType::Double}, {"half", ScalarType::Half},
      {"long", ScalarType::Long},     {"int", ScalarType::Int},       {"short", ScalarType::Short},
      {"cfloat", ScalarType::ComplexFloat}, {"cdouble", ScalarType::ComplexDouble},
      {"chalf", ScalarType::ComplexHalf},
  };
  for (const auto& [alias, t] : aliases)
    if (name == alias) return t;
  return std::nullopt;
}

const char* to_string(MemoryFormat f) {
  switch (f) {
    case MemoryFormat::Contiguous: return "torch.contiguous_format";
    case MemoryFormat::ChannelsLast: return "torch.channels_last";
    case MemoryFormat::ChannelsLast3d: return "torch.channels_last_3d";
    case MemoryFormat::Preserve: return "torch.preserve_format";
  }
  return "?";
}

const char* to_string(Layout l) {
  switch (l) {
    case Layout::Strided: return "torch.strided";
    case Layout::Sparse: return "torch.sparse_coo";
    case Layout::SparseCsr: return "torch.sparse_csr";
    case Layout::SparseCsc: return "torch.sparse_csc";
    case Layout::SparseBsr: return "torch.sparse_bsr";
    case Layout::SparseBsc: return "torch.sparse_bsc";
    case Layout::Mkldnn: return "torch._mkldnn";
  }
  return "?";
}

std::string Device::str() const { return index ? type + ":" + std::to_string(*index) : type; }

bool TensorMeta::is_static() const {
  for (const auto& s : sizes)
    if (!s.is_constant()) return false;
  return true;
}

std::optional<int64_t> TensorMeta::static_numel() const {
  int64_t n = 1;
  for (const auto& s : sizes) {
    if (!s.is_constant()) return std::nullopt;
    if (s.value < 0) throw std::overflow_error("tensor " + str() + " has a negative size");
    if (__builtin_mul_overflow(n, s.value, &n)) throw std::overflow_error("element count of " + str() + " overflows int64");
  }
  return n;
}

std::string TensorMeta::str() const {
  std::string s = info(dtype).brief;
  s += "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + sizes[i].str();
  return s + "]";
}

}  // namespace kiln::ir
