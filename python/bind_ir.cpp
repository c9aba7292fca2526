// The IR side of the bindings: Python builds an ir::ExportedProgram node by node from its FX graph
// (no files in between), and reads programs back (nodes, args, metas) to build the module it
// returns and the node views validators see.
#include <pybind11/operators.h>

#include "bind_common.h"
#include "conversion/convert.h"
#include "engine/network.h"
#include "ir/schema.h"

namespace kiln::py_bind {

std::shared_ptr<py::object> hold(py::object obj) {
  return std::shared_ptr<py::object>(new py::object(std::move(obj)), [](py::object* p) {
    if (Py_IsInitialized()) {
      py::gil_scoped_acquire gil;
      delete p;
    } else {
      p->release();  // the interpreter is gone: nothing left to decrement
      delete p;
    }
  });
}

// ---- symbolic sizes ------------------------------------------------------------------------------

namespace {
ir::SymExprPtr symexpr_from_py(py::handle h) {
  if (py::isinstance<py::bool_>(h)) return ir::SymExpr::integer(h.cast<bool>());
  if (py::isinstance<py::int_>(h)) return ir::SymExpr::integer(h.cast<int64_t>());
  if (py::isinstance<py::str>(h)) return ir::SymExpr::symbol(h.cast<std::string>());
  if (!py::isinstance<py::tuple>(h) || py::len(h) < 1)
    throw py::value_error("symbolic size must be int, str or (op, *args), got " + py::repr(h).cast<std::string>());
  auto t = h.cast<py::tuple>();
  const std::string op = t[0].cast<std::string>();
  std::vector<ir::SymExprPtr> args;
  for (size_t i = 1; i < t.size(); ++i) args.push_back(symexpr_from_py(t[i]));
  using Op = ir::SymExpr::Op;
  static const std::map<std::string, Op> ops = {
      {"Add", Op::Add}, {"Mul", Op::Mul}, {"Pow", Op::Pow}, {"FloorDiv", Op::FloorDiv}, {"CeilDiv", Op::CeilDiv},
      {"Mod", Op::Mod}, {"Max", Op::Max}, {"Min", Op::Min}, {"Eq", Op::Eq}, {"Ne", Op::Ne}, {"Lt", Op::Lt},
      {"Le", Op::Le}, {"Gt", Op::Gt}, {"Ge", Op::Ge}, {"And", Op::And}, {"Or", Op::Or}, {"Not", Op::Not},
      {"Where", Op::Where}};
  auto it = ops.find(op);
  if (it == ops.end()) return ir::SymExpr::function(op, std::move(args));
  return ir::SymExpr::make(it->second, std::move(args));
}

py::object symexpr_to_py(const ir::SymExpr& e) {
  using Op = ir::SymExpr::Op;
  if (e.op() == Op::Integer) return py::int_(e.value());
  if (e.op() == Op::Symbol) return py::str(e.name());
  static const std::map<Op, const char*> names = {
      {Op::Add, "Add"}, {Op::Mul, "Mul"}, {Op::Pow, "Pow"}, {Op::FloorDiv, "FloorDiv"}, {Op::CeilDiv, "CeilDiv"},
      {Op::Mod, "Mod"}, {Op::Max, "Max"}, {Op::Min, "Min"}, {Op::Eq, "Eq"}, {Op::Ne, "Ne"}, {Op::Lt, "Lt"},
      {Op::Le, "Le"}, {Op::Gt, "Gt"}, {Op::Ge, "Ge"}, {Op::And, "And"}, {Op::Or, "Or"}, {Op::Not, "Not"},
      {Op::Where, "Where"}};
  py::list out;
  out.append(e.op() == Op::Function ? e.name() : names.at(e.op()));
  for (const auto& a : e.args()) out.append(symexpr_to_py(*a));
  return py::tuple(out);
}

ir::Device device_from_str(const std::string& s) {
  ir::Device d;
  auto colon = s.find(':');
  d.type = s.substr(0, colon);
  if (colon != std::string::npos) d.index = std::stoi(s.substr(colon + 1));
  return d;
}
}  // namespace

ir::SymInt symint_from_py(py::handle h) {
  if (py::isinstance<py::int_>(h)) return ir::SymInt(h.cast<int64_t>());
  return ir::SymInt(symexpr_from_py(h));
}

py::object symint_to_py(const ir::SymInt& s) {
  if (s.is_constant()) return py::int_(s.value);
  return symexpr_to_py(*s.expr);
}

ir::TensorMeta tensor_meta_from_py(py::handle h) {
  auto t = h.cast<py::tuple>();
  if (t.size() != 4) throw py::value_error("tensor meta is (dtype, sizes, strides, device)");
  ir::TensorMeta m;
  m.dtype = t[0].cast<ir::ScalarType>();
  for (auto s : t[1]) m.sizes.push_back(symint_from_py(s));
  for (auto s : t[2]) m.strides.push_back(symint_from_py(s));
  m.device = device_from_str(t[3].cast<std::string>());
  return m;
}

py::object tensor_meta_to_py(const ir::TensorMeta& m) {
  py::list sizes, strides;
  for (const auto& s : m.sizes) sizes.append(symint_to_py(s));
  for (const auto& s : m.strides) strides.append(symint_to_py(s));
  return py::make_tuple(m.dtype, py::tuple(sizes), py::tuple(strides), m.device.str());
}

ir::ValueMeta value_meta_from_py(py::handle h) {
  ir::ValueMeta vm;
  if (h.is_none()) return vm;
  auto t = h.cast<py::tuple>();
  const std::string kind = t[0].cast<std::string>();
  if (kind == "tensor") return ir::ValueMeta::of_tensor(tensor_meta_from_py(t[1]));
  if (kind == "tuple" || kind == "list") {
    vm.kind = kind == "tuple" ? ir::ValueMeta::Kind::Tuple : ir::ValueMeta::Kind::TensorList;
    for (auto e : t[1]) {
      if (e.is_none()) vm.tuple.emplace_back(std::nullopt);
      else vm.tuple.emplace_back(tensor_meta_from_py(e));
    }
    return vm;
  }
  if (kind == "sym") {
    vm.kind = ir::ValueMeta::Kind::SymInt;
    vm.sym = symint_from_py(t[1]);
    return vm;
  }
  if (kind == "symfloat") vm.kind = ir::ValueMeta::Kind::SymFloat;
  else if (kind == "symbool") vm.kind = ir::ValueMeta::Kind::SymBool;
  else throw py::value_error("unknown value meta kind '" + kind + "'");
  return vm;
}

py::object value_meta_to_py(const ir::ValueMeta& m) {
  using K = ir::ValueMeta::Kind;
  switch (m.kind) {
    case K::None: return py::none();
    case K::Tensor: return py::make_tuple("tensor", tensor_meta_to_py(m.tensor));
    case K::Tuple:
    case K::TensorList: {
      py::list l;
      for (const auto& e : m.tuple) l.append(e ? tensor_meta_to_py(*e) : py::none());
      return py::make_tuple(m.kind == K::Tuple ? "tuple" : "list", l);
    }
    case K::SymInt: return py::make_tuple("sym", symint_to_py(m.sym));
    case K::SymFloat: return py::make_tuple("symfloat", py::none());
    case K::SymBool: return py::make_tuple("symbool", py::none());
  }
  return py::none();
}

// ---- arguments -----------------------------------------------------------------------------------

ir::Argument arg_from_py(py::handle h, const ir::Graph& g) {
  if (h.is_none()) return ir::None{};
  if (py::isinstance<py::bool_>(h)) return h.cast<bool>();
  if (py::isinstance<py::int_>(h)) return h.cast<int64_t>();
  if (py::isinstance<py::float_>(h)) return h.cast<double>();
  if (py::isinstance<py::str>(h)) return h.cast<std::string>();
  if (py::isinstance<NodeRef>(h)) {
    const auto& name = h.cast<const NodeRef&>().name;
    ir::Node* n = g.find(name);
    if (!n) throw py::value_error("argument refers to unknown node %" + name);
    return n;
  }
  if (py::isinstance<ir::ScalarType>(h)) return h.cast<ir::ScalarType>();
  if (py::isinstance<ir::Device>(h)) return h.cast<ir::Device>();
  if (py::isinstance<ir::MemoryFormat>(h)) return h.cast<ir::MemoryFormat>();
  if (py::isinstance<ir::Layout>(h)) return h.cast<ir::Layout>();
  if (py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h)) {
    ir::Argument::List l;
    for (auto e : h) l.push_back(arg_from_py(e, g));
    return l;
  }
  throw py::type_error("cannot pass " + py::repr(h).cast<std::string>() + " as an IR argument");
}

