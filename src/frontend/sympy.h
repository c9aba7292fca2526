// Parses sympy `srepr` strings, as torch.export writes symbolic sizes, into ir::SymExpr:
//   Mul(Integer(3), Symbol('s77', positive=True, integer=True))  ->  3*s77
// torch's own sympy functions map to the IR's ops (FloorDiv, CleanDiv -> FloorDiv; PythonMod ->
// Mod; ModularIndexing(x, d, m) -> Mod(FloorDiv(x, d), m); PowByNatural -> Pow; ...); any other
// function is kept by name (SymExpr::function) so the program still loads and prints.
#pragma once

#include <stdexcept>
#include <string>

#include "ir/symexpr.h"

namespace kiln::frontend {

struct SympyError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Throws SympyError naming the position on malformed text or nesting deeper than 256.
ir::SymExprPtr parse_sympy_srepr(const std::string& text);

}  // namespace kiln::frontend
