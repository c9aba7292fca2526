// Running a compiled program, and printing it.
#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>

#include "conversion/convert.h"
#include "program/fallback.h"
#include "program/program.h"

namespace kiln::program {

namespace {
std::mutex g_exec_mutex;
std::shared_ptr<FallbackExecutor> g_exec;
}  // namespace

void set_fallback_executor(std::shared_ptr<FallbackExecutor> e) {
  std::lock_guard<std::mutex> lock(g_exec_mutex);
  g_exec = std::move(e);
}
std::shared_ptr<FallbackExecutor> fallback_executor() {
  std::lock_guard<std::mutex> lock(g_exec_mutex);
  return g_exec;
}

// What one run needs to itself: an execution context per segment (created on first use), the
// backend they share, and the device-side caches. Contexts are stateful (bound inputs, the arena that
// holds segment outputs until later steps read them, CUDA graphs), so a workspace serves one run at
// a time; the plans they execute are read-only and shared.
struct RunWorkspace {
  engine::DeviceKind device = engine::DeviceKind::kCPU;
  std::shared_ptr<engine::Backend> backend;
  std::vector<std::unique_ptr<engine::ExecutionContext>> contexts;
  // RunOptions::device_resident_io: program inputs kept on the device, by name, with their size.
  std::map<std::string, std::pair<std::shared_ptr<void>, size_t>> resident_inputs;
  // Weights that fallback ops read on the GPU, uploaded once, by weight name.
  std::map<std::string, HostTensor> device_weights;
};

// A pool of workspaces, so that runs from several threads go on at the same time, each in its own.
// The mutex guards only the idle list and is never held while a run executes (nor while anything
// else is waited for), so it cannot take part in a lock-order cycle. A serial caller gets the same
// workspace back every time (last in, first out), so its contexts' per-shape caches, resident inputs
// and recorded CUDA graphs carry over from run to run as they did with one workspace.
struct CompiledProgram::Runtime {
  // Workspaces kept for reuse; more concurrent runs than this still run, each with a fresh one that
  // is dropped afterwards (arenas are the size of a model's activations: do not keep them all).
  static constexpr size_t kMaxIdle = 16;
  std::mutex mutex;
  std::vector<std::unique_ptr<RunWorkspace>> idle;

