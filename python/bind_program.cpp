// The program side of the bindings: compile an IR program into a CompiledProgram, save / load it,
// read its steps, and run one accelerated segment on torch tensors' memory (no copies in; the
// Python module runs the fallback ops itself, in PyTorch).
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>

#include <pybind11/numpy.h>

#include "bind_common.h"
#include "engine/runtime.h"
#include "frontend/pt2.h"
#include "program/fallback.h"
#include "program/program.h"

namespace kiln::py_bind {

using program::CompiledProgram;

namespace {

// compile() refuses programs whose fallback ops no executor can run. From Python, PyTorch runs them
// (the returned module calls the torch ops itself), so this executor vouches for every op torch has.
class PythonFallback : public program::FallbackExecutor {
 public:
  std::string name() const override { return "pytorch (python)"; }
  // Called by compile() without the GIL. A name resolve_target refuses (not an operator at all:
  // `torch.os.system` in a hostile .pt2) is a FormatError naming it, not merely a missing kernel.
  bool has_op(const std::string& target) const override {
    py::gil_scoped_acquire gil;
    try {
      return py::module_::import("kiln._values").attr("resolve_target")(target).is_none() == false;
    } catch (py::error_already_set& e) {
      if (e.matches(py::module_::import("kiln._kiln").attr("FormatError")))
        throw program::FormatError(py::str(e.value()).cast<std::string>());
      return false;
    }
  }
  program::RtValue run(const ir::Node& node, const std::vector<program::RtValue>&, engine::DeviceKind) override {
    throw std::runtime_error("%" + node.name + " (" + node.target +
                             "): from Python, fallback ops run in the module kiln.compile returns");
  }
};

// Runs one segment from Python, from any number of threads at once.
//
// An execution context serves one call at a time (bound inputs, the arena that holds the outputs
// until they are copied out, recorded CUDA graphs), while the plan it executes is read-only. So each
// call checks a context out of a small pool, runs it without the GIL, copies the outputs into torch
// tensors, and gives the context back. The pool's mutex is held only to pop or push, never while
// the GIL is wanted or a plan runs, so there is no lock-order cycle with the GIL. (It used to be one
// context behind a mutex taken while holding the GIL: a second thread waited for the mutex with the
// GIL held while the first, holding the mutex, waited to re-take the GIL to allocate its outputs --
// a deadlock as soon as two threads called the same module.)
class SegmentRunner {
 public:
  // on_cpu: run the plan on the CPU backend whatever device it was built for (kiln.load(...,
  // device="cpu"), as `kiln run --device cpu` does.
  SegmentRunner(std::shared_ptr<CompiledProgram> prog, size_t index, bool on_cpu = false)
      : prog_(std::move(prog)), index_(index), on_cpu_(on_cpu) {
    if (index_ >= prog_->segments().size()) throw py::index_error("no segment " + std::to_string(index));
  }
  const program::AccSegment& segment() const { return prog_->segments()[index_]; }

