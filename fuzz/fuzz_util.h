// Small helpers the fuzz targets share: little-endian fields and the FNV-1a 64 checksum that the
// .kiln file and its plans end with (program/serialize.cpp, engine/plan.cpp).
#pragma once

#include <cstdint>
#include <cstring>

namespace kiln::fuzz {

inline uint64_t get_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

// FNV-1a 64 from offset basis `basis`: plans use the standard one (kPlanBasis); the .kiln file's
// own checksum starts from 1469598103934665603, the standard basis without its last digit
// (program/serialize.cpp), which the format now keeps.
constexpr uint64_t kPlanBasis = 14695981039346656037ull;
constexpr uint64_t kProgramBasis = 1469598103934665603ull;
inline uint64_t fnv1a(const uint8_t* p, size_t n, uint64_t basis) {
  uint64_t h = basis;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace kiln::fuzz
