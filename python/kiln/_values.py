"""Translations between torch objects and kiln's: dtypes, devices, op targets, symbolic sizes.

The C++ side calls `to_kiln`, `engine_dtype` and `resolve_target` from here when it meets a torch
object it cannot name itself (the extension does not link libtorch).
"""
import math
import operator
import re

import torch

from . import _kiln

_DTYPES = {
    torch.uint8: "Byte", torch.int8: "Char", torch.int16: "Short", torch.int32: "Int", torch.int64: "Long",
    torch.float16: "Half", torch.float32: "Float", torch.float64: "Double", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble", torch.bool: "Bool", torch.bfloat16: "BFloat16",
}
TO_SCALAR_TYPE = {t: getattr(_kiln.ScalarType, n) for t, n in _DTYPES.items()}
FROM_SCALAR_TYPE = {v: k for k, v in TO_SCALAR_TYPE.items()}

_ENGINE = {
    torch.float32: "FLOAT", torch.float16: "HALF", torch.bfloat16: "BF16", torch.int64: "INT64",
    torch.int32: "INT32", torch.int8: "INT8", torch.uint8: "UINT8", torch.bool: "BOOL",
}
TO_ENGINE = {t: getattr(_kiln.DataType, n) for t, n in _ENGINE.items()}
FROM_ENGINE = {v: k for k, v in TO_ENGINE.items()}

_MEMORY_FORMATS = {
    torch.contiguous_format: _kiln.MemoryFormat.Contiguous, torch.channels_last: _kiln.MemoryFormat.ChannelsLast,
    torch.channels_last_3d: _kiln.MemoryFormat.ChannelsLast3d, torch.preserve_format: _kiln.MemoryFormat.Preserve,
}
_LAYOUTS = {torch.strided: _kiln.Layout.Strided, torch.sparse_coo: _kiln.Layout.Sparse}
FROM_MEMORY_FORMAT = {v: k for k, v in _MEMORY_FORMATS.items()}
FROM_LAYOUT = {v: k for k, v in _LAYOUTS.items()}


def scalar_type(dtype):
    try:
        return TO_SCALAR_TYPE[dtype]
    except KeyError:
        raise TypeError(f"kiln has no scalar type for {dtype}") from None


def engine_dtype(dtype):
    """torch.dtype (or kiln ScalarType) -> engine DataType."""
    if isinstance(dtype, _kiln.ScalarType):
        dtype = FROM_SCALAR_TYPE[dtype]
    try:
        return TO_ENGINE[dtype]
    except KeyError:
        raise TypeError(f"the kiln engine has no type for {dtype}") from None


def to_kiln(obj):
    """A torch object as the kiln value it stands for; anything else unchanged."""
    if isinstance(obj, torch.dtype):
        return scalar_type(obj)
    if isinstance(obj, torch.device):
        return _kiln.Device(str(obj))
    if isinstance(obj, torch.memory_format):
        return _MEMORY_FORMATS[obj]
    if isinstance(obj, torch.layout):
        return _LAYOUTS[obj]
    return obj


