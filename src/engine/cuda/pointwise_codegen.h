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
std::string generate(const FusedPointwiseParams& prog, const std::vector<DataType>& in_types);
// The one-instruction program of a one-op layer (or the FusedPointwise params themselves).
FusedPointwiseParams program_of(const Layer& layer);
// out = act(out + bias + residual) as a program over inputs (out[, bias][, residual]).
FusedPointwiseParams epilogue_program(DataType dt, bool bias, const std::optional<ActivationParams>& act, bool residual);

}  // namespace kiln::engine::cuda
