// A compiled program: accelerated segments (each an engine plan), fallback nodes run by PyTorch's
// kernels, and host-evaluated symbolic ints, in one dependency-respecting order; plus the input
// specs a run is checked against. Built by compile() from an exported program, saved to and
// loaded from a `.kiln` file (program/serialize.cpp), printed like torch.fx's graph with
// `_run_on_acc_N` calls, run on host tensors.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "conversion/settings.h"
#include "engine/builder.h"
#include "engine/plan.h"
#include "engine/runtime.h"
#include "ir/graph.h"
#include "partition/partition.h"
#include "program/value.h"

namespace kiln::program {

// Bad input from the user (arguments, files, input tensors): the CLI exits 2 on it.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A .kiln file that is not one, is corrupted, or has an unknown version.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// `--dynamic NAME:DIM:MIN:OPT:MAX`: the range of one input dimension.
struct DynamicSpec {
  std::string input;
  int64_t dim = 0;
  int64_t min = 1, opt = 1, max = 1;
  static DynamicSpec parse(const std::string& text);  // throws InputError naming the spec
};

struct InputSpec {
  std::string name;
  ir::TensorMeta meta;  // sizes may be symbolic
  std::string str() const;  // "x: f32[s77, 64]"
};

struct CompileOptions {
  conversion::CompilationSettings settings;
  std::vector<DynamicSpec> dynamic;
  std::ostream* log = nullptr;  // stage progress and timings ("kiln: convert ... 12.3 ms")
  // CUDA: compile the plans' generated kernels. Off for a program built only to refit another
  // (CompiledProgram::refit keeps the kernels it has).
  bool device_code = true;
};

// One accelerated segment after building.
struct AccSegment {
  std::string name;                           // _run_on_acc_N
  engine::Plan plan;
  std::vector<std::string> input_values;      // network input names: IR value names, "<tuple>.<i>" for tuple elements
  std::vector<std::string> output_values;     // network output names, likewise
  std::vector<std::string> ops;               // targets of the nodes inside, in order (for printing)
  size_t compute_ops = 0;
};

struct Step {
  enum class Kind : uint8_t { kAccelerated, kFallback } kind = Kind::kFallback;
  int segment = -1;            // kAccelerated
  ir::Node* node = nullptr;    // kFallback: a node of CompiledProgram::graph()
};

struct RunOptions {
  engine::DeviceKind device = engine::DeviceKind::kCPU;
  // For timing the engine alone (`kiln bench`), as eager PyTorch is timed with its tensors already
  // on the GPU: program inputs are uploaded once and reused while their sizes stay the same, and
  // program outputs that no later step reads are not copied back (run() returns them unfilled:
  // dims, no data).
  bool device_resident_io = false;
};

class CompiledProgram {
 public:
  CompiledProgram();
  ~CompiledProgram();
  CompiledProgram(CompiledProgram&&) noexcept;
  CompiledProgram& operator=(CompiledProgram&&) noexcept;

  const std::vector<InputSpec>& inputs() const { return inputs_; }
  const std::map<std::string, engine::SymbolRange>& ranges() const { return ranges_; }
  const std::vector<AccSegment>& segments() const { return segments_; }
  const std::vector<Step>& steps() const { return steps_; }
  // The program's own small graph: placeholders for user inputs and segment results, get_attr for
  // weights fallback nodes read, the fallback and symbolic nodes, and the output node.
  const ir::Graph& graph() const { return graph_; }
  std::vector<std::string> fallback_ops() const;  // distinct targets run by the fallback executor
  engine::DeviceKind device() const { return device_; }  // what the plans were built for
  engine::Precision precision() const { return precision_; }
  // Weights the fallback nodes read, by state-dict name (the get_attr targets of graph()).
  const std::map<std::string, HostTensor>& weights() const { return weights_; }

  // Checks every input against its spec (InputError naming the input and what was expected),
  // then runs the steps. Fallback steps need a registered FallbackExecutor.
  std::vector<HostTensor> run(const std::vector<HostTensor>& inputs, const RunOptions& options = {}) const;

  // fx-style listing: placeholders, `_run_on_acc_N` calls, fallback ops by name, output.
  std::string str() const;
  std::string summary() const;  // segments, their plans' memory, fallback ops

  // Takes the weights of `fresh`, the same program compiled with other weight values (a fine-tuned
  // checkpoint), in place of this one's: each plan's constants (engine::Plan::refit) and the weights
  // fallback ops read. Nothing is rebuilt: kernel choices, compiled kernels and execution contexts
  // stay. Throws InputError naming the segment or weight where the two programs differ in anything
  // but weight values. Not to be called while the program runs on another thread.
  void refit(const CompiledProgram& fresh);

  void save(const std::string& path) const;
  std::vector<uint8_t> serialize() const;
  static CompiledProgram load(const std::string& path);  // FormatError / InputError (missing file)
  static CompiledProgram deserialize(const uint8_t* data, size_t size);

 private:
  friend class Compiler;
  friend struct ProgramSerializer;
  struct Runtime;

  ir::Graph graph_;
  std::vector<InputSpec> inputs_;
  std::map<std::string, engine::SymbolRange> ranges_;
  std::vector<AccSegment> segments_;
  std::vector<Step> steps_;
  std::map<std::string, HostTensor> weights_;  // read by fallback nodes, by state-dict name
  engine::Precision precision_ = engine::Precision::kFP32;
  engine::DeviceKind device_ = engine::DeviceKind::kCPU;
  std::unique_ptr<Runtime> runtime_;  // execution contexts, created on first run
};

// Lowers `program` in place, partitions, converts and builds each segment. Throws InputError for
// bad options (unknown op, bad --dynamic), partition::PartitionError under require_full_compilation,
// conversion / engine errors otherwise.
CompiledProgram compile(ir::ExportedProgram& program, const CompileOptions& options);

// Refuses (InputError listing the ops) a program whose fallback ops no registered executor runs.
void check_fallback(const CompiledProgram& program);

// Lowering + partitioning only: the `--dryrun` report. Builds nothing.
std::string dry_run(ir::ExportedProgram& program, const CompileOptions& options);

// Checks each name in `ops` (accepting a `torch.ops.` prefix, normalizing it away) against the
// schema table and the registry; throws InputError naming an unknown op.
std::set<std::string> parse_op_list(const std::string& comma_separated);

// Measures stages for progress output: `kiln: <stage> ... <ms> ms` on `log` when it is set.
class StageTimer {
 public:
  StageTimer(std::ostream* log, std::string stage);
  ~StageTimer();
  double elapsed_ms() const;

 private:
  std::ostream* log_;
  std::string stage_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace kiln::program
