// Scalar conversions between the engine's dtypes, for the builder (constant conversion under
// fp16/bf16 precision, scalar constants inlined into fused kernels). Kernels have their own.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "engine/network_internal.h"

namespace kiln::engine::detail {

namespace {

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while (!(mant & 0x400));
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);  // inf / nan
  if (absx >= 0x477ff000u) return sign | 0x7c00;                                       // overflow
  if (absx < 0x38800000u) {  // subnormal or zero in half
    if (absx < 0x33000000u) return sign;
    uint32_t mant = (absx & 0x7fffff) | 0x800000;
    int shift = 126 - static_cast<int>(absx >> 23);  // 14 + (113 - exp)
    uint32_t r = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
  uint32_t h = r >> 13, rem = r & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet nan
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

}  // namespace

double element_as_double(const void* data, DataType t, int64_t i) {
  switch (t) {
    case DataType::kFloat32: return static_cast<const float*>(data)[i];
    case DataType::kFloat16: return half_to_float(static_cast<const uint16_t*>(data)[i]);
    case DataType::kBFloat16: return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
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
      case DataType::kFloat16: static_cast<uint16_t*>(dst)[i] = float_to_half(static_cast<float>(v)); break;
      case DataType::kBFloat16: static_cast<uint16_t*>(dst)[i] = float_to_bf16(static_cast<float>(v)); break;
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
