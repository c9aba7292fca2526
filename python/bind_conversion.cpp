// The conversion side of the bindings: network tensors (ITensor), the raw network API, the
// conversion context, compilation settings, and the registry bridge through which Python
// converters and validators enter the same registry as the C++ ones.
#include <pybind11/functional.h>
#include <pybind11/operators.h>

#include "bind_common.h"
#include "conversion/convert.h"
#include "engine/builder.h"
#include "engine/network.h"

namespace kiln::py_bind {

using conversion::ConversionContext;
using conversion::Value;

// ---- converter values ----------------------------------------------------------------------------

py::object dim_to_py(const engine::DimExpr& d) {
  if (auto c = d.constant()) return py::int_(*c);
  return py::cast(d);
}

py::object value_to_py(const Value& v) {
  return std::visit(
      [](const auto& x) -> py::object {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) return py::none();
        else if constexpr (std::is_same_v<T, engine::Tensor*>) return py::cast(x, py::return_value_policy::reference);
        else if constexpr (std::is_same_v<T, engine::DimExpr>) return dim_to_py(x);
        else if constexpr (std::is_same_v<T, Value::List>) {
          py::list l;
          for (const auto& e : x) l.append(value_to_py(e));
          return l;
        } else return py::cast(x);
      },
      v.v);
}

namespace {
engine::DataType dtype_from_torch(py::handle torch_dtype) {
  static const std::map<std::string, engine::DataType> names = {
      {"torch.float32", engine::DataType::kFloat32}, {"torch.float16", engine::DataType::kFloat16},
      {"torch.bfloat16", engine::DataType::kBFloat16}, {"torch.int64", engine::DataType::kInt64},
      {"torch.int32", engine::DataType::kInt32},     {"torch.int8", engine::DataType::kInt8},
      {"torch.uint8", engine::DataType::kUInt8},     {"torch.bool", engine::DataType::kBool}};
  const std::string s = py::str(torch_dtype);
  auto it = names.find(s);
  if (it == names.end()) throw conversion::ConversionError("tensor constant of dtype " + s + " has no engine type");
  return it->second;
}

// A torch.Tensor / NumPy array / torch scalar tensor as engine weights (copied: converters may
// hand over temporaries).
engine::Weights weights_from_torch(py::handle obj) {
  py::module_ torch = py::module_::import("torch");
  py::object t = torch.attr("as_tensor")(obj).attr("detach")().attr("cpu")().attr("contiguous")();
  if (py::str(t.attr("dtype")).cast<std::string>() == "torch.float64") t = t.attr("float")();
  std::vector<int64_t> dims;
  for (auto d : t.attr("shape")) dims.push_back(d.cast<int64_t>());
  auto ptr = t.attr("data_ptr")().cast<uintptr_t>();
  return engine::Weights::copy_of(dtype_from_torch(t.attr("dtype")), dims, reinterpret_cast<const void*>(ptr));
}

bool is_array_like(py::handle h) {
  py::module_ torch = py::module_::import("torch");
  return py::isinstance(h, torch.attr("Tensor")) || py::hasattr(h, "__array_interface__");
}
}  // namespace

Value value_from_py(ConversionContext* ctx, py::handle h, const std::string& name) {
  if (h.is_none()) return Value();
  if (py::isinstance<py::bool_>(h)) return h.cast<bool>();
  if (py::isinstance<py::int_>(h)) return h.cast<int64_t>();
  if (py::isinstance<py::float_>(h)) return h.cast<double>();
  if (py::isinstance<py::str>(h)) return h.cast<std::string>();
  if (py::isinstance<engine::Tensor>(h)) return h.cast<engine::Tensor*>();
  if (py::isinstance<engine::DimExpr>(h)) return h.cast<engine::DimExpr>();
  if (py::isinstance<ir::ScalarType>(h)) return h.cast<ir::ScalarType>();
  if (py::isinstance<ir::Device>(h)) return h.cast<ir::Device>();
  if (py::isinstance<ir::MemoryFormat>(h)) return h.cast<ir::MemoryFormat>();
  if (py::isinstance<ir::Layout>(h)) return h.cast<ir::Layout>();
  if (py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h)) {
    Value::List l;
    size_t i = 0;
    for (auto e : h) l.push_back(value_from_py(ctx, e, name + "." + std::to_string(i++)));
    return l;
  }
  if (is_array_like(h)) {
    if (!ctx) throw conversion::ConversionError("a tensor constant needs a conversion context");
    return ctx->constant(weights_from_torch(h), name + "/constant");
  }
  // torch.dtype / torch.device and friends: the Python layer maps them (kiln._convert_torch_value).
  py::object mapped = py::module_::import("kiln._values").attr("to_kiln")(h);
  if (!mapped.is(h)) return value_from_py(ctx, mapped, name);
  throw conversion::ConversionError("cannot use " + py::repr(h).cast<std::string>() + " as a converter value");
}

