// Shared pieces of the _kiln bindings: Python objects held from C++ (weights' owners, converter
// callbacks) and the translations between Python values and IR / conversion values.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "conversion/context.h"
#include "conversion/registry.h"
#include "ir/graph.h"

namespace kiln::py_bind {

namespace py = pybind11;

// A Python object kept alive by C++ (a weight's torch tensor, a converter function). C++ may drop
// the last reference without the GIL (a registry torn down at exit, a plan freed by a worker
// thread), so the deleter takes the GIL, and leaks the object when the interpreter is already gone.
std::shared_ptr<py::object> hold(py::object obj);

// A reference to an IR node in argument lists that Python hands over ("the value named x").
struct NodeRef {
  std::string name;
};

// IR <-> Python. Python side: None, bool, int, float, str, ScalarType, Device, MemoryFormat,
// Layout, NodeRef (or an ir::Node* wrapper when reading back), list/tuple.
ir::Argument arg_from_py(py::handle h, const ir::Graph& g);
py::object arg_to_py(const ir::Argument& a);

// Symbolic sizes cross as int (constant), str (symbol) or a tuple (op name, *args) of the same.
ir::SymInt symint_from_py(py::handle h);
py::object symint_to_py(const ir::SymInt& s);
ir::TensorMeta tensor_meta_from_py(py::handle h);  // (dtype, sizes, strides, device_str)
py::object tensor_meta_to_py(const ir::TensorMeta& m);
ir::ValueMeta value_meta_from_py(py::handle h);    // None | ("tensor", m) | ("tuple", [m|None]) | ("sym", s)
py::object value_meta_to_py(const ir::ValueMeta& m);
py::object dim_to_py(const engine::DimExpr& d);     // int when constant, else a DimExpr

// Converter values <-> Python. A torch.Tensor or NumPy array given where a value is expected
// becomes a network constant (the seed allows them as converter arguments and results).
conversion::Value value_from_py(conversion::ConversionContext* ctx, py::handle h, const std::string& name);
py::object value_to_py(const conversion::Value& v);

// Translates the C++ exception in flight into the matching kiln Python exception.
void register_exceptions(py::module_& m);

void bind_ir(py::module_& m);
void bind_engine(py::module_& m);
void bind_conversion(py::module_& m);
void bind_impl(py::module_& m);
void bind_program(py::module_& m);
void install_crash_trace();  // KILN_CRASH_TRACE=1: native stack on a fatal signal (crash_trace.cpp)

}  // namespace kiln::py_bind
