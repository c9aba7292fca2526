// Value types of the ATen-level IR: scalar types, devices, memory formats, tensor metadata.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ir/symexpr.h"

namespace kiln::ir {

// PyTorch's dtypes, named as c10 names them. (The .pt2 enum numbers differ; the reader maps by name.)
enum class ScalarType : uint8_t {
  Undefined, Byte, Char, Short, Int, Long, Half, Float, Double,
  ComplexHalf, ComplexFloat, ComplexDouble, Bool, BFloat16, UInt16,
  Float8_e4m3fn, Float8_e5m2, Float8_e4m3fnuz, Float8_e5m2fnuz,
};
const char* to_string(ScalarType t);          // "torch.float32" style: "float32", "int64", ...
size_t element_size(ScalarType t);            // 0 for Undefined
bool is_floating(ScalarType t);
std::optional<ScalarType> scalar_type_from_name(const std::string& name);  // "float32" / "Float"

enum class MemoryFormat : uint8_t { Contiguous, ChannelsLast, ChannelsLast3d, Preserve };
enum class Layout : uint8_t { Strided, Sparse, SparseCsr, SparseCsc, SparseBsr, SparseBsc, Mkldnn };
const char* to_string(MemoryFormat f);
const char* to_string(Layout l);

struct Device {
  std::string type = "cpu";  // "cpu", "cuda", "meta"
  std::optional<int> index;
  std::string str() const;   // "cuda:0"
  bool operator==(const Device&) const = default;
};

struct TensorMeta {
  ScalarType dtype = ScalarType::Float;
  std::vector<SymInt> sizes;
  std::vector<SymInt> strides;  // may be empty when unknown
  SymInt storage_offset = 0;
  Device device;
  bool requires_grad = false;

  size_t rank() const { return sizes.size(); }
  bool is_static() const;                      // every size constant
  std::optional<int64_t> static_numel() const; // nullopt when dynamic; throws on overflow
  std::string str() const;                     // "f32[s0, 16]"
};

}  // namespace kiln::ir
