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
// out = act(out + bias + residual) as a program over inputs (out[, bias][, residual]).
FusedPointwiseParams epilogue_program(DataType dt, bool bias, const std::optional<ActivationParams>& act, bool residual);

}  // namespace kiln::engine::cuda