py::object arg_to_py(const ir::Argument& a) {
  return std::visit(
      [](const auto& x) -> py::object {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, ir::None>) return py::none();
        else if constexpr (std::is_same_v<T, ir::Node*>) return py::cast(x, py::return_value_policy::reference);
        else if constexpr (std::is_same_v<T, ir::Argument::List>) {
          py::list l;
          for (const auto& e : x) l.append(arg_to_py(e));
          return l;
        } else return py::cast(x);
      },
      a.value);
}

// ---- building a program --------------------------------------------------------------------------

namespace {

struct ProgramBuilder {
  std::shared_ptr<ir::ExportedProgram> prog = std::make_shared<ir::ExportedProgram>();

  std::string placeholder(const std::string& name, py::handle meta) {
    ir::Node* n = prog->graph.create(ir::NodeKind::Placeholder, name, name);
    n->meta = value_meta_from_py(meta);
    return n->name;
  }

  // A weight viewing memory Python owns (a torch tensor on the CPU, kept alive by `owner`).
  std::string weight(const std::string& node_name, const std::string& state_name, const std::string& kind,
                     py::handle meta, uintptr_t data, size_t nbytes, py::object owner) {
    ir::Weight w;
    w.name = state_name;
    w.kind = kind == "buffer" ? ir::Weight::Kind::Buffer
             : kind == "constant" ? ir::Weight::Kind::Constant : ir::Weight::Kind::Parameter;
    w.meta = tensor_meta_from_py(meta);
    auto storage = std::make_shared<ir::Storage>();
    storage->data = reinterpret_cast<const uint8_t*>(data);
    storage->size = nbytes;
    storage->owner = hold(std::move(owner));
    w.storage = std::move(storage);
    prog->weights[state_name] = std::move(w);
    ir::Node* n = prog->graph.create(ir::NodeKind::GetAttr, node_name, state_name);
    n->meta = ir::ValueMeta::of_tensor(prog->weights[state_name].meta);
    return n->name;
  }