  // inputs: (data_ptr, DataType, dims, strides, is_cuda) per network input, in input_values order.
  // alloc(i, dims, DataType) -> (torch tensor, data_ptr) for output i. Returns the torch tensors.
  py::list run(const std::vector<std::tuple<uintptr_t, engine::DataType, std::vector<int64_t>, std::vector<int64_t>, bool>>& inputs,
               uintptr_t cuda_stream, const py::function& alloc) {
    const auto& seg = segment();
    if (inputs.size() != seg.input_values.size())
      throw py::value_error(seg.name + ": expected " + std::to_string(seg.input_values.size()) + " inputs, got " +
                            std::to_string(inputs.size()));
    static const bool trace = std::getenv("KILN_PY_TRACE") != nullptr;  // step-by-step, for crash hunts
    auto step = [&](const char* what) { if (trace) std::fprintf(stderr, "kiln[%s]: %s\n", seg.name.c_str(), what); };
    const bool cuda = seg.plan.device() == engine::DeviceKind::kCUDA && !on_cpu_;
    const uintptr_t stream = cuda ? cuda_stream : 0;
    // The context is this call's alone until the lease gives it back (also when the call throws: a
    // ShapeError from set_input leaves it reusable, as it did before).
    Lease lease(*this, stream);
    {
      py::gil_scoped_release nogil;
      step("context");
      lease.acquire(cuda);
      engine::ExecutionContext& ctx = *lease.entry->ctx;
      step("inputs");
      for (size_t i = 0; i < inputs.size(); ++i) {
        const auto& [ptr, dtype, dims, strides, on_cuda] = inputs[i];
        if (on_cuda != cuda)
          throw engine::ShapeError(seg.name + ": input '" + seg.input_values[i] + "' is on the " +
                                   (on_cuda ? "GPU" : "CPU") + " but the segment was built for the " +
                                   (cuda ? "GPU" : "CPU"));
        engine::TensorView v;
        v.data = reinterpret_cast<void*>(ptr);
        v.dtype = dtype;
        v.dims = dims;
        v.strides = strides;
        v.device = cuda ? engine::DeviceKind::kCUDA : engine::DeviceKind::kCPU;
        ctx.set_input(seg.input_values[i], v);
      }
      step("execute");
      // On CUDA the call returns once its work is queued on the caller's stream: the outputs' copies
      // below queue behind it, and the caller's next work on the stream (reading them, or the next
      // call, which leases this context only on the same stream) comes after. Waiting here would
      // leave the GPU idle while the host wakes, allocates and queues the copies.
      if (cuda) ctx.enqueue();
      else ctx.execute();
      step("executed");
    }
    // Outputs live in the context's arena until its next execute, which cannot come before the
    // lease ends: each goes into a fresh torch tensor (on the same stream, so no synchronization is
    // needed on CUDA). alloc runs Python, with the GIL and no kiln lock held.
    Entry& e = *lease.entry;
    if (cuda) {  // an output in host memory is read below: the queued work must be done first
      bool host_output = false;
      for (size_t i = 0; i < seg.output_values.size(); ++i)
        host_output = host_output || e.ctx->output(i).device == engine::DeviceKind::kCPU;
      if (host_output) {
        py::gil_scoped_release nogil;
        e.backend->synchronize();
      }
    }
    py::list outs;
    for (size_t i = 0; i < seg.output_values.size(); ++i) {
      const engine::TensorView& out = e.ctx->output(i);
      py::tuple r = alloc(i, out.dims, out.dtype);
      auto dst = reinterpret_cast<void*>(r[1].cast<uintptr_t>());
      if (out.nbytes()) {
        py::gil_scoped_release nogil;
        e.backend->copy(dst, out.device, out.data, out.device, out.nbytes());
      }
      outs.append(r[0]);
    }
    return outs;
  }

 private:
  // A context and the backend it runs on (on CUDA, bound to the caller's stream).
  struct Entry {
    uintptr_t stream = 0;
    std::shared_ptr<engine::Backend> backend;
    std::unique_ptr<engine::ExecutionContext> ctx;
  };

  // Contexts kept for reuse (each holds an activation arena); more concurrent calls than this still
  // run, and the least recently used contexts are dropped as they come back.
  static constexpr size_t kMaxIdle = 16;

  class Lease {
   public:
    Lease(SegmentRunner& r, uintptr_t stream) : runner_(r), stream_(stream) {}
    // Without the GIL: building a context may allocate and upload weights.
    void acquire(bool cuda) {
      {
        std::lock_guard<std::mutex> lock(runner_.mutex_);
        auto& idle = runner_.idle_;
        for (size_t i = idle.size(); i-- > 0;)  // the most recently used first: its caches are warm
          if (idle[i]->stream == stream_) {
            entry = std::move(idle[i]);
            idle.erase(idle.begin() + static_cast<std::ptrdiff_t>(i));
            return;
          }
      }
      auto e = std::make_unique<Entry>();
      e->stream = stream_;
      e->backend = cuda ? std::shared_ptr<engine::Backend>(engine::make_cuda_backend(reinterpret_cast<void*>(stream_)))
                        : std::shared_ptr<engine::Backend>(engine::make_cpu_backend());
      e->ctx = std::make_unique<engine::ExecutionContext>(runner_.segment().plan, e->backend);
      entry = std::move(e);
    }
    ~Lease() {
      if (!entry) return;
      std::unique_ptr<Entry> drop;
      {
        std::lock_guard<std::mutex> lock(runner_.mutex_);
        auto& idle = runner_.idle_;
        if (idle.size() >= kMaxIdle) {  // drop the least recently used (on CUDA: maybe a stream gone by)
          drop = std::move(idle.front());
          idle.erase(idle.begin());
        }
        idle.push_back(std::move(entry));
      }
      if (drop) {
        py::gil_scoped_release nogil;  // freeing device memory may synchronize
        drop.reset();
      }
    }
    std::unique_ptr<Entry> entry;

