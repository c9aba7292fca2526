// The pointwise kernels' source: the CUDA C++ NVRTC compiles for a FusedPointwise program (and
// the one-instruction programs of one-op layers and matmul/convolution epilogues), and the kernel
// argument block the launcher fills (pointwise.cpp). Host-only code: strings in, strings out.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "engine/network.h"

namespace kiln::engine::cuda {

constexpr int kMaxIn = 16;
constexpr int kMaxOut = 8;
constexpr int kRank = 8;

// Kernel argument block; the generated source declares the identical struct.
struct KArgs {
  const void* in[kMaxIn];
  void* out[kMaxOut];
  long long n;
  int rank;
  long long dims[kRank];
  long long st[kMaxIn][kRank];
};

// The module for `prog` with inputs of `in_types`: kernels `kiln_flat` (no input broadcast),
// `kiln_bcast` (per-input strides over collapsed dims) and `kiln_vec` (8 neighbouring elements
// per thread, 16-byte accesses), each taking one KArgs.
// With gathered loads (prog.gather), the kernels index the output's static shape and read layer
// input k at most `in_numel[k]` elements far.
std::string generate(const FusedPointwiseParams& prog, const std::vector<DataType>& in_types,
                     const std::vector<int64_t>& in_numel = {});
// A row program's module (FusedPointwiseParams::row_length > 0; in_is_row: which inputs hold one
// value per row): `kiln_flat` reads and writes element by element, `kiln_vec` (present when
// row_vector_width > 1) V neighbours at a time; each runs one row per T threads (row_shape).
struct RowShape {
  int threads;  // T: threads per row, 32 to 1024
  int vec;      // V: neighbouring elements per access
  int chunks;   // CH: accesses per thread and input
};
RowShape row_shape(int64_t row_length, int vec);
int row_vector_width(const FusedPointwiseParams& prog, const std::vector<DataType>& in_types,
                     const std::vector<char>& in_is_row);
std::string generate_rows(const FusedPointwiseParams& prog, const std::vector<DataType>& in_types,
                          const std::vector<char>& in_is_row);
// out = act(out + bias + residual) as a program over inputs (out[, bias][, residual]).
FusedPointwiseParams epilogue_program(DataType dt, bool bias, const std::optional<ActivationParams>& act, bool residual);

}  // namespace kiln::engine::cuda
