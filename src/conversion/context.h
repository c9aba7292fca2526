// The conversion context: the network under construction, the settings, the node being converted,
// and helpers that turn constants, scalars and weights into network tensors.
#pragma once

#include <map>
#include <string>

#include "conversion/registry.h"
#include "engine/network.h"
#include "ir/graph.h"

namespace kiln::conversion {

enum class SourceIR : uint8_t { ATEN, PRIM, TORCH, NN, ACC, UNKNOWN };
const char* to_string(SourceIR s);

// A scalar as 0-d constant data of `dtype` (f16/bf16 rounded to nearest even).
engine::Weights scalar_as_weights(double v, engine::DataType dtype);

class ConversionContext {
 public:
  ConversionContext(engine::Network& net, const CompilationSettings& settings, const ir::ExportedProgram* program);

  engine::Network& net;
  const CompilationSettings& settings;
  const ir::ExportedProgram* program;      // for weights; may be null in unit tests
  const ir::Node* current_node = nullptr;  // set while a converter runs
  bool requires_output_allocator = false;  // set when a converter with that flag ran

  // Weights recorded by name (state-dict name -> network constant), for refit and reuse:
  // a weight used by several nodes becomes one constant.
  std::map<std::string, engine::Tensor*> weight_records;

  // Network tensors for constants. Scalars take `like`'s dtype when given (PyTorch's type promotion
  // for tensor-scalar ops), else f32 for doubles / i64 for ints.
  engine::Tensor* constant(const engine::Weights& w, const std::string& name);
  engine::Tensor* scalar(double v, engine::DataType dtype, const std::string& name);
  engine::Tensor* weight(const std::string& state_dict_name);
  // A converter argument that may be a tensor or a python scalar, as a tensor of `like`'s dtype.
  engine::Tensor* to_tensor(const Value& v, const engine::Tensor* like, const std::string& name);
  // Layer names unique and traceable to their node: "<node>/<suffix>".
  std::string layer_name(const std::string& suffix) const;

  // torch.export names a data-dependent size with an unbacked symbol of its own (u0, a nonzero's
  // count), and the converter that makes that size names it with the engine's count symbol. The
  // driver binds the first (convert.cpp) to the converted result's dim; sizes read from the export
  // afterwards (symbolic arguments, the node's metadata in node_shape) go through with_bound_sizes
  // and mean the count the plan computes, not a symbol nothing in the plan binds.
  std::map<std::string, engine::DimExpr> data_dependent_sizes;
  engine::DimExpr with_bound_sizes(const engine::DimExpr& e) const;
};

}  // namespace kiln::conversion