   private:
    SegmentRunner& runner_;
    uintptr_t stream_;
  };

  std::shared_ptr<CompiledProgram> prog_;
  size_t index_;
  bool on_cpu_ = false;
  std::mutex mutex_;  // guards idle_ only; held for a pop or a push, never while waiting for anything
  std::vector<std::unique_ptr<Entry>> idle_;
};

program::CompileOptions options_from(const conversion::CompilationSettings& s, py::handle dynamic, bool verbose) {
  program::CompileOptions o;
  o.settings = s;
  for (auto d : dynamic) {
    auto t = d.cast<py::tuple>();
    program::DynamicSpec spec;
    spec.input = t[0].cast<std::string>();
    spec.dim = t[1].cast<int64_t>();
    spec.min = t[2].cast<int64_t>();
    spec.opt = t[3].cast<int64_t>();
    spec.max = t[4].cast<int64_t>();
    o.dynamic.push_back(spec);
  }
  if (verbose) o.log = &std::cerr;
  return o;
}

}  // namespace

void bind_program(py::module_& m) {
  static PyObject* input_error = PyErr_NewException("kiln._kiln.InputError", m.attr("KilnError").ptr(), nullptr);
  static PyObject* format_error = PyErr_NewException("kiln._kiln.FormatError", m.attr("KilnError").ptr(), nullptr);
  static PyObject* partition_error =
      PyErr_NewException("kiln._kiln.PartitionError", m.attr("KilnError").ptr(), nullptr);
  m.attr("InputError") = py::handle(input_error);
  m.attr("FormatError") = py::handle(format_error);
  m.attr("PartitionError") = py::handle(partition_error);
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const program::InputError& e) {
      PyErr_SetString(input_error, e.what());
    } catch (const engine::SettingError& e) {  // a KILN_* setting kiln does not know: the user's input
      PyErr_SetString(input_error, e.what());
    } catch (const program::FormatError& e) {
      PyErr_SetString(format_error, e.what());
    } catch (const partition::PartitionError& e) {
      PyErr_SetString(partition_error, e.what());
    }
  });

  program::set_fallback_executor(std::make_shared<PythonFallback>());

  py::class_<CompiledProgram, std::shared_ptr<CompiledProgram>>(m, "CompiledProgram")
      .def("__str__", &CompiledProgram::str)
      .def("summary", &CompiledProgram::summary)
      .def("save", &CompiledProgram::save, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def("serialize", [](const CompiledProgram& p) {
        std::vector<uint8_t> bytes;
        {
          py::gil_scoped_release nogil;
          bytes = p.serialize();
        }
        return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      })
      .def_static("load", [](const std::string& path) {
        py::gil_scoped_release nogil;
        return std::make_shared<CompiledProgram>(CompiledProgram::load(path));
      }, py::arg("path"))
      .def_static("deserialize", [](py::bytes data) {
        std::string s = data;
        py::gil_scoped_release nogil;
        return std::make_shared<CompiledProgram>(
            CompiledProgram::deserialize(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
      })
      .def_property_readonly("inputs", [](const CompiledProgram& p) {
        py::list l;
        for (const auto& in : p.inputs()) l.append(py::make_tuple(in.name, tensor_meta_to_py(in.meta)));
        return l;
      })
      .def_property_readonly("ranges", [](const CompiledProgram& p) {
        py::dict d;
        for (const auto& [k, r] : p.ranges()) d[py::str(k)] = py::make_tuple(r.min, r.opt, r.max);
        return d;
      })
      .def_property_readonly("segments", [](const CompiledProgram& p) {
        py::list l;
        for (const auto& s : p.segments()) {
          py::dict d;
          d["name"] = s.name;
          d["inputs"] = s.input_values;
          d["outputs"] = s.output_values;
          d["ops"] = s.ops;
          d["compute_ops"] = s.compute_ops;
          d["device"] = s.plan.device();
          d["requires_output_allocator"] = s.plan.requires_output_allocator();
          d["summary"] = s.plan.summary();
          l.append(d);
        }
        return l;
      })
      // ("segment", index) or ("node", IRNode of the program graph), in run order.
      .def_property_readonly("steps", [](py::object self) {
        const auto& p = self.cast<const CompiledProgram&>();
        py::list l;
        for (const auto& s : p.steps()) {
          if (s.kind == program::Step::Kind::kAccelerated) l.append(py::make_tuple("segment", s.segment));
          else l.append(py::make_tuple("node", py::cast(s.node, py::return_value_policy::reference_internal, self)));
        }
        return l;
      })
      .def("graph_nodes", [](const CompiledProgram& p) { return p.graph().nodes(); },
           py::return_value_policy::reference_internal)
      .def("find", [](const CompiledProgram& p, const std::string& n) { return p.graph().find(n); },
           py::return_value_policy::reference_internal)
      .def("fallback_ops", &CompiledProgram::fallback_ops)
      .def("refit", [](CompiledProgram& p, const CompiledProgram& fresh) {
        py::gil_scoped_release nogil;
        p.refit(fresh);
      }, py::arg("fresh"))
      // name -> (NumPy view of the bytes, ScalarType): zero-copy, the array keeps the program's
      // buffer alive. bf16 and other types NumPy lacks come as raw unsigned ints of their width.
      .def("weights", [](const CompiledProgram& p) {
        py::dict out;
        for (const auto& [name, t] : p.weights()) {
          const size_t es = ir::element_size(t.dtype);
          py::dtype dt = t.dtype == ir::ScalarType::Float    ? py::dtype::of<float>()
                         : t.dtype == ir::ScalarType::Double ? py::dtype::of<double>()
                         : t.dtype == ir::ScalarType::Long   ? py::dtype::of<int64_t>()
                         : t.dtype == ir::ScalarType::Int    ? py::dtype::of<int32_t>()
                         : t.dtype == ir::ScalarType::Char   ? py::dtype::of<int8_t>()
                         : t.dtype == ir::ScalarType::Bool   ? py::dtype::of<bool>()
                         : es == 2 ? py::dtype::of<uint16_t>() : py::dtype::of<uint8_t>();
          std::vector<py::ssize_t> shape(t.dims.begin(), t.dims.end());
          auto* keep = new std::shared_ptr<void>(t.owner);
          py::capsule base(keep, [](void* q) { delete static_cast<std::shared_ptr<void>*>(q); });
          out[py::str(name)] = py::make_tuple(py::array(dt, shape, t.data, base), t.dtype);
        }
        return out;
      });

  py::class_<SegmentRunner>(m, "SegmentRunner")
      .def(py::init<std::shared_ptr<CompiledProgram>, size_t, bool>(), py::arg("program"), py::arg("index"),
           py::arg("on_cpu") = false)
      .def("run", &SegmentRunner::run, py::arg("inputs"), py::arg("cuda_stream"), py::arg("alloc"))
      .def_property_readonly("name", [](const SegmentRunner& r) { return r.segment().name; })
      .def_property_readonly("input_names", [](const SegmentRunner& r) { return r.segment().input_values; })
      .def_property_readonly("output_names", [](const SegmentRunner& r) { return r.segment().output_values; });

  m.def("compile_program", [](ir::ExportedProgram& ep, const conversion::CompilationSettings& s, py::object dynamic,
                              bool verbose, bool device_code) {
    auto o = options_from(s, dynamic, verbose);
    o.device_code = device_code;
    py::gil_scoped_release nogil;  // converters and validators written in Python re-take it
    return std::make_shared<CompiledProgram>(program::compile(ep, o));
  }, py::arg("program"), py::arg("settings"), py::arg("dynamic") = py::list(), py::arg("verbose") = false,
     py::arg("device_code") = true);
  m.def("dry_run", [](ir::ExportedProgram& ep, const conversion::CompilationSettings& s, py::object dynamic) {
    auto o = options_from(s, dynamic, false);
    py::gil_scoped_release nogil;
    return program::dry_run(ep, o);
  }, py::arg("program"), py::arg("settings"), py::arg("dynamic") = py::list());
  m.def("cuda_available", &engine::cuda_available);
  m.def("load_pt2", [](const std::string& path) {
    py::gil_scoped_release nogil;
    return std::make_shared<ir::ExportedProgram>(frontend::load_pt2(path));
  }, py::arg("path"));
}

}  // namespace kiln::py_bind
