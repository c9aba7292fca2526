// Shared by the CUDA backend tests: run a network on the CUDA backend layer by layer, and compare
// it with the CPU backend (the reference).
#pragma once

#include "cpu_test_util.h"

namespace kiln::engine::cputest {

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

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