// ---- exceptions ----------------------------------------------------------------------------------

void register_exceptions(py::module_& m) {
  // kiln.KilnError derives from RuntimeError so `except RuntimeError` still works; each C++ error
  // family gets its own subclass, carrying the C++ message unchanged.
  static PyObject* base = PyErr_NewException("kiln._kiln.KilnError", PyExc_RuntimeError, nullptr);
  static PyObject* conv = PyErr_NewException("kiln._kiln.ConversionError", base, nullptr);
  static PyObject* net = PyErr_NewException("kiln._kiln.NetworkError", base, nullptr);
  static PyObject* shape = PyErr_NewException("kiln._kiln.ShapeError", base, nullptr);
  static PyObject* verify = PyErr_NewException("kiln._kiln.VerifyError", base, nullptr);
  m.attr("KilnError") = py::handle(base);
  m.attr("ConversionError") = py::handle(conv);
  m.attr("NetworkError") = py::handle(net);
  m.attr("ShapeError") = py::handle(shape);
  m.attr("VerifyError") = py::handle(verify);
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const py::error_already_set&) {
      throw;
    } catch (const py::builtin_exception&) {
      throw;  // pybind's own (value_error, type_error...) keep their Python types
    } catch (const conversion::ConversionError& e) {
      PyErr_SetString(conv, e.what());
    } catch (const engine::NetworkError& e) {
      PyErr_SetString(net, e.what());
    } catch (const engine::ShapeError& e) {
      PyErr_SetString(shape, e.what());
    } catch (const ir::VerifyError& e) {
      PyErr_SetString(verify, e.what());
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::exception& e) {
      PyErr_SetString(base, e.what());
    }
  });
}

// For the other binding files: the Python type of a C++ error family.
py::handle kiln_error_type(py::module_& m, const char* name) { return m.attr(name); }

// ---- registry bridge -----------------------------------------------------------------------------