  std::unique_ptr<RunWorkspace> acquire(engine::DeviceKind device) {
    std::lock_guard<std::mutex> lock(mutex);
    for (size_t i = idle.size(); i-- > 0;)
      if (idle[i]->device == device && idle[i]->backend) {
        auto ws = std::move(idle[i]);
        idle.erase(idle.begin() + static_cast<std::ptrdiff_t>(i));
        return ws;
      }
    return std::make_unique<RunWorkspace>();
  }
  void release(std::unique_ptr<RunWorkspace> ws) {
    std::unique_ptr<RunWorkspace> drop;  // destroyed after the lock is let go (it frees device memory)
    std::lock_guard<std::mutex> lock(mutex);
    if (idle.size() >= kMaxIdle) {  // keep the most recently used
      drop = std::move(idle.front());
      idle.erase(idle.begin());
    }
    idle.push_back(std::move(ws));
  }
};

CompiledProgram::CompiledProgram() : runtime_(std::make_unique<Runtime>()) {}
CompiledProgram::~CompiledProgram() = default;
CompiledProgram::CompiledProgram(CompiledProgram&&) noexcept = default;
CompiledProgram& CompiledProgram::operator=(CompiledProgram&&) noexcept = default;

namespace {

using Env = std::map<std::string, RtValue>;

std::string expected_str(const InputSpec& spec, const std::map<std::string, engine::SymbolRange>& ranges) {
  std::string s = std::string(ir::to_string(spec.meta.dtype)) + "[";
  std::string where;
  for (size_t i = 0; i < spec.meta.sizes.size(); ++i) {
    const auto& d = spec.meta.sizes[i];
    s += (i ? ", " : "") + d.str();
    if (d.expr && d.expr->is_symbol()) {
      auto r = ranges.find(d.expr->name());
      if (r != ranges.end())
        where += (where.empty() ? " with " : ", ") + std::to_string(r->second.min) + " <= " + d.expr->name() +
                 " <= " + std::to_string(r->second.max);
    }
  }
  return s + "]" + where;
}

// Checks inputs against their specs and binds the shape symbols.
std::map<std::string, int64_t> check_inputs(const std::vector<InputSpec>& specs,
                                            const std::map<std::string, engine::SymbolRange>& ranges,
                                            const std::vector<HostTensor>& inputs) {
  if (inputs.size() != specs.size()) {
    std::string names;
    for (const auto& s : specs) names += (names.empty() ? "" : ", ") + s.str();
    throw InputError("expected " + std::to_string(specs.size()) + " input(s) (" + names + "), got " +
                     std::to_string(inputs.size()));
  }
  std::map<std::string, int64_t> sym;
  std::map<std::string, std::string> bound_by;
  for (size_t i = 0; i < specs.size(); ++i) {
    const InputSpec& spec = specs[i];
    const HostTensor& t = inputs[i];
    const std::string who = "input '" + spec.name + "' (#" + std::to_string(i) + ")";
    auto fail = [&](const std::string& what) {
      return InputError(who + ": expected " + expected_str(spec, ranges) + ", got " + t.str() + " (" + what + ")");
    };
    if (t.dtype != spec.meta.dtype) throw fail("wrong dtype");
    if (t.dims.size() != spec.meta.sizes.size()) throw fail("wrong rank");
    for (size_t d = 0; d < t.dims.size(); ++d) {
      const ir::SymInt& s = spec.meta.sizes[d];
      if (s.is_constant()) {
        if (t.dims[d] != s.value) throw fail("dim " + std::to_string(d) + " must be " + std::to_string(s.value));
      } else if (s.expr->is_symbol()) {
        const std::string& name = s.expr->name();
        auto r = ranges.find(name);
        if (r != ranges.end() && (t.dims[d] < r->second.min || t.dims[d] > r->second.max))
          throw fail("dim " + std::to_string(d) + " = " + std::to_string(t.dims[d]) + " is outside the range [" +
                     std::to_string(r->second.min) + ", " + std::to_string(r->second.max) + "] of " + name);
        auto b = sym.find(name);
        if (b != sym.end() && b->second != t.dims[d])
          throw fail("dim " + std::to_string(d) + " = " + std::to_string(t.dims[d]) + " but " + name + " = " +
                     std::to_string(b->second) + " from " + bound_by[name]);
        sym[name] = t.dims[d];
        bound_by[name] = "input '" + spec.name + "'";
      }
    }
  }
  // Dims that are expressions of symbols (2*s0) are checked once every symbol is bound.
  for (size_t i = 0; i < specs.size(); ++i)
    for (size_t d = 0; d < specs[i].meta.sizes.size(); ++d) {
      const ir::SymInt& s = specs[i].meta.sizes[d];
      if (s.is_constant() || s.expr->is_symbol()) continue;
      auto v = s.evaluate(sym);
      if (v && *v != inputs[i].dims[d])
        throw InputError("input '" + specs[i].name + "' (#" + std::to_string(i) + "): dim " + std::to_string(d) +
                         " = " + std::to_string(inputs[i].dims[d]) + " but must equal " + s.str() + " = " +
                         std::to_string(*v));
    }
  return sym;
}

// Evaluates the ops the program runs itself: symbolic ints and getitem.
RtValue eval_host(const ir::Node& n, const std::vector<RtValue>& in, const std::map<std::string, int64_t>& sym) {
  if (n.meta.kind == ir::ValueMeta::Kind::SymInt && n.meta.sym.expr == nullptr) return n.meta.sym.value;
  if (n.meta.kind == ir::ValueMeta::Kind::SymInt) {
    try {
      if (auto v = n.meta.sym.evaluate(sym)) return *v;
    } catch (const std::exception&) {  // an expression kiln cannot evaluate: compute from the args below
    }
  }
  auto arg = [&](size_t i) -> RtValue {
    if (i >= n.args.size()) throw std::runtime_error("%" + n.name + ": missing argument " + std::to_string(i));
    const ir::Argument& a = n.args[i];
    if (a.is_node()) {
      auto ins = n.inputs();
      auto pos = std::find(ins.begin(), ins.end(), a.node()) - ins.begin();
      return in.at(pos);
    }
    if (a.is<int64_t>()) return a.as<int64_t>();
    if (a.is<double>()) return a.as<double>();
    if (a.is<bool>()) return a.as<bool>();
    throw std::runtime_error("%" + n.name + ": unsupported argument " + a.str());
  };
  const std::string& t = n.target;
  if (t == "getitem") {
    const RtValue c = arg(0);
    const auto& l = c.list();
    int64_t i = arg(1).to_int();
    if (i < 0) i += static_cast<int64_t>(l.size());
    if (i < 0 || i >= static_cast<int64_t>(l.size())) throw std::runtime_error("%" + n.name + ": index out of range");
    return l[i];
  }
  if (t == "aten.sym_size.int") {
    const RtValue x = arg(0);  // held: a reference into the temporary arg(0) would dangle
    const auto& dims = x.tensor().dims;
    int64_t d = arg(1).to_int();
    if (d < 0) d += static_cast<int64_t>(dims.size());
    return dims.at(d);
  }
  if (t == "aten.sym_numel.default") return arg(0).tensor().numel();
  const bool is_float = n.meta.kind == ir::ValueMeta::Kind::SymFloat;
  if (t == "_operator.neg") return is_float ? RtValue(-arg(0).to_double()) : RtValue(-arg(0).to_int());
  const RtValue a = arg(0), b = n.args.size() > 1 ? arg(1) : RtValue();
  if (is_float || t == "_operator.truediv") {
    const double x = a.to_double(), y = b.to_double();
    if (t == "_operator.add") return x + y;
    if (t == "_operator.sub") return x - y;
    if (t == "_operator.mul") return x * y;
    if (t == "_operator.truediv") return x / y;
  } else {
    const int64_t x = a.to_int(), y = b.is_none() ? 0 : b.to_int();
    if (t == "_operator.add") return x + y;
    if (t == "_operator.sub") return x - y;
    if (t == "_operator.mul") return x * y;
    if ((t == "_operator.floordiv" || t == "_operator.mod") && y == 0)
      throw std::runtime_error("%" + n.name + ": division by zero");
    if (t == "_operator.floordiv") return (x / y) - ((x % y != 0) && ((x < 0) != (y < 0)));
    if (t == "_operator.mod") return ((x % y) + y) % y;
    if (t == "_operator.eq") return x == y;
    if (t == "_operator.ne") return x != y;
    if (t == "_operator.lt") return x < y;
    if (t == "_operator.le") return x <= y;
    if (t == "_operator.gt") return x > y;
    if (t == "_operator.ge") return x >= y;
  }
  throw std::runtime_error("%" + n.name + ": cannot evaluate " + t + " on the host");
}

bool host_op(const ir::Node& n) {
  return partition::is_symbolic(n) || n.target == "getitem" || n.target.rfind("_operator.", 0) == 0;
}

// `t` copied to (or already in) `device` memory through the backend; the copy owns its buffer.
HostTensor on_device(const HostTensor& t, engine::DeviceKind device, const std::shared_ptr<engine::Backend>& backend) {
  if (t.device == device || !t.defined()) return t;
  HostTensor r;
  if (device == engine::DeviceKind::kCPU) {
    r = HostTensor::empty(t.dtype, t.dims);
  } else {
    r.dtype = t.dtype;
    r.dims = t.dims;
    r.device = device;
    void* p = backend->allocate(std::max<size_t>(t.nbytes(), 1));
    r.owner = std::shared_ptr<void>(p, [backend](void* q) { backend->deallocate(q); });
    r.data = static_cast<uint8_t*>(p);
  }
  backend->copy(r.data, device, t.data, t.device, t.nbytes());
  return r;
}

// Every tensor in `v` (lists included) in host memory.
RtValue to_host(const RtValue& v, const std::shared_ptr<engine::Backend>& backend) {
  if (v.is_tensor()) return on_device(v.tensor(), engine::DeviceKind::kCPU, backend);
  if (!v.is_list()) return v;
  RtValue::List l;
  for (const RtValue& e : v.list()) l.push_back(to_host(e, backend));
  return l;
}

}  // namespace

std::vector<HostTensor> CompiledProgram::run(const std::vector<HostTensor>& inputs, const RunOptions& options) const {
  const std::map<std::string, int64_t> sym = check_inputs(inputs_, ranges_, inputs);
  check_fallback(*this);
  // This run's workspace, taken from the pool and given back however the run ends (the old single
  // workspace outlived failed runs too: a ShapeError leaves a context reusable).
  struct Lease {
    Runtime& pool;
    std::unique_ptr<RunWorkspace> ws;
    ~Lease() { pool.release(std::move(ws)); }
  } lease{*runtime_, runtime_->acquire(options.device)};
  RunWorkspace& rt = *lease.ws;
  if (!rt.backend || rt.device != options.device) {
    rt.contexts.clear();
    rt.resident_inputs.clear();
    rt.device_weights.clear();
    rt.device = options.device;
    rt.backend = options.device == engine::DeviceKind::kCUDA ? std::shared_ptr<engine::Backend>(engine::make_cuda_backend())
                                                              : std::shared_ptr<engine::Backend>(engine::make_cpu_backend());
  }
  if (rt.contexts.size() != segments_.size()) rt.contexts.resize(segments_.size());

  Env env;
  for (size_t i = 0; i < inputs.size(); ++i) env[inputs_[i].name] = inputs[i];
  std::shared_ptr<FallbackExecutor> exec = fallback_executor();
  // On the GPU, values stay in device memory between steps: segment outputs are read in place by
  // the segments after them, and fallback ops run on PyTorch's CUDA kernels when the executor has
  // them (a CUDA libtorch), else on its CPU kernels with their inputs brought to the host.
  const bool on_gpu = rt.backend->kind() == engine::DeviceKind::kCUDA;
  const engine::DeviceKind fallback_device =
      on_gpu && exec && exec->runs_on(engine::DeviceKind::kCUDA) ? engine::DeviceKind::kCUDA : engine::DeviceKind::kCPU;
  std::vector<std::shared_ptr<void>> device_buffers;  // uploads for this run (segment outputs may alias them)

  // Values by node: computed, a weight, a host op evaluated on demand, or a tuple reassembled from
  // its elements ("<name>.<i>", as segments return them).
  std::function<RtValue(const ir::Node*)> value_of = [&](const ir::Node* n) -> RtValue {
    auto it = env.find(n->name);
    if (it != env.end()) return it->second;
    if (n->kind == ir::NodeKind::GetAttr) {
      if (fallback_device == engine::DeviceKind::kCPU) return env[n->name] = weights_.at(n->target);
      auto cached = rt.device_weights.find(n->target);
      if (cached == rt.device_weights.end())
        cached = rt.device_weights.emplace(n->target, on_device(weights_.at(n->target), fallback_device, rt.backend)).first;
      return env[n->name] = cached->second;
    }
    if (n->kind == ir::NodeKind::CallFunction && partition::is_symbolic(*n)) {
      std::vector<RtValue> in;
      for (const ir::Node* p : n->inputs()) in.push_back(value_of(p));
      return env[n->name] = eval_host(*n, in, sym);
    }
    if (n->meta.kind == ir::ValueMeta::Kind::Tuple || n->meta.kind == ir::ValueMeta::Kind::TensorList) {
      RtValue::List l;
      for (size_t i = 0; i < n->meta.tuple.size(); ++i) {
        auto e = env.find(n->name + "." + std::to_string(i));
        l.push_back(e != env.end() ? e->second : RtValue());
      }
      return env[n->name] = RtValue(std::move(l));
    }
    throw std::runtime_error("value %" + n->name + " was not computed before its use");
  };
  auto lookup_name = [&](const std::string& name) -> RtValue {
    auto it = env.find(name);
    if (it != env.end()) return it->second;
    if (const ir::Node* n = graph_.find(name)) return value_of(n);
    auto dot = name.rfind('.');  // a tuple element a segment reads: "<tuple>.<i>"
    if (dot != std::string::npos)
      if (const ir::Node* n = graph_.find(name.substr(0, dot))) {
        const RtValue whole = value_of(n);
        return whole.list().at(std::stoul(name.substr(dot + 1)));
      }
    throw std::runtime_error("value %" + name + " was not computed before its use");
  };

  // device_resident_io: which values later steps read (those must still reach the host).
  std::set<std::string> program_inputs, read_by_steps;
  if (options.device_resident_io) {
    for (const InputSpec& in : inputs_) program_inputs.insert(in.name);
    for (const Step& step : steps_) {
      if (step.kind == Step::Kind::kFallback)
        for (const ir::Node* p : step.node->inputs()) read_by_steps.insert(p->name);
      else
        for (const std::string& name : segments_[step.segment].input_values)
          read_by_steps.insert(name.substr(0, name.rfind('.')));  // "<tuple>.<i>" -> "<tuple>"
    }
  }

  for (const Step& step : steps_) {
    if (step.kind == Step::Kind::kFallback) {
      const ir::Node& n = *step.node;
      std::vector<RtValue> in;
      for (const ir::Node* p : n.inputs()) {
        in.push_back(value_of(p));
        if (!host_op(n) && fallback_device == engine::DeviceKind::kCPU) in.back() = to_host(in.back(), rt.backend);
      }
      try {
        env[n.name] = host_op(n) ? eval_host(n, in, sym) : exec->run(n, in, fallback_device);
      } catch (const InputError&) {
        throw;
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string("while executing %") + n.name + " (" + n.target + "): " + e.what());
      }
      continue;
    }
    const AccSegment& seg = segments_[step.segment];
    auto& ctx = rt.contexts[step.segment];
    if (!ctx) ctx = std::make_unique<engine::ExecutionContext>(seg.plan, rt.backend);
    auto device_copy = [&](const std::string& name, const HostTensor& t) -> engine::TensorView {
      engine::TensorView v;
      v.dtype = conversion::to_engine_dtype(t.dtype);
      v.dims = t.dims;
      v.device = rt.backend->kind();
      if (t.device == v.device) {  // host data on the CPU; an earlier step's result on the GPU
        v.data = t.data;
        return v;
      }
      const bool resident = options.device_resident_io && program_inputs.count(name);
      if (resident) {
        auto it = rt.resident_inputs.find(name);
        if (it != rt.resident_inputs.end() && it->second.second == t.nbytes()) {
          v.data = it->second.first.get();
          return v;
        }
      }
      const HostTensor uploaded = on_device(t, v.device, rt.backend);
      if (resident) rt.resident_inputs[name] = {uploaded.owner, t.nbytes()};
      else device_buffers.push_back(uploaded.owner);
      v.data = uploaded.data;
      return v;
    };
    try {
      for (const std::string& name : seg.input_values) ctx->set_input(name, device_copy(name, lookup_name(name).tensor()));
      ctx->execute();
      rt.backend->synchronize();
      for (size_t i = 0; i < seg.output_values.size(); ++i) {
        const engine::TensorView& out = ctx->output(seg.output_values[i]);
        if (!out.is_contiguous()) throw std::runtime_error("segment output " + seg.output_values[i] + " is not contiguous");
        const std::string& name = seg.output_values[i];
        HostTensor t;
        t.dtype = conversion::to_ir_dtype(out.dtype);
        t.dims = out.dims;
        if (!on_gpu) {
          t = HostTensor::empty(t.dtype, t.dims);
          std::memcpy(t.data, out.data, t.nbytes());
        } else if (options.device_resident_io && !read_by_steps.count(name.substr(0, name.rfind('.')))) {
          // a result nobody reads: dims only (a host buffer per run would cost more than the GPU work)
        } else {
          // Read in place by later steps: the context's memory holds it until this segment runs
          // again, which is not before the next run; what the run returns is copied out below.
          t.data = static_cast<uint8_t*>(out.data);
          t.device = out.device;
        }
        env[seg.output_values[i]] = std::move(t);
      }
    } catch (const engine::ShapeError& e) {
      throw InputError(seg.name + ": " + e.what());
    } catch (const engine::SettingError& e) {
      throw InputError(e.what());
    } catch (const std::exception& e) {
      throw std::runtime_error("while executing " + seg.name + ": " + e.what());
    }
  }