def to_torch(obj):
    """A kiln value (IR argument or converter value) with its torch meaning: dtypes, devices..."""
    if isinstance(obj, _kiln.ScalarType):
        return FROM_SCALAR_TYPE[obj]
    if isinstance(obj, _kiln.Device):
        return torch.device(str(obj))
    if isinstance(obj, _kiln.MemoryFormat):
        return FROM_MEMORY_FORMAT[obj]
    if isinstance(obj, _kiln.Layout):
        return FROM_LAYOUT[obj]
    if isinstance(obj, list):
        return [to_torch(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(to_torch(x) for x in obj)
    return obj


# ---- op targets ----------------------------------------------------------------------------------

# Symbolic-size ops: 1.13 names packets ("aten.sym_size"), 2.x overloads ("aten.sym_size.int").
_SYM_OVERLOADS = {
    "aten.sym_size": "aten.sym_size.int", "aten.sym_stride": "aten.sym_stride.int",
    "aten.sym_numel": "aten.sym_numel.default", "aten.sym_storage_offset": "aten.sym_storage_offset.default",
}


def target_name(target):
    """An FX call_function target as kiln names it: "aten.gelu.default", "getitem", "_operator.mul"."""
    if isinstance(target, str):
        name = target[len("torch.ops."):] if target.startswith("torch.ops.") else target
        return _SYM_OVERLOADS.get(name, name)
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    if isinstance(target, torch._ops.OpOverloadPacket):
        name = str(target)
        return _SYM_OVERLOADS.get(name, name + ".default")
    if target is operator.getitem:
        return "getitem"
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", repr(target))
    if module in ("operator", "_operator"):
        return "_operator." + name
    if module == "math":
        return "math." + name
    return f"{module}.{name}" if module else name


def _dim(x, d):
    return x.size(d)


def _stride(x, d):
    return x.stride(d)


def _numel(x):
    return x.numel()


def _storage_offset(x):
    return x.storage_offset()


_dim.__module__ = _stride.__module__ = _numel.__module__ = _storage_offset.__module__ = "kiln._values"
_HOST_OPS = {
    "getitem": operator.getitem, "aten.sym_size.int": _dim, "aten.sym_stride.int": _stride,
    "aten.sym_numel.default": _numel, "aten.sym_storage_offset.default": _storage_offset,
}

# Targets come from files (.kiln, .pt2) as text, and resolving one must never reach anything but an
# operator: following attributes from `torch` let a file name `torch.os.system` and have the module
# call it with the file's arguments (issue 17). So a target is either a registered operator overload
# of an operator namespace, reached only through torch.ops and checked to be an OpOverload, or one of
# the closed lists below; every other name is a FormatError.
# ATen and its primitives (all kiln's IR, schemas and fixtures), and torchvision's detection ops
# (roi_align), registered by its native library once torchvision is imported.
_OP_NAMESPACES = frozenset({"aten", "prims", "torchvision"})

# The Python operators FX graphs contain for symbolic sizes (kiln's own runtime evaluates the same
# set in src/program/run.cpp), by the names target_name() gives them.
_PY_OPERATORS = {"_operator." + n: getattr(operator, n) for n in (
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "neg", "pos", "abs",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_")}
# Integer power, factorial and friends are left out on purpose: from a file they compute without bound.
_PY_OPERATORS.update({"math." + n: getattr(math, n) for n in (
    "floor", "ceil", "trunc", "sqrt", "exp", "log", "log2", "log10", "fabs")})
# torch's symbolic-size helpers (torch.export writes them as "torch.sym_float"...), where this
# PyTorch has them (1.13 has none).
_PY_OPERATORS.update({"torch." + n: getattr(torch, n) for n in (
    "sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt", "_sym_sqrt")
    if callable(getattr(torch, n, None))})

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_OPERATOR_DUNDER = re.compile(r"__(i|r)?(and|or|xor|lshift|rshift)__\Z")


def _format_error(name, why):
    namespaces = " or ".join(f"{ns}.<op>.<overload>" for ns in sorted(_OP_NAMESPACES))
    return _kiln.FormatError(f"op target {name!r} {why}: kiln runs only registered operator overloads "
                             f"({namespaces}) and a fixed list of Python operators (operator.getitem, "
                             "arithmetic and comparisons on sizes)")


def resolve_target(name):
    """The Python callable for a kiln target name (as a .kiln or .pt2 file names it): a registered
    operator overload such as "aten.gelu.default", "getitem", a Python operator on sizes
    ("_operator.mul", "math.ceil") or one of kiln's own size helpers.

    Returns None for a well-formed ATen / prims overload name that this PyTorch does not have.
    Raises kiln.FormatError for any other name: nothing outside those lists is ever looked up.
    """
    if not isinstance(name, str):
        raise _format_error(name, "is not a name")
    given = name  # errors name the target as the file gave it
    if name.startswith("torch.ops."):
        name = name[len("torch.ops."):]
    name = _SYM_OVERLOADS.get(name, name)
    fn = _HOST_OPS.get(name) or _PY_OPERATORS.get(name) or _KILN_HELPERS.get(name)
    if fn is not None:
        return fn
    parts = name.split(".")
    if len(parts) != 3:
        raise _format_error(given, "is not an operator overload")
    ns, op, overload = parts
    if ns not in _OP_NAMESPACES:
        raise _format_error(given, "is outside the operator namespaces")
    # Identifiers only, and no dunders but ATen's operator names (aten.__and__.Tensor,
    # aten.__lshift__.Scalar): getattr on torch.ops namespaces and packets must not reach their
    # Python attributes (__class__, __init__...); what an operator-shaped dunder finds must still be
    # an OpOverloadPacket (checked below), which no Python attribute of a namespace is.
    if not _IDENTIFIER.match(op) or (op.startswith("__") and not _OPERATOR_DUNDER.match(op)):
        raise _format_error(given, "is not an operator overload")
    if not _IDENTIFIER.match(overload) or overload.startswith("__"):
        raise _format_error(given, "is not an operator overload")
    try:
        packet = getattr(getattr(torch.ops, ns), op)
    except (AttributeError, RuntimeError):
        return None  # no such operator in this PyTorch
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        raise _format_error(given, "is not an operator overload")  # e.g. the namespace's own attributes
    try:
        overload_fn = getattr(packet, overload)
    except (AttributeError, RuntimeError):
        return None  # the operator exists but has no such overload here
    if not isinstance(overload_fn, torch._ops.OpOverload):
        raise _format_error(given, "is not an operator overload")
    return overload_fn


# ---- symbolic sizes ------------------------------------------------------------------------------

_SYMPY_OPS = {
    "Add": "Add", "Mul": "Mul", "Pow": "Pow", "FloorDiv": "FloorDiv", "CleanDiv": "FloorDiv",
    "CeilDiv": "CeilDiv", "Mod": "Mod", "PythonMod": "Mod", "Max": "Max", "Min": "Min",
}


def sympy_to_kiln(expr, rename):
    """A sympy size expression as the nested tuples the bindings take: int, "s0", ("Add", a, b)."""
    import sympy
    if isinstance(expr, (int, sympy.Integer)) or getattr(expr, "is_Integer", False):
        return int(expr)
    if isinstance(expr, sympy.Symbol):
        return rename(expr)
    kind = type(expr).__name__
    return (_SYMPY_OPS.get(kind, kind),) + tuple(sympy_to_kiln(a, rename) for a in expr.args)


def eval_sym(expr, bindings):
    """Evaluates a kiln symbolic expression (nested tuples) with symbol values."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, str):
        return bindings[expr]
    op, *args = expr
    vals = [eval_sym(a, bindings) for a in args]
    if op == "Add":
        return sum(vals)
    if op == "Mul":
        out = 1
        for v in vals:
            out *= v
        return out
    if op == "Pow":
        base, exp = vals
        # Sizes fit in 64 bits: a larger integer power is no size, and from a file it would compute
        # without bound. (Checked on concrete sizes: a comparison of symbolic ones, under fake
        # tensors, would add a guard.)
        if isinstance(base, int) and isinstance(exp, int) and abs(base) > 1 and not 0 <= exp <= 64:
            raise ValueError(f"symbolic size {base} ** {exp} is out of range")
        return base ** exp
    if op == "FloorDiv":
        return vals[0] // vals[1]
    if op == "CeilDiv":
        return -(-vals[0] // vals[1])
    if op == "Mod":
        return vals[0] % vals[1]
    if op in ("Max", "Min"):
        if all(isinstance(v, int) for v in vals):
            return max(vals) if op == "Max" else min(vals)
        # Symbolic sizes (under fake tensors): Python's max would compare them and add a guard.
        pick = torch.sym_max if op == "Max" else torch.sym_min
        out = vals[0]
        for v in vals[1:]:
            out = pick(out, v)
        return out
    raise NotImplementedError(f"cannot evaluate symbolic {op}")


def sym_expr(expr, names, *values):
    """Runtime helper of compiled modules: a symbolic size from the input dims it depends on."""
    return eval_sym(expr, dict(zip(names, values)))


sym_expr.__module__ = "kiln._values"

# kiln's own size helpers, by the names target_name() gives them: a compiled module's graph calls them,
# so a module compiled again from it (or its program saved) names them as targets.
_KILN_HELPERS = {"kiln._values." + f.__name__: f for f in (_dim, _stride, _numel, _storage_offset, sym_expr)}
