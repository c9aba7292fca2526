// The _kiln extension module: the C++ core under the Python package `kiln` (python/kiln/*.py is
// the API users see; this module is its engine room). Pieces live in bind_*.cpp.
#include "bind_common.h"

PYBIND11_MODULE(_kiln, m) {
  using namespace kiln::py_bind;
  m.doc() = "kiln's C++ core: IR construction, converter registry, engine plans and compiled programs";
  install_crash_trace();
  register_exceptions(m);
  bind_ir(m);
  bind_engine(m);
  bind_conversion(m);
  bind_impl(m);
  bind_program(m);
  // Built-in converters enter the registry once, explicitly (never from static initializers).
  kiln::conversion::register_builtin_converters();
}