  std::vector<HostTensor> outs;
  const ir::Node* out = graph_.output();
  if (!out || out->args.empty()) return outs;
  const ir::Argument& a = out->args[0];
  std::vector<ir::Argument> items = a.is_list() ? a.list() : std::vector<ir::Argument>{a};
  for (const ir::Argument& item : items) {
    if (!item.is_node()) throw std::runtime_error("program output " + item.str() + " is not a tensor");
    HostTensor t = value_of(item.node()).tensor();
    if (t.device != engine::DeviceKind::kCPU) {
      if (options.device_resident_io && !read_by_steps.count(item.node()->name))
        t = HostTensor{t.dtype, t.dims};  // stays on the device: dims only
      else
        t = on_device(t, engine::DeviceKind::kCPU, rt.backend);
    }
    outs.push_back(std::move(t));
  }
  if (on_gpu) rt.backend->synchronize();
  return outs;
}

// ---- printing -----------------------------------------------------------------------------------

namespace {
std::string print_arg(const ir::Argument& a, const std::map<std::string, std::string>& display) {
  if (a.is_node()) {
    auto it = display.find(a.node()->name);
    return "%" + (it != display.end() ? it->second : a.node()->name);
  }
  if (a.is_list()) {
    std::string s = "[";
    for (size_t i = 0; i < a.list().size(); ++i) s += (i ? ", " : "") + print_arg(a.list()[i], display);
    return s + "]";
  }
  return a.str();
}

std::string meta_str(const ir::ValueMeta& m) {
  if (m.kind == ir::ValueMeta::Kind::Tensor) return m.tensor.str();
  if (m.kind == ir::ValueMeta::Kind::SymInt) return "Sym(" + m.sym.str() + ")";
  return "";
}
}  // namespace