namespace {

// Python's exception as one line of text for a C++ error ("ValueError: bad thing").
std::string describe(py::error_already_set& e) {
  std::string type = py::str(e.type().attr("__name__"));
  std::string msg = py::str(e.value());
  return type + ": " + msg;
}

// A converter's result must have the node's form: a network tensor for a tensor, a list of them
// (None for unused slots) for a tuple. Checked here so a wrong return is blamed on the converter
// that made it, not on the node that would read it next.
void check_converter_result(const ConversionContext& ctx, const Value& out, py::handle r, const std::string& origin) {
  const ir::Node* n = ctx.current_node;
  if (!n) return;
  auto what = [&] {
    std::string s = py::repr(r).cast<std::string>();
    if (s.size() > 80) s = s.substr(0, 77) + "...";
    return std::string(py::str(py::type::handle_of(r).attr("__name__"))) + " " + s;
  };
  using K = ir::ValueMeta::Kind;
  if (n->meta.kind == K::Tensor && !out.is_tensor())
    throw conversion::ConversionError("converter " + origin + " returned " + what() +
                                      "; expected a network tensor (kiln.ITensor) for this node's tensor result");
  if (n->meta.kind == K::Tuple || n->meta.kind == K::TensorList) {
    bool ok = out.is_list();
    if (ok)
      for (const auto& e : out.list()) ok = ok && (e.is_tensor() || e.is_none() || e.is_list());
    if (!ok)
      throw conversion::ConversionError("converter " + origin + " returned " + what() +
                                        "; expected a list of network tensors (kiln.ITensor) for this node's " +
                                        std::to_string(n->meta.tuple.size()) + " results");
  }
}

void register_python_converter(const std::string& target, py::function fn, py::object validator,
                               bool supports_dynamic_shapes, conversion::ConverterPriority priority,
                               bool requires_output_allocator, const std::string& origin,
                               const std::string& validator_name) {
  conversion::ConverterSpec spec;
  spec.target = target;
  spec.origin = origin;
  spec.supports_dynamic_shapes = supports_dynamic_shapes;
  spec.priority = priority;
  spec.requires_output_allocator = requires_output_allocator;
  spec.validator_name = validator_name;
  // `fn` is the Python layer's adapter: (ctx, args, kwargs, name) -> result, target already bound.
  spec.fn = [f = hold(fn), origin](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                                   const conversion::Kwargs& kwargs, const std::string& name) -> Value {
    py::gil_scoped_acquire gil;
    try {
      py::list pa;
      for (const auto& a : args) pa.append(value_to_py(a));
      py::dict pk;
      for (const auto& [k, v] : kwargs) pk[py::str(k)] = value_to_py(v);
      py::object r = (*f)(py::cast(&ctx, py::return_value_policy::reference), py::tuple(pa), pk, name);
      Value out = value_from_py(&ctx, r, name + "/result");
      check_converter_result(ctx, out, r, origin);
      return out;
    } catch (py::error_already_set& e) {
      // The driver prefixes the node ("node %gelu (aten.gelu.default): ..."); we name the converter.
      throw conversion::ConversionError("converter " + origin + " raised " + describe(e));
    }
  };
  if (!validator.is_none()) {
    spec.validator = [v = hold(validator), validator_name](const ir::Node& node,
                                                           const conversion::CompilationSettings& s) {
      py::gil_scoped_acquire gil;
      try {
        return py::bool_((*v)(py::cast(&node, py::return_value_policy::reference),
                              py::cast(s, py::return_value_policy::copy)))
            .cast<bool>();
      } catch (py::error_already_set& e) {
        throw conversion::ValidatorError("validator " + validator_name + " raised " + describe(e));
      }
    };
  }
  conversion::ConverterRegistry::global().add(std::move(spec));
}

py::list converter_table(const std::string& target) {
  py::list out;
  for (const auto* c : conversion::ConverterRegistry::global().candidates(target)) {
    py::dict d;
    d["target"] = c->target;
    d["origin"] = c->origin;
    d["priority"] = c->priority;
    d["validator"] = c->validator ? (c->validator_name.empty() ? std::string("<validator>") : c->validator_name)
                                  : std::string();
    d["supports_dynamic_shapes"] = c->supports_dynamic_shapes;
    d["requires_output_allocator"] = c->requires_output_allocator;
    out.append(d);
  }
  return out;
}

}  // namespace

// ---- engine surface ------------------------------------------------------------------------------

