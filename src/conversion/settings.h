// Compilation settings, as Torch-TensorRT's CompilationSettings: what validators see and what the
// partitioner, converters and builder obey.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "engine/builder.h"

namespace kiln::conversion {

struct CompilationSettings {
  int64_t min_block_size = 5;
  std::set<std::string> torch_executed_ops;  // op overloads, "aten.relu.default"
  bool require_full_compilation = false;
  engine::Precision precision = engine::Precision::kFP32;
  engine::DeviceKind device = engine::DeviceKind::kCPU;
  int cuda_arch = 0;  // CUDA: compile the plans' kernels for sm_<arch> (0: the GPU at hand)
  bool assume_dynamic_shape_support = false;
  bool dryrun = false;
  size_t workspace_limit = size_t{1} << 30;
};

}  // namespace kiln::conversion