std::string CompiledProgram::str() const {
  std::ostringstream os;
  os << "graph():\n";
  std::map<std::string, std::string> display;  // value name -> the name a reader sees
  for (const AccSegment& s : segments_)
    if (s.output_values.size() == 1) display[s.output_values[0]] = s.name;
  for (const ir::Node* n : graph_.nodes()) {
    if (n->kind == ir::NodeKind::Placeholder && !n->metadata.count("kiln.segment"))
      os << "    %" << n->name << " : " << meta_str(n->meta) << " = placeholder[target=" << n->name << "]\n";
    else if (n->kind == ir::NodeKind::GetAttr)
      os << "    %" << n->name << " : " << meta_str(n->meta) << " = get_attr[target=" << n->target << "]\n";
  }
  auto call_line = [&](const ir::Node& n, const std::string& kind, const std::string& target) {
    os << "    %" << n.name << " : " << meta_str(n.meta) << " = " << kind << "[target=" << target << "](args = (";
    for (size_t i = 0; i < n.args.size(); ++i) os << (i ? ", " : "") << print_arg(n.args[i], display);
    os << (n.args.size() == 1 ? ",), kwargs = {" : "), kwargs = {");
    for (size_t i = 0; i < n.kwargs.size(); ++i)
      os << (i ? ", " : "") << n.kwargs[i].first << ": " << print_arg(n.kwargs[i].second, display);
    os << "})\n";
  };
  for (const ir::Node* n : graph_.nodes())
    if (n->kind == ir::NodeKind::CallFunction && partition::is_symbolic(*n) && !n->args.empty())
      call_line(*n, "call_function", n->target);
  for (const Step& step : steps_) {
    if (step.kind == Step::Kind::kFallback) {
      const ir::Node& n = *step.node;
      call_line(n, "call_function", n.target == "getitem" ? "operator.getitem" : "torch.ops." + n.target);
      continue;
    }
    const AccSegment& s = segments_[step.segment];
    os << "    %" << s.name << " = call_module[target=" << s.name << "](args = (";
    for (size_t i = 0; i < s.input_values.size(); ++i) {
      auto it = display.find(s.input_values[i]);
      os << (i ? ", " : "") << "%" << (it != display.end() ? it->second : s.input_values[i]);
    }
    os << (s.input_values.size() == 1 ? ",), kwargs = {})" : "), kwargs = {})");
    os << "  # " << s.compute_ops << " compute ops, " << s.ops.size() << " nodes\n";
    if (s.output_values.size() > 1)
      for (size_t i = 0; i < s.output_values.size(); ++i)
        os << "    %" << s.output_values[i] << " = call_function[target=operator.getitem](args = (%" << s.name
           << ", " << i << "), kwargs = {})\n";
  }
  if (const ir::Node* out = graph_.output()) {
    os << "    return ";
    if (out->args.empty()) {
      os << "None\n";
    } else if (out->args[0].is_list()) {  // fx prints the output tuple as `(a, b)` / `(a,)`
      const auto& l = out->args[0].list();
      os << "(";
      for (size_t i = 0; i < l.size(); ++i) os << (i ? ", " : "") << print_arg(l[i], display);
      os << (l.size() == 1 ? ",)\n" : ")\n");
    } else {
      os << print_arg(out->args[0], display) << "\n";
    }
  }
  return os.str();
}

std::string CompiledProgram::summary() const {
  std::ostringstream os;
  size_t fallback = 0;
  for (const Step& s : steps_) fallback += s.kind == Step::Kind::kFallback && !host_op(*s.node);
  os << "inputs:";
  for (const auto& in : inputs_) os << " " << in.str();
  os << "\nsegments: " << segments_.size() << ", fallback ops: " << fallback << ", precision "
     << engine::to_string(precision_) << ", device " << engine::to_string(device_) << "\n";
  for (const AccSegment& s : segments_) {
    os << "  " << s.name << ": " << s.compute_ops << " compute ops, " << s.ops.size() << " nodes, weights "
       << s.plan.memory().weight_bytes << " B, activations " << s.plan.memory().peak_activation_bytes << " B";
    if (const std::string code = s.plan.device_code_summary(); !code.empty()) os << ", device code " << code;
    os << "\n";
  }
  const auto ops = fallback_ops();
  if (!ops.empty()) {
    os << "  run by PyTorch:";
    for (const auto& op : ops) os << " " << op;
    os << "\n";
  }
  return os.str();
}

}  // namespace kiln::program