void bind_engine(py::module_& m) {
  py::enum_<engine::DataType>(m, "DataType")
      .value("FLOAT", engine::DataType::kFloat32).value("HALF", engine::DataType::kFloat16)
      .value("BF16", engine::DataType::kBFloat16).value("INT64", engine::DataType::kInt64)
      .value("INT32", engine::DataType::kInt32).value("INT8", engine::DataType::kInt8)
      .value("UINT8", engine::DataType::kUInt8).value("BOOL", engine::DataType::kBool);
  py::enum_<engine::Precision>(m, "Precision")
      .value("FP32", engine::Precision::kFP32).value("FP16", engine::Precision::kFP16)
      .value("BF16", engine::Precision::kBF16);
  py::enum_<engine::DeviceKind>(m, "DeviceKind")
      .value("CPU", engine::DeviceKind::kCPU).value("CUDA", engine::DeviceKind::kCUDA);
  py::enum_<engine::BinaryOp> bin(m, "BinaryOp");
  for (int i = 0; i < engine::enum_count<engine::BinaryOp>(); ++i) {
    auto op = static_cast<engine::BinaryOp>(i);
    bin.value(engine::to_string(op), op);
  }
  py::enum_<engine::UnaryOp> un(m, "UnaryOp");
  for (int i = 0; i < engine::enum_count<engine::UnaryOp>(); ++i) {
    auto op = static_cast<engine::UnaryOp>(i);
    un.value(engine::to_string(op), op);
  }
  py::enum_<engine::ActivationOp> act(m, "ActivationOp");
  for (int i = 0; i < engine::enum_count<engine::ActivationOp>(); ++i) {
    auto op = static_cast<engine::ActivationOp>(i);
    act.value(engine::to_string(op), op);
  }
  py::enum_<engine::ReduceOp>(m, "ReduceOp")
      .value("SUM", engine::ReduceOp::kSum).value("MEAN", engine::ReduceOp::kMean)
      .value("MAX", engine::ReduceOp::kMax).value("MIN", engine::ReduceOp::kMin)
      .value("PROD", engine::ReduceOp::kProd).value("ANY", engine::ReduceOp::kAny)
      .value("ALL", engine::ReduceOp::kAll).value("ARGMAX", engine::ReduceOp::kArgMax)
      .value("ARGMIN", engine::ReduceOp::kArgMin).value("VAR", engine::ReduceOp::kVar)
      .value("NORM2", engine::ReduceOp::kNorm2);
  py::enum_<engine::PoolType>(m, "PoolType").value("MAX", engine::PoolType::kMax).value("AVERAGE", engine::PoolType::kAverage);

  py::class_<engine::DimExpr>(m, "DimExpr")
      .def_static("symbol", &engine::DimExpr::symbol)
      .def_property_readonly("is_constant", &engine::DimExpr::is_constant)
      .def("constant", &engine::DimExpr::constant)
      .def("__str__", &engine::DimExpr::str)
      .def("__repr__", [](const engine::DimExpr& d) { return "DimExpr(" + d.str() + ")"; })
      .def("__add__", [](const engine::DimExpr& a, const engine::DimExpr& b) { return a + b; })
      .def("__radd__", [](const engine::DimExpr& a, int64_t b) { return engine::DimExpr(b) + a; })
      .def("__sub__", [](const engine::DimExpr& a, const engine::DimExpr& b) { return a - b; })
      .def("__rsub__", [](const engine::DimExpr& a, int64_t b) { return engine::DimExpr(b) - a; })
      .def("__mul__", [](const engine::DimExpr& a, const engine::DimExpr& b) { return a * b; })
      .def("__rmul__", [](const engine::DimExpr& a, int64_t b) { return engine::DimExpr(b) * a; })
      .def("__floordiv__", [](const engine::DimExpr& a, const engine::DimExpr& b) { return floor_div(a, b); });
  py::implicitly_convertible<py::int_, engine::DimExpr>();

  // Network tensors: owned by their network, referenced from Python during conversion.
  py::class_<engine::Tensor, std::unique_ptr<engine::Tensor, py::nodelete>>(m, "ITensor")
      .def_property_readonly("name", &engine::Tensor::name)
      .def_property_readonly("engine_dtype", &engine::Tensor::dtype)
      .def_property_readonly("shape", [](const engine::Tensor& t) {
        py::list l;
        for (const auto& d : t.shape()) l.append(dim_to_py(d));
        return py::tuple(l);
      })
      .def_property_readonly("rank", &engine::Tensor::rank)
      .def_property_readonly("is_input", &engine::Tensor::is_input)
      .def("__str__", &engine::Tensor::str)
      .def("__repr__", [](const engine::Tensor& t) { return "<ITensor " + t.str() + ">"; });

  py::class_<engine::Layer, std::unique_ptr<engine::Layer, py::nodelete>>(m, "ILayer")
      .def_property_readonly("name", &engine::Layer::name)
      .def_property_readonly("kind", &engine::Layer::kind)
      .def("get_output", &engine::Layer::output, py::arg("index") = 0, py::return_value_policy::reference)
      .def_property_readonly("num_outputs", [](const engine::Layer& l) { return l.outputs().size(); })
      .def("__str__", &engine::Layer::str);

  // The raw network API, enough to write converters beside impl (as with TensorRT's network).
  auto ref = py::return_value_policy::reference;
  py::class_<engine::Network, std::unique_ptr<engine::Network, py::nodelete>>(m, "INetworkDefinition")
      .def("add_elementwise", &engine::Network::add_elementwise, py::arg("name"), py::arg("a"), py::arg("b"),
           py::arg("op"), ref)
      .def("add_unary", &engine::Network::add_unary, py::arg("name"), py::arg("input"), py::arg("op"), ref)
      .def("add_activation", &engine::Network::add_activation, py::arg("name"), py::arg("input"), py::arg("op"),
           py::arg("alpha") = 0.0, py::arg("beta") = 0.0, ref)
      .def("add_matmul", &engine::Network::add_matmul, py::arg("name"), py::arg("a"), py::arg("b"),
           py::arg("transpose_a") = false, py::arg("transpose_b") = false, ref)
      .def("add_softmax", &engine::Network::add_softmax, py::arg("name"), py::arg("input"), py::arg("axis"),
           py::arg("log") = false, ref)
      .def("add_cast", &engine::Network::add_cast, py::arg("name"), py::arg("input"), py::arg("to"), ref)
      .def("add_identity", &engine::Network::add_identity, py::arg("name"), py::arg("input"), ref)
      .def("add_concat", &engine::Network::add_concat, py::arg("name"), py::arg("inputs"), py::arg("axis"), ref)
      .def("add_select", &engine::Network::add_select, py::arg("name"), py::arg("condition"), py::arg("then_value"),
           py::arg("else_value"), ref)
      .def("add_shape", &engine::Network::add_shape, py::arg("name"), py::arg("input"), ref)
      .def("add_constant", [](engine::Network& n, const std::string& name, py::handle array) {
        return n.add_constant(name, weights_from_torch(array));
      }, py::arg("name"), py::arg("array"), ref)
      .def("add_reduce", [](engine::Network& n, const std::string& name, engine::Tensor* x, engine::ReduceOp op,
                            std::vector<int64_t> axes, bool keep_dims) {
        engine::ReduceParams p;
        p.op = op;
        p.axes = std::move(axes);
        p.keep_dims = keep_dims;
        return n.add_reduce(name, x, p);
      }, py::arg("name"), py::arg("input"), py::arg("op"), py::arg("axes"), py::arg("keep_dims") = false, ref)
      .def("add_shuffle", [](engine::Network& n, const std::string& name, engine::Tensor* x,
                             std::vector<int64_t> first_perm, std::optional<std::vector<engine::DimExpr>> reshape,
                             std::vector<int64_t> second_perm) {
        engine::ShuffleParams p;
        p.first_perm = std::move(first_perm);
        p.reshape = std::move(reshape);
        p.second_perm = std::move(second_perm);
        return n.add_shuffle(name, x, p);
      }, py::arg("name"), py::arg("input"), py::arg("first_perm") = std::vector<int64_t>{},
         py::arg("reshape") = py::none(), py::arg("second_perm") = std::vector<int64_t>{}, ref)
      .def_property_readonly("num_layers", [](const engine::Network& n) { return n.layers().size(); })
      .def("__str__", &engine::Network::str);
}

