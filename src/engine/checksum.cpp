#include "engine/checksum.h"

#include <cstring>

namespace kiln::engine {

namespace {
constexpr uint64_t kFnvPrime = 0x100000001b3ull;

// MurmurHash3's 64-bit finalizer: every input bit reaches every output bit.
uint64_t finalize(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}
}  // namespace

uint64_t fnv1a64(const uint8_t* p, size_t n, uint64_t basis) {
  uint64_t h = basis;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}

uint64_t checksum64(const uint8_t* p, size_t n) {
  uint64_t lane[4] = {0xcbf29ce484222325ull, 0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full, 0x165667b19e3779f9ull};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * size_t(k), 8);
      lane[k] = (lane[k] ^ w) * kFnvPrime;
      lane[k] ^= lane[k] >> 29;
    }
  }
  for (; i < n; ++i) lane[i % 4] = (lane[i % 4] ^ p[i]) * kFnvPrime;  // the tail, byte by byte
  uint64_t h = finalize(n);
  for (uint64_t l : lane) h = finalize(h ^ finalize(l));
  return h;
}

uint64_t versioned_checksum(uint32_t version, const uint8_t* p, size_t n, uint64_t v1_basis) {
  return version == 1 ? fnv1a64(p, n, v1_basis) : checksum64(p, n);
}

}  // namespace kiln::engine
