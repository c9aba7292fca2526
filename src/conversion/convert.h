// The conversion driver: turns a segment of an IR graph into an engine network by calling each
// node's converter (looked up in the registry), plus the IR -> engine type translations it uses.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "conversion/context.h"
#include "conversion/registry.h"
#include "engine/network.h"
#include "ir/graph.h"

namespace kiln::conversion {

struct ConvertedSegment {
  std::unique_ptr<engine::Network> network;
  // Network input / output names, in the order of the `inputs` / `outputs` given (tensor values only;
  // names are the IR node names).
  std::vector<std::string> input_names;
  std::vector<std::string> output_names;
  // What each converted node produced (for tests and debugging).
  std::map<const ir::Node*, Value> values;
  // Which converter each node used (origin and priority), in conversion order.
  std::vector<std::pair<const ir::Node*, const ConverterSpec*>> used;
  std::map<std::string, engine::Tensor*> weight_records;
};

// `nodes` in topological order; `inputs` = values defined outside and read inside (placeholders,
// other segments' outputs, get_attr weights, symbolic ints); `outputs` = values read after the
// segment. Throws ConversionError naming the node on failure (converter error, no converter).
ConvertedSegment convert_segment(const ir::ExportedProgram& program, const std::vector<const ir::Node*>& nodes,
                                 const std::vector<const ir::Node*>& inputs,
                                 const std::vector<const ir::Node*>& outputs, const CompilationSettings& settings);

// Translations. Double maps to f32 (the engine has no f64) only when `allow_double_as_float`;
// otherwise unsupported dtypes throw ConversionError naming the dtype.
bool has_engine_dtype(ir::ScalarType t);
engine::DataType to_engine_dtype(ir::ScalarType t);
ir::ScalarType to_ir_dtype(engine::DataType t);
// SymExpr -> DimExpr: symbols keep their names ("s77"). Throws ConversionError for functions the
// engine has no operator for.
engine::DimExpr to_dim_expr(const ir::SymInt& s);
engine::Shape to_shape(const ir::TensorMeta& m);

}  // namespace kiln::conversion
