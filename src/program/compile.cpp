// compile(): lowering, partitioning, conversion and building, and the program graph that keeps
// what runs outside the segments. Also the option parsing the CLI and Python share.
#include <algorithm>
#include <cstring>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <set>
#include <sstream>

#include "conversion/convert.h"
#include "conversion/registry.h"
#include "ir/schema.h"
#include "program/fallback.h"
#include "program/program.h"

#include "lowering/passes.h"

namespace kiln::program {

// ---- small helpers shared with run/print ---------------------------------------------------------

StageTimer::StageTimer(std::ostream* log, std::string stage)
    : log_(log), stage_(std::move(stage)), start_(std::chrono::steady_clock::now()) {}
StageTimer::~StageTimer() {
  if (log_) *log_ << "kiln: " << stage_ << " " << std::fixed << std::setprecision(1) << elapsed_ms() << " ms\n" << std::flush;
}
double StageTimer::elapsed_ms() const {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
}

DynamicSpec DynamicSpec::parse(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream ss(text);
  std::string p;
  while (std::getline(ss, p, ':')) parts.push_back(p);
  auto bad = [&](const std::string& why) {
    return InputError("--dynamic '" + text + "': " + why + " (expected NAME:DIM:MIN:OPT:MAX, e.g. x:0:1:8:64)");
  };
  if (parts.size() != 5 || parts[0].empty()) throw bad("needs 5 fields");
  DynamicSpec d;
  d.input = parts[0];
  int64_t* fields[] = {&d.dim, &d.min, &d.opt, &d.max};
  for (int i = 0; i < 4; ++i) {
    try {
      size_t used = 0;
      *fields[i] = std::stoll(parts[i + 1], &used);
      if (used != parts[i + 1].size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw bad("'" + parts[i + 1] + "' is not an integer");
    }
  }
  if (d.dim < 0) throw bad("negative dimension index");
  if (d.min < 0 || d.min > d.opt || d.opt > d.max) throw bad("needs 0 <= MIN <= OPT <= MAX");
  return d;
}

std::string InputSpec::str() const {
  std::string s = name + ": " + short_name(meta.dtype) + "[";
  for (size_t i = 0; i < meta.sizes.size(); ++i) s += (i ? ", " : "") + meta.sizes[i].str();
  return s + "]";
}

std::set<std::string> parse_op_list(const std::string& text) {
  conversion::register_builtin_converters();
  std::set<std::string> ops;
  std::stringstream ss(text);
  std::string op;
  while (std::getline(ss, op, ',')) {
    op.erase(0, op.find_first_not_of(" \t"));
    op.erase(op.find_last_not_of(" \t") + 1);
    if (op.empty()) continue;
    if (op.rfind("torch.ops.", 0) == 0) op = op.substr(10);
    const auto targets = conversion::ConverterRegistry::global().targets();
    if (!ir::find_schema(op) && std::find(targets.begin(), targets.end(), op) == targets.end())
      throw InputError("unknown op '" + op + "' (expected an ATen overload such as aten.relu.default)");
    ops.insert(op);
  }
  return ops;
}

namespace {

bool runs_on_host(const ir::Node& n) {
  return partition::is_symbolic(n) || n.target == "getitem" || n.target.rfind("_operator.", 0) == 0;
}

void lower(ir::ExportedProgram& ep, std::ostream* log) {
  StageTimer t(log, "lower");
  lowering::run_passes(ep);
}

// The ranges every symbol gets in the builder profile: the export's range constraints, narrowed by
// --dynamic. An unbounded max is capped so memory planning stays finite.
constexpr int64_t kUnboundedMax = int64_t{1} << 20;

std::map<std::string, engine::SymbolRange> symbol_ranges(const ir::ExportedProgram& ep, const std::vector<DynamicSpec>& dyn) {
  std::map<std::string, engine::SymbolRange> ranges;
  for (const auto& [sym, r] : ep.ranges) {
    engine::SymbolRange s;
    s.min = r.min;
    s.max = r.max ? std::min(*r.max, kUnboundedMax) : kUnboundedMax;
    s.opt = std::clamp<int64_t>(16, s.min, s.max);
    ranges[sym] = s;
  }
  const auto placeholders = ep.graph.placeholders();
  for (const DynamicSpec& d : dyn) {
    const ir::Node* in = nullptr;
    std::string names;
    for (const ir::Node* p : placeholders) {
      names += (names.empty() ? "" : ", ") + p->name;
      if (p->name == d.input) in = p;
    }
    if (!in) throw InputError("--dynamic: the program has no input '" + d.input + "' (inputs: " + names + ")");
    const auto& sizes = in->meta.tensor.sizes;
    if (d.dim >= static_cast<int64_t>(sizes.size()))
      throw InputError("--dynamic: input '" + d.input + "' has rank " + std::to_string(sizes.size()) + ", no dim " +
                       std::to_string(d.dim));
    const ir::SymInt& s = sizes[d.dim];
    if (s.is_constant())
      throw InputError("--dynamic: input '" + d.input + "' dim " + std::to_string(d.dim) + " is static (" +
                       std::to_string(s.value) + ") in the exported program; export it with a dynamic dim");
    if (!s.expr->is_symbol())
      throw InputError("--dynamic: input '" + d.input + "' dim " + std::to_string(d.dim) + " is " + s.str() +
                       ", not a plain symbol");
    const std::string& sym = s.expr->name();
    auto it = ep.ranges.find(sym);
    const int64_t lo = it != ep.ranges.end() ? it->second.min : 0;
    const std::optional<int64_t> hi = it != ep.ranges.end() ? it->second.max : std::nullopt;
    if (d.min < lo || (hi && d.max > *hi))
      throw InputError("--dynamic: input '" + d.input + "' dim " + std::to_string(d.dim) + " range [" +
                       std::to_string(d.min) + ", " + std::to_string(d.max) + "] exceeds the exported range of " +
                       sym + ": [" + std::to_string(lo) + ", " + (hi ? std::to_string(*hi) : "inf") + "]");
    ranges[sym] = engine::SymbolRange{d.min, d.opt, d.max};
  }
  return ranges;
}

std::set<std::string> input_symbols(const ir::ExportedProgram& ep) {
  std::set<std::string> out;
  for (const ir::Node* p : ep.graph.placeholders())
    for (const auto& s : p->meta.tensor.sizes)
      if (s.expr && s.expr->is_symbol()) out.insert(s.expr->name());
  return out;
}

}  // namespace

// A segment whose plan uses a data-dependent size (an export's unbacked symbol, u0 of a nonzero)
// that nothing inside the plan binds: converted, the op that makes the size names it otherwise,
// so the plan could only read it unset. compile() then runs that op in PyTorch, where the size
// becomes a segment input's dim.
struct UnboundSizes : std::runtime_error {
  UnboundSizes(const std::string& segment, std::vector<std::string> syms)
      : std::runtime_error(segment + " uses the data-dependent size " + syms.at(0) + ", which it cannot compute"),
        symbols(std::move(syms)) {}
  std::vector<std::string> symbols;
};

// Builds the CompiledProgram from a partition: the program graph, the plans, the steps.
class Compiler {
 public:
  Compiler(ir::ExportedProgram& ep, const CompileOptions& o) : ep_(ep), opts_(o) {}

  CompiledProgram run(const partition::Partition& part) {
    CompiledProgram prog;
    prog.precision_ = opts_.settings.precision;
    prog.device_ = opts_.settings.device;
    prog.ranges_ = symbol_ranges(ep_, opts_.dynamic);
    build_graph(prog, part);
    for (const auto& seg : part.segments) {
      prog.segments_.push_back(build_segment(prog, seg));
      give_counts_symbols(prog);
    }
    for (const auto& item : part.order) {
      Step s;
      if (item.kind == partition::Item::Kind::kSegment) {
        s.kind = Step::Kind::kAccelerated;
        s.segment = item.segment;
      } else {
        s.kind = Step::Kind::kFallback;
        s.node = clones_.at(item.node);
      }
      prog.steps_.push_back(s);
    }
    return prog;
  }

 private:
  ir::Argument remap(const ir::Argument& a) {
    if (a.is_node()) return ir::Argument(clone_of(a.node()));
    if (a.is_list()) {
      ir::Argument::List l;
      for (const auto& e : a.list()) l.push_back(remap(e));
      return ir::Argument(std::move(l));
    }
    return a;
  }

  ir::Node* clone_of(const ir::Node* n) {
    auto it = clones_.find(n);
    if (it == clones_.end())
      throw std::logic_error("program graph: %" + n->name + " is used outside its segment but is not a segment output");
    return it->second;
  }

  ir::Node* clone(ir::Graph& g, const ir::Node* n, ir::NodeKind kind, bool with_args) {
    std::vector<ir::Argument> args;
    std::vector<std::pair<std::string, ir::Argument>> kwargs;
    if (with_args) {
      for (const auto& a : n->args) args.push_back(remap(a));
      for (const auto& [k, a] : n->kwargs) kwargs.emplace_back(k, remap(a));
    }
    ir::Node* c = g.create(kind, n->name, kind == ir::NodeKind::Placeholder ? n->name : n->target, std::move(args),
                           std::move(kwargs));
    c->meta = n->meta;
    c->metadata = n->metadata;
    clones_[n] = c;
    return c;
  }

  // Walks the exported graph once, in order, keeping what runs outside segments: inputs, the
  // weights fallback nodes read, fallback and symbolic nodes, placeholders ("proxies") for the
  // segment results they read, and the output.
  void build_graph(CompiledProgram& prog, const partition::Partition& part) {
    std::set<const ir::Node*> fallback, accelerated;
    std::map<const ir::Node*, std::string> segment_of;
    for (const auto& v : part.verdicts) (v.accelerated ? accelerated : fallback).insert(v.node);
    for (const auto& s : part.segments)
      for (const ir::Node* n : s.nodes) segment_of[n] = s.name();
    const std::set<std::string> bound = input_symbols(ep_);

    // Values the host side reads (fallback nodes, the output, symbolic nodes that need their args).
    std::set<const ir::Node*> needed;
    std::function<void(const ir::Node*)> need = [&](const ir::Node* n) {
      if (!needed.insert(n).second) return;
      if (partition::is_symbolic(*n) && !symbolic_from_shapes(*n, bound))
        for (const ir::Node* p : n->inputs()) need(p);
    };
    for (const ir::Node* n : ep_.graph.nodes()) {
      if (fallback.count(n) || n->kind == ir::NodeKind::Output)
        for (const ir::Node* p : n->inputs()) need(p);
    }

    ir::Graph& g = prog.graph_;
    for (const ir::Node* n : ep_.graph.nodes()) {
      switch (n->kind) {
        case ir::NodeKind::Placeholder:
          clone(g, n, ir::NodeKind::Placeholder, false);
          prog.inputs_.push_back(InputSpec{n->name, n->meta.tensor});
          break;
        case ir::NodeKind::GetAttr: {
          if (!needed.count(n)) break;
          clone(g, n, ir::NodeKind::GetAttr, false);
          auto w = ep_.weights.find(n->target);
          if (w == ep_.weights.end()) throw std::runtime_error("weight '" + n->target + "' of %" + n->name + " is missing");
          prog.weights_[n->target] = weight_tensor(w->second);
          break;
        }
        case ir::NodeKind::Output:
          clone(g, n, ir::NodeKind::Output, true);
          break;
        case ir::NodeKind::CallFunction:
          if (partition::is_symbolic(*n)) {
            if (needed.count(n)) clone(g, n, ir::NodeKind::CallFunction, !symbolic_from_shapes(*n, bound));
          } else if (fallback.count(n)) {
            clone(g, n, ir::NodeKind::CallFunction, true);
          } else if (needed.count(n)) {
            ir::Node* proxy = clone(g, n, ir::NodeKind::Placeholder, false);
            proxy->metadata["kiln.segment"] = segment_of[n];
          }
          break;
      }
    }
  }

  // A symbolic node whose value follows from the input shapes alone: evaluated from its meta.
  static bool symbolic_from_shapes(const ir::Node& n, const std::set<std::string>& bound) {
    if (n.meta.kind != ir::ValueMeta::Kind::SymInt || !n.meta.sym.expr) return n.meta.kind == ir::ValueMeta::Kind::SymInt;
    std::vector<std::string> syms;
    n.meta.sym.expr->collect_symbols(syms);
    for (const auto& s : syms)
      if (!bound.count(s)) return false;
    return true;
  }

  static HostTensor weight_tensor(const ir::Weight& w) {
    std::vector<int64_t> dims;
    for (const auto& s : w.meta.sizes) dims.push_back(s.value);
    if (w.is_contiguous()) return HostTensor::view(w.meta.dtype, dims, w.data(), w.storage);
    // Strided weight (a transposed or sliced view of a storage): gather it once, here.
    HostTensor t = HostTensor::empty(w.meta.dtype, dims);
    const size_t es = ir::element_size(w.meta.dtype);
    std::vector<int64_t> idx(dims.size(), 0);
    for (int64_t i = 0, n = t.numel(); i < n; ++i) {
      int64_t off = 0;
      for (size_t d = 0; d < dims.size(); ++d) off += idx[d] * w.meta.strides[d].value;
      std::memcpy(t.data + i * es, w.data() + off * es, es);
      for (int d = static_cast<int>(dims.size()) - 1; d >= 0; --d) {
        if (++idx[d] < dims[d]) break;
        idx[d] = 0;
      }
    }
    return t;
  }

  AccSegment build_segment(const CompiledProgram& prog, const partition::Segment& seg) {
    AccSegment acc;
    acc.name = seg.name();
    acc.compute_ops = seg.compute_ops;
    for (const ir::Node* n : seg.nodes) acc.ops.push_back(n->target);
    conversion::ConvertedSegment cs;
    {
      StageTimer t(opts_.log, "convert " + acc.name + " (" + std::to_string(seg.nodes.size()) + " nodes)");
      cs = conversion::convert_segment(ep_, seg.nodes, seg.inputs, seg.outputs, opts_.settings);
    }
    acc.input_values = cs.input_names;
    acc.output_values = cs.output_names;
    engine::BuilderConfig cfg;
    cfg.precision = opts_.settings.precision;
    cfg.device = opts_.settings.device;
    cfg.cuda_arch = opts_.settings.cuda_arch;
    cfg.workspace_limit = opts_.settings.workspace_limit;
    cfg.compile_device_code = opts_.device_code;
    for (const std::string& sym : cs.network->input_symbols()) {
      auto it = prog.ranges_.find(sym);
      if (it == prog.ranges_.end())
        throw std::runtime_error(acc.name + ": symbol " + sym + " has no range in the exported program");
      cfg.profile[sym] = it->second;
    }
    note_counts(*cs.network);
    StageTimer t(opts_.log, "build " + acc.name + " (" + std::to_string(cs.network->layers().size()) + " layers)");
    acc.plan = engine::build(std::move(*cs.network), cfg);
    if (std::vector<std::string> unbound = acc.plan.unbound_symbols(); !unbound.empty())
      throw UnboundSizes(acc.name, std::move(unbound));
    return acc;
  }

  // A segment output whose size the plan computes from the data (a nonzero's count) where the
  // program's metadata holds a number: PyTorch 1.13's trace records the traced count. A later
  // segment reading it would be built for that number and refuse the next call's count.
  void note_counts(const engine::Network& net) {
    for (const auto& [name, t] : net.outputs()) {
      ir::Node* n = ep_.graph.find(name);  // a tensor output is named as its node
      if (!n || !n->meta.is_tensor() || n->meta.tensor.sizes.size() != t->shape().size()) continue;
      for (size_t d = 0; d < t->shape().size(); ++d)
        if (n->meta.tensor.sizes[d].is_constant() && !net.input_bound(t->shape()[d])) counts_.push_back({n, d});
    }
  }
  // ... each such size becomes a symbol of its own, of range [0, kUnboundedMax] (the traced count
  // as the size to build for), in the program's metadata, so later segments take it as an input
  // dim bound at run time, as torch.export's unbacked sizes are.
  void give_counts_symbols(CompiledProgram& prog) {
    for (const auto& [n, d] : counts_) {
      const std::string sym = "count_" + n->name + "_" + std::to_string(d);
      const int64_t traced = n->meta.tensor.sizes[d].value;
      n->meta.tensor.sizes[d] = ir::SymInt(ir::SymExpr::symbol(sym));
      n->meta.tensor.strides.clear();  // computed from the traced count
      if (auto it = clones_.find(n); it != clones_.end()) it->second->meta = n->meta;
      prog.ranges_[sym] = engine::SymbolRange{0, std::clamp<int64_t>(traced, 0, kUnboundedMax), kUnboundedMax};
    }
    counts_.clear();
  }

  ir::ExportedProgram& ep_;
  const CompileOptions& opts_;
  std::map<const ir::Node*, ir::Node*> clones_;
  std::vector<std::pair<ir::Node*, size_t>> counts_;
};

namespace {
void check_fallback_available(const CompiledProgram& prog) {
  const auto ops = prog.fallback_ops();
  if (ops.empty()) return;
  auto exec = fallback_executor();
  std::string list;
  for (const auto& op : ops)
    if (!exec || !exec->has_op(op)) list += (list.empty() ? "" : ", ") + op;
  if (list.empty()) return;
  if (!exec)
    throw InputError("this kiln was built without libtorch, and the program needs the PyTorch fallback for: " + list);
  throw InputError("the PyTorch fallback (" + exec->name() + ") has no kernel for: " + list);
}

partition::Partition do_partition(ir::ExportedProgram& ep, const CompileOptions& o) {
  conversion::register_builtin_converters();
  lower(ep, o.log);
  StageTimer t(o.log, "partition");
  return partition::partition_graph(ep.graph, o.settings);
}
}  // namespace

void check_fallback(const CompiledProgram& prog) { check_fallback_available(prog); }

CompiledProgram compile(ir::ExportedProgram& ep, const CompileOptions& options) {
  (void)symbol_ranges(ep, options.dynamic);  // bad --dynamic specs fail before any work
  partition::Partition part = do_partition(ep, options);
  try {
    CompiledProgram prog = Compiler(ep, options).run(part);
    check_fallback_available(prog);
    return prog;
  } catch (const UnboundSizes& e) {
    // The ops whose results have these sizes run in PyTorch instead, and the program is partitioned
    // again: their results reach the segments as inputs, whose dims bind the sizes at run time.
    CompileOptions retry = options;
    auto symbols_of = [](const ir::Node& n) {
      std::vector<std::string> syms;
      for (const auto& d : n.meta.tensor.sizes)
        if (d.expr) d.expr->collect_symbols(syms);
      for (const auto& t : n.meta.tuple)
        if (t)
          for (const auto& d : t->sizes)
            if (d.expr) d.expr->collect_symbols(syms);
      return syms;
    };
    auto has = [](const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); };
    std::string ops;
    for (const ir::Node* n : ep.graph.nodes()) {
      if (n->kind != ir::NodeKind::CallFunction || partition::is_symbolic(*n)) continue;
      const std::vector<std::string> syms = symbols_of(*n);
      for (const std::string& s : e.symbols) {
        if (!has(syms, s)) continue;
        bool inherited = false;  // the size came in with an input: not made here
        for (const ir::Node* in : n->inputs()) inherited = inherited || has(symbols_of(*in), s);
        if (!inherited && retry.settings.torch_executed_ops.insert(n->target).second)
          ops += (ops.empty() ? "" : ", ") + n->target;
      }
    }
    if (ops.empty() || options.settings.require_full_compilation)
      throw partition::PartitionError(std::string(e.what()) +
                                      (ops.empty() ? "" : "; it can run with " + ops + " in PyTorch (not under "
                                                                                       "require_full_compilation)"));
    if (options.log) *options.log << "kiln: " << e.what() << "; running " << ops << " in PyTorch\n";
    part = do_partition(ep, retry);
    CompiledProgram prog = Compiler(ep, retry).run(part);
    check_fallback_available(prog);
    return prog;
  }
}

std::string dry_run(ir::ExportedProgram& ep, const CompileOptions& options) {
  (void)symbol_ranges(ep, options.dynamic);
  return do_partition(ep, options).report();
}

void CompiledProgram::refit(const CompiledProgram& fresh) {
  auto refuse = [](const std::string& what) {
    throw InputError("refit: " + what + "; the new weights do not fit this compiled program (compile again)");
  };
  if (fresh.segments_.size() != segments_.size() || fresh.steps_.size() != steps_.size() ||
      fresh.device_ != device_ || fresh.precision_ != precision_)
    refuse("the program compiled with the new weights is partitioned differently");
  for (size_t i = 0; i < segments_.size(); ++i)
    if (fresh.segments_[i].name != segments_[i].name || fresh.segments_[i].ops != segments_[i].ops)
      refuse(segments_[i].name + " holds other ops when compiled with the new weights");
  for (const auto& [name, t] : weights_) {
    auto it = fresh.weights_.find(name);
    if (it == fresh.weights_.end() || it->second.dtype != t.dtype || it->second.dims != t.dims)
      refuse("weight '" + name + "' read by an op run in PyTorch is missing or of another type or shape");
  }
  // Everything is checked before anything changes: a refused refit leaves the program as it was.
  for (size_t i = 0; i < segments_.size(); ++i) {
    try {
      segments_[i].plan.check_refit(fresh.segments_[i].plan);
    } catch (const engine::PlanError& e) {
      std::string why = e.what();
      if (why.rfind("refit: ", 0) == 0) why = why.substr(7);
      refuse(segments_[i].name + ": " + why);
    }
  }
  for (size_t i = 0; i < segments_.size(); ++i) segments_[i].plan.take_constants(fresh.segments_[i].plan);
  for (auto& [name, t] : weights_) t = fresh.weights_.at(name);
}

std::vector<std::string> CompiledProgram::fallback_ops() const {
  std::set<std::string> ops;
  for (const Step& s : steps_)
    if (s.kind == Step::Kind::kFallback && !runs_on_host(*s.node)) ops.insert(s.node->target);
  return {ops.begin(), ops.end()};
}

}  // namespace kiln::program
