// The libtorch bridge: runs any ATen op overload by name through c10's operator dispatcher,
// with an IValue stack built from the node's arguments against the op's own schema. No per-op
// code. It is the program's fallback executor and the reference oracle for converter tests.
// This header does not include libtorch: only torch_bridge.cpp pays for its headers.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "program/fallback.h"
#include "program/value.h"

namespace kiln::torch_bridge {

// A FallbackExecutor backed by libtorch: its CPU kernels, and its CUDA kernels on GPU memory when
// this libtorch has CUDA (PyTorch's wheel) and a GPU is present.
std::shared_ptr<program::FallbackExecutor> make_executor();
// Registers make_executor() as the process's fallback executor (idempotent).
void install();

// The oracle: runs `node` with PyTorch's kernels. `inputs` are the values of node.inputs() in
// order. Returns the node's tensors (one, or each element of a tuple/list result).
std::vector<program::HostTensor> run_node(const ir::Node& node, const std::vector<program::RtValue>& inputs);

std::string torch_version();  // "1.13.0"

}  // namespace kiln::torch_bridge
