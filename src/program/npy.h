// NumPy .npy files (format 1.0-3.0), little-endian, C order: float32, float16, float64, int64,
// int32, int16, int8, uint8, bool.
// Hand-written: the format is a magic, a Python-dict header and raw bytes.
#pragma once

#include <stdexcept>
#include <string>

#include "program/value.h"

namespace kiln::program {

struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws NpyError naming the file and what is wrong (missing, bad magic, unsupported dtype,
// Fortran order, truncated data, header too large).
HostTensor read_npy(const std::string& path);
void write_npy(const std::string& path, const HostTensor& t);

}  // namespace kiln::program
