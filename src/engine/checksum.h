// Integrity checksums of kiln's files (.kiln programs and the plans inside them). They catch
// corruption and truncation, not tampering: anyone can recompute them, and loading checks every
// field it reads regardless.
//
// Version 1 files carry FNV-1a 64 over their bytes, whose one multiply per byte in a single chain
// runs at about 0.5 GB/s: checking a 100 MB .kiln took 0.2 s, as long as compiling it on the CPU.
// Version 2 files carry `checksum64`: four FNV-style lanes over 8-byte words (each step a multiply
// and a shift-xor, so high bits reach low ones), combined through a 64-bit finalizer with the
// length. Independent lanes keep the processor's multipliers busy: several GB/s, memory-bound.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::engine {

// FNV-1a 64 of n bytes from `basis` (version 1 files: plans start from FNV's offset basis, .kiln
// programs from 1469598103934665603, a digit short of it).
uint64_t fnv1a64(const uint8_t* p, size_t n, uint64_t basis);
// The version 2 checksum.
uint64_t checksum64(const uint8_t* p, size_t n);
// The checksum a file of `version` carries: FNV-1a from `v1_basis` in version 1, checksum64 after.
uint64_t versioned_checksum(uint32_t version, const uint8_t* p, size_t n, uint64_t v1_basis);

}  // namespace kiln::engine