  std::string call(const std::string& name, const std::string& target, py::handle args, py::handle kwargs,
                   py::handle meta, py::dict metadata) {
    std::vector<ir::Argument> a;
    for (auto e : args) a.push_back(arg_from_py(e, prog->graph));
    std::vector<std::pair<std::string, ir::Argument>> kw;
    for (auto item : kwargs.cast<py::dict>())
      kw.emplace_back(item.first.cast<std::string>(), arg_from_py(item.second, prog->graph));
    ir::Node* n = prog->graph.create(ir::NodeKind::CallFunction, name, target, std::move(a), std::move(kw));
    n->meta = value_meta_from_py(meta);
    for (auto item : metadata) n->metadata[item.first.cast<std::string>()] = item.second.cast<std::string>();
    return n->name;
  }

  void output(py::handle values) {
    std::vector<ir::Argument> a;
    for (auto e : values) a.push_back(arg_from_py(e, prog->graph));
    prog->graph.create(ir::NodeKind::Output, "output", "output", {ir::Argument(std::move(a))});
  }
};

}  // namespace

void bind_ir(py::module_& m) {
  py::enum_<ir::ScalarType>(m, "ScalarType")
      .value("Undefined", ir::ScalarType::Undefined).value("Byte", ir::ScalarType::Byte)
      .value("Char", ir::ScalarType::Char).value("Short", ir::ScalarType::Short).value("Int", ir::ScalarType::Int)
      .value("Long", ir::ScalarType::Long).value("Half", ir::ScalarType::Half).value("Float", ir::ScalarType::Float)
      .value("Double", ir::ScalarType::Double).value("ComplexHalf", ir::ScalarType::ComplexHalf)
      .value("ComplexFloat", ir::ScalarType::ComplexFloat).value("ComplexDouble", ir::ScalarType::ComplexDouble)
      .value("Bool", ir::ScalarType::Bool).value("BFloat16", ir::ScalarType::BFloat16)
      .value("UInt16", ir::ScalarType::UInt16).value("Float8_e4m3fn", ir::ScalarType::Float8_e4m3fn)
      .value("Float8_e5m2", ir::ScalarType::Float8_e5m2).value("Float8_e4m3fnuz", ir::ScalarType::Float8_e4m3fnuz)
      .value("Float8_e5m2fnuz", ir::ScalarType::Float8_e5m2fnuz);
  py::enum_<ir::MemoryFormat>(m, "MemoryFormat")
      .value("Contiguous", ir::MemoryFormat::Contiguous).value("ChannelsLast", ir::MemoryFormat::ChannelsLast)
      .value("ChannelsLast3d", ir::MemoryFormat::ChannelsLast3d).value("Preserve", ir::MemoryFormat::Preserve);
  py::enum_<ir::Layout>(m, "Layout")
      .value("Strided", ir::Layout::Strided).value("Sparse", ir::Layout::Sparse)
      .value("SparseCsr", ir::Layout::SparseCsr).value("SparseCsc", ir::Layout::SparseCsc)
      .value("SparseBsr", ir::Layout::SparseBsr).value("SparseBsc", ir::Layout::SparseBsc)
      .value("Mkldnn", ir::Layout::Mkldnn);
  py::class_<ir::Device>(m, "Device")
      .def(py::init([](const std::string& s) { return device_from_str(s); }))
      .def_readonly("type", &ir::Device::type)
      .def_readonly("index", &ir::Device::index)
      .def("__str__", &ir::Device::str)
      .def("__repr__", [](const ir::Device& d) { return "Device('" + d.str() + "')"; });
  py::class_<NodeRef>(m, "NodeRef")
      .def(py::init([](std::string n) { return NodeRef{std::move(n)}; }))
      .def_readonly("name", &NodeRef::name);

  py::class_<ir::Node, std::unique_ptr<ir::Node, py::nodelete>>(m, "IRNode")
      .def_readonly("name", &ir::Node::name)
      .def_readonly("target", &ir::Node::target)
      .def_property_readonly("kind", [](const ir::Node& n) { return std::string(ir::to_string(n.kind)); })
      .def_property_readonly("args", [](const ir::Node& n) {
        py::list l;
        for (const auto& a : n.args) l.append(arg_to_py(a));
        return py::tuple(l);
      })
      .def_property_readonly("kwargs", [](const ir::Node& n) {
        py::dict d;
        for (const auto& [k, a] : n.kwargs) d[py::str(k)] = arg_to_py(a);
        return d;
      })
      .def_property_readonly("meta", [](const ir::Node& n) { return value_meta_to_py(n.meta); })
      .def_readonly("metadata", &ir::Node::metadata)
      .def_property_readonly("users", [](const ir::Node& n) {
        std::vector<std::string> names;
        for (auto* u : n.users()) names.push_back(u->name);
        return names;
      })
      // Arguments bound to the op schema (defaults filled): what a converter would receive.
      .def("bound_args", [](const ir::Node& n) -> py::object {
        const ir::OpSchema* s = ir::find_schema(n.target);
        if (!s) return py::none();
        ir::BoundArgs b(n, *s);
        py::list args;
        py::dict kwargs;
        for (const auto& a : b.positional()) args.append(arg_to_py(a));
        for (const auto& [k, a] : b.keyword()) kwargs[py::str(k)] = arg_to_py(a);
        return py::make_tuple(py::tuple(args), kwargs);
      })
      .def("__str__", &ir::Node::str)
      .def("__repr__", [](const ir::Node& n) { return "<IRNode " + n.str() + ">"; });

  py::class_<ir::ExportedProgram, std::shared_ptr<ir::ExportedProgram>>(m, "IRProgram")
      .def("nodes", [](const ir::ExportedProgram& p) { return p.graph.nodes(); }, py::return_value_policy::reference_internal)
      .def("find", [](const ir::ExportedProgram& p, const std::string& n) { return p.graph.find(n); },
           py::return_value_policy::reference_internal)
      .def("verify", [](const ir::ExportedProgram& p) { p.graph.verify(); })
      .def("weight_names", [](const ir::ExportedProgram& p) {
        std::vector<std::string> out;
        for (const auto& [k, w] : p.weights) out.push_back(k);
        return out;
      })
      .def("set_range", [](ir::ExportedProgram& p, const std::string& sym, int64_t lo, std::optional<int64_t> hi) {
        p.ranges[sym] = ir::SymRange{lo, hi};
      })
      .def_property_readonly("ranges", [](const ir::ExportedProgram& p) {
        py::dict d;
        for (const auto& [k, r] : p.ranges) d[py::str(k)] = py::make_tuple(r.min, r.max);
        return d;
      })
      .def("__str__", [](const ir::ExportedProgram& p) { return p.graph.str(); });

  py::class_<ProgramBuilder>(m, "ProgramBuilder")
      .def(py::init<>())
      .def("placeholder", &ProgramBuilder::placeholder, py::arg("name"), py::arg("meta"))
      .def("weight", &ProgramBuilder::weight, py::arg("node_name"), py::arg("state_name"), py::arg("kind"),
           py::arg("meta"), py::arg("data_ptr"), py::arg("nbytes"), py::arg("owner"))
      .def("call", &ProgramBuilder::call, py::arg("name"), py::arg("target"), py::arg("args"), py::arg("kwargs"),
           py::arg("meta"), py::arg("metadata") = py::dict())
      .def("output", &ProgramBuilder::output)
      .def("finish", [](ProgramBuilder& b, const std::string& torch_version) {
        b.prog->torch_version = torch_version;
        b.prog->verifier = "ATEN";
        b.prog->graph.verify();
        auto p = std::move(b.prog);
        b.prog = std::make_shared<ir::ExportedProgram>();
        return p;
      }, py::arg("torch_version") = "");

  m.def("known_ops", &ir::known_ops);
  m.def("register_schema", &ir::register_schema, py::arg("overload"), py::arg("schema"));
  m.def("has_schema", [](const std::string& op) { return ir::find_schema(op) != nullptr; });
}

}  // namespace kiln::py_bind
