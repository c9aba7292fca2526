"""Translations between torch objects and kiln's: dtypes, devices, op targets, symbolic sizes.

The C++ side calls `to_kiln`, `engine_dtype` and `resolve_target` from here when it meets a torch
object it cannot name itself (the extension does not link libtorch).
"""
import operator

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


def resolve_target(name):
    """The Python callable for a kiln target name, or None when torch has no such op."""
    if name in _HOST_OPS:
        return _HOST_OPS[name]
    if name.startswith("_operator."):
        return getattr(operator, name[len("_operator."):], None)
    if name.startswith("math."):
        import math
        return getattr(math, name[len("math."):], None)
    if name.startswith("torch.") and not name.startswith("torch.ops."):
        obj = torch
        for part in name.split(".")[1:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj
    parts = name.split(".")
    if len(parts) != 3:
        return None
    ns, op, overload = parts
    try:
        packet = getattr(getattr(torch.ops, ns), op)
        return getattr(packet, overload)
    except (AttributeError, RuntimeError):
        return None


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
        return vals[0] ** vals[1]
    if op == "FloorDiv":
        return vals[0] // vals[1]
    if op == "CeilDiv":
        return -(-vals[0] // vals[1])
    if op == "Mod":
        return vals[0] % vals[1]
    if op == "Max":
        return max(vals)
    if op == "Min":
        return min(vals)
    raise NotImplementedError(f"cannot evaluate symbolic {op}")


def sym_expr(expr, names, *values):
    """Runtime helper of compiled modules: a symbolic size from the input dims it depends on."""
    return eval_sym(expr, dict(zip(names, values)))


sym_expr.__module__ = "kiln._values"
