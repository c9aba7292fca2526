// Shared by the CUDA backend tests: run a network on the CUDA backend layer by layer, and compare
// it with the CPU backend (the reference).
//
// The same tests are also the backend coverage gate (ggml's test-backend-ops): with
// KILN_LIST_BACKEND_CASES=1 (ctest's engine_cuda_vs_cpu_coverage, which runs without a GPU too)
// check() runs nothing and only records the layers of each case; at exit the gate prints which
// layer kinds, operations and dtypes have a CUDA-vs-CPU case and fails for any layer kind or
// operation with none that tests/engine/cuda_uncovered.txt does not name with a reason.
#pragma once

#include "cpu_test_util.h"

namespace kiln::engine::cputest {

bool listing_backend_cases();  // KILN_LIST_BACKEND_CASES is set: check() records, runs nothing

// For tests whose cases all go through check(): they also run (to be listed) in listing mode.
#define REQUIRE_GPU() \
  if (!cuda_available() && !listing_backend_cases()) GTEST_SKIP() << "no CUDA device"
// For tests that use the device themselves or assert what ran: skipped when listing.
#define REQUIRE_GPU_RUN() \
  if (!cuda_available() || listing_backend_cases()) GTEST_SKIP() << "no CUDA device, or only listing cases"

Backend& gpu();
std::vector<Host> run_cuda(Network& net, const std::vector<Host>& inputs);
double gpu_tolerance(DataType t);
void check(const std::string& what, const std::function<void(Network&)>& make, const std::vector<Host>& inputs,
           double scale = 1);
inline Tensor* input(Network& n, const Host& h, const std::string& name) {
  return n.add_input(name, h.dtype, shape_of(h.dims));
}
inline const std::vector<DataType> kFloats = {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16};

}  // namespace kiln::engine::cputest