// ---- conversion surface --------------------------------------------------------------------------

void bind_conversion(py::module_& m) {
  py::enum_<conversion::ConverterPriority>(m, "ConverterPriority")
      .value("STANDARD", conversion::ConverterPriority::STANDARD)
      .value("HIGH", conversion::ConverterPriority::HIGH);
  py::enum_<conversion::SourceIR>(m, "SourceIR")
      .value("ATEN", conversion::SourceIR::ATEN).value("PRIM", conversion::SourceIR::PRIM)
      .value("TORCH", conversion::SourceIR::TORCH).value("NN", conversion::SourceIR::NN)
      .value("ACC", conversion::SourceIR::ACC).value("UNKNOWN", conversion::SourceIR::UNKNOWN);
  py::enum_<conversion::Verdict>(m, "Verdict")
      .value("CONVERTIBLE", conversion::Verdict::kConvertible).value("NO_CONVERTER", conversion::Verdict::kNoConverter)
      .value("VALIDATOR_REJECTED", conversion::Verdict::kValidatorRejected)
      .value("DYNAMIC_SHAPE", conversion::Verdict::kDynamicShape)
      .value("TORCH_EXECUTED", conversion::Verdict::kTorchExecuted).value("NOT_AN_OP", conversion::Verdict::kNotAnOp);

  using S = conversion::CompilationSettings;
  py::class_<S>(m, "CompilationSettings")
      .def(py::init<>())
      .def_readwrite("min_block_size", &S::min_block_size)
      .def_readwrite("torch_executed_ops", &S::torch_executed_ops)
      .def_readwrite("require_full_compilation", &S::require_full_compilation)
      .def_readwrite("precision", &S::precision)
      .def_readwrite("device", &S::device)
      .def_readwrite("assume_dynamic_shape_support", &S::assume_dynamic_shape_support)
      .def_readwrite("dryrun", &S::dryrun)
      .def_readwrite("workspace_limit", &S::workspace_limit)
      .def("__repr__", [](const S& s) {
        return "CompilationSettings(min_block_size=" + std::to_string(s.min_block_size) +
               ", precision=" + engine::to_string(s.precision) + ", device=" + engine::to_string(s.device) +
               ", require_full_compilation=" + (s.require_full_compilation ? "True" : "False") +
               ", assume_dynamic_shape_support=" + (s.assume_dynamic_shape_support ? "True" : "False") + ")";
      });

  auto ref = py::return_value_policy::reference;
  py::class_<ConversionContext, std::unique_ptr<ConversionContext, py::nodelete>>(m, "ConversionContext")
      .def_property_readonly("net", [](ConversionContext& c) { return &c.net; }, ref)
      .def_property_readonly("settings", [](ConversionContext& c) { return &c.settings; }, ref)
      .def_property_readonly("current_node", [](ConversionContext& c) { return c.current_node; }, ref)
      .def_readwrite("requires_output_allocator", &ConversionContext::requires_output_allocator)
      .def("layer_name", &ConversionContext::layer_name)
      .def("weight", &ConversionContext::weight, py::arg("state_dict_name"), ref)
      .def("scalar", &ConversionContext::scalar, py::arg("value"), py::arg("dtype"), py::arg("name"), ref)
      .def("constant", [](ConversionContext& c, py::handle array, const std::string& name) {
        return c.constant(weights_from_torch(array), name);
      }, py::arg("array"), py::arg("name"), ref)
      .def("to_tensor", [](ConversionContext& c, py::handle v, const engine::Tensor* like, const std::string& name) {
        return c.to_tensor(value_from_py(&c, v, name), like, name);
      }, py::arg("value"), py::arg("like") = nullptr, py::arg("name") = "constant", ref);

  m.def("register_converter", &register_python_converter, py::arg("target"), py::arg("fn"), py::arg("validator"),
        py::arg("supports_dynamic_shapes"), py::arg("priority"), py::arg("requires_output_allocator"),
        py::arg("origin"), py::arg("validator_name"));
  m.def("remove_converters", [](const std::string& prefix) {
    py::gil_scoped_release nogil;  // a removed Python converter re-takes the GIL in its deleter
    return conversion::ConverterRegistry::global().remove_by_origin(prefix);
  }, py::arg("origin_prefix"));
  m.def("converters", &converter_table, py::arg("target"));
  m.def("converter_targets", [] { return conversion::ConverterRegistry::global().targets(); });
  m.def("lookup", [](const ir::Node& node, const conversion::CompilationSettings& s) {
    conversion::Capability c = conversion::ConverterRegistry::global().lookup(node, s);
    return py::make_tuple(c.verdict, c.reason, c.converter ? c.converter->origin : std::string());
  });
  m.def("node_has_dynamic_shape", &conversion::node_has_dynamic_shape);
}

}  // namespace kiln::py_bind
