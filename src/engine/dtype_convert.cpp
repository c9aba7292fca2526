// Scalar conversions between the engine's dtypes, for the builder (constant conversion under
// fp16/bf16 precision, scalar constants inlined into fused kernels); 16-bit floats by engine/half.h.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "engine/half.h"
#include "engine/network_internal.h"

namespace kiln::engine::detail {

double element_as_double(const void* data, DataType t, int64_t i) {
  switch (t) {
    case DataType::kFloat32: return static_cast<const float*>(data)[i];
    case DataType::kFloat16: return f16_bits_to_float(static_cast<const uint16_t*>(data)[i]);
    case DataType::kBFloat16: return bf16_bits_to_float(static_cast<const uint16_t*>(data)[i]);
    case DataType::kInt64: return static_cast<double>(static_cast<const int64_t*>(data)[i]);
    case DataType::kInt32: return static_cast<const int32_t*>(data)[i];
    case DataType::kInt8: return static_cast<const int8_t*>(data)[i];
    case DataType::kUInt8: return static_cast<const uint8_t*>(data)[i];
    case DataType::kBool: return static_cast<const uint8_t*>(data)[i] ? 1.0 : 0.0;
  }
  return 0;
}

void convert_elements(const void* src, DataType from, void* dst, DataType to, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    // int64 -> int64 must not go through double (precision above 2^53)
    if (from == DataType::kInt64 && to == DataType::kInt64) {
      static_cast<int64_t*>(dst)[i] = static_cast<const int64_t*>(src)[i];
      continue;
    }
    double v = element_as_double(src, from, i);
    switch (to) {
      case DataType::kFloat32: static_cast<float*>(dst)[i] = static_cast<float>(v); break;
      case DataType::kFloat16: static_cast<uint16_t*>(dst)[i] = float_to_f16_bits(static_cast<float>(v)); break;
      case DataType::kBFloat16: static_cast<uint16_t*>(dst)[i] = float_to_bf16_bits(static_cast<float>(v)); break;
      case DataType::kInt64: static_cast<int64_t*>(dst)[i] = static_cast<int64_t>(v); break;
      case DataType::kInt32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(v); break;
      case DataType::kInt8: static_cast<int8_t*>(dst)[i] = static_cast<int8_t>(v); break;
      case DataType::kUInt8: static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(v); break;
      case DataType::kBool: static_cast<uint8_t*>(dst)[i] = v != 0; break;
    }
  }
}

bool debug_logging() {
  static const bool on = [] {
    const char* v = std::getenv("KILN_LOG");
    return v && std::string(v) == "debug";
  }();
  return on;
}

void log_debug(const std::string& msg) {
  if (debug_logging()) std::cerr << "[kiln engine] " << msg << "\n";
}

}  // namespace kiln::engine::detail
