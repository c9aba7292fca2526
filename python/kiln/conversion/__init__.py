"""Converters: the seed's decorator over kiln's one registry (shared with the C++ converters).

    @kiln.conversion.converter(torch.ops.aten.gelu.default,
                               capability_validator=lambda node, settings: ...,
                               supports_dynamic_shapes=True,
                               priority=kiln.conversion.ConverterPriority.HIGH)
    def my_gelu(ctx, target, args, kwargs, name): ...

The converter is called once per node and compile with network tensors (kiln.ITensor) for tensor
arguments and plain Python values otherwise; it returns network tensors. Validators see a node
view: `.target` (the torch op), `.args`, `.kwargs` (as the graph has them), `.meta`.
"""
import atexit
import hashlib
import types

import torch

from .. import _cache, _kiln
from .._values import FROM_SCALAR_TYPE, target_name, to_kiln, to_torch
from . import impl  # noqa: F401  (kiln.conversion.impl)

ConverterPriority = _kiln.ConverterPriority
ConversionContext = _kiln.ConversionContext
CompilationSettings = _kiln.CompilationSettings
ConversionError = _kiln.ConversionError

__all__ = ["converter", "ConverterPriority", "ConversionContext", "CompilationSettings", "ConversionError",
           "impl", "converters", "NodeView"]


class TensorMeta:
    """A node value's shape and dtype where a FakeTensor would stand in torch (dims may be symbol
    names when dynamic)."""

    def __init__(self, dtype, shape, stride, device):
        self.dtype, self.shape, self.stride, self.device = dtype, shape, stride, device

    def size(self, d=None):
        return self.shape if d is None else self.shape[d]

    def dim(self):
        return len(self.shape)

    def __repr__(self):
        return f"TensorMeta(shape={list(self.shape)}, dtype={self.dtype})"


def _dim_repr(s):
    if isinstance(s, (int, str)):
        return s
    return str(s)  # an expression tuple; validators rarely need more than "not an int"


def _tensor_meta(m):
    dtype, sizes, strides, device = m
    shape = tuple(_dim_repr(s) for s in sizes)
    tdtype = FROM_SCALAR_TYPE.get(dtype, dtype)
    if all(isinstance(s, int) for s in shape):
        try:  # a meta tensor: what node.meta["val"] is in torch (shape, dtype, no data)
            return torch.empty_strided(shape, tuple(strides) if len(strides) == len(shape) and
                                       all(isinstance(s, int) for s in strides) else
                                       torch.empty(shape, device="meta").stride(), dtype=tdtype, device="meta")
        except (RuntimeError, TypeError):
            pass
    return TensorMeta(tdtype, shape, tuple(_dim_repr(s) for s in strides), device)


def _meta_dict(meta):
    if meta is None:
        return {}
    kind, m = meta
    if kind == "tensor":
        val = _tensor_meta(m)
        return {"val": val, "tensor_meta": val}
    if kind in ("tuple", "list"):
        return {"val": tuple(_tensor_meta(e) if e is not None else None for e in m)}
    if kind == "sym":
        return {"val": m}
    return {}


class ArgNode:
    """An input of the node under validation: its name and meta (the graph's value, not data)."""

    def __init__(self, ir_node):
        self.name = ir_node.name
        self.op = ir_node.kind
        self.target = ir_node.target
        self.meta = _meta_dict(ir_node.meta)

    def __repr__(self):
        return self.name


class NodeView:
    """What a capability validator receives: the graph node, as torch.fx shows it."""

    op = "call_function"

    def __init__(self, ir_node, target=None):
        self.name = ir_node.name
        self.target = target if target is not None else _torch_target(ir_node.target)
        self.args = tuple(self._arg(a) for a in ir_node.args)
        self.kwargs = {k: self._arg(v) for k, v in ir_node.kwargs.items()}
        self.meta = _meta_dict(ir_node.meta)
        self.all_input_nodes = [a for a in self._flat(self.args) + self._flat(list(self.kwargs.values()))
                                if isinstance(a, ArgNode)]

    def _arg(self, a):
        if isinstance(a, _kiln.IRNode):
            return ArgNode(a)
        if isinstance(a, list):
            return [self._arg(x) for x in a]
        return to_torch(a)

    def _flat(self, xs):
        out = []
        for x in xs:
            out += self._flat(x) if isinstance(x, list) else [x]
        return out

    def __repr__(self):
        return f"NodeView({self.name}: {self.target}{self.args} {self.kwargs})"


def _torch_target(name):
    """The torch op for a converter's target name, or the name itself where torch has none (a
    converter may be registered, by name, for an op resolve_target does not accept)."""
    from .._values import resolve_target
    try:
        return resolve_target(name) or name
    except _kiln.FormatError:
        return name


def _to_python(v):
    """Converter values from C++ as converters expect them (torch dtypes, devices...)."""
    if isinstance(v, list):
        return [_to_python(x) for x in v]
    return to_torch(v)


def _from_python(v):
    if isinstance(v, (list, tuple)):
        return [_from_python(x) for x in v]
    return to_kiln(v)


def _ensure_schema(name, target):
    """User converters may target ops kiln's schema table lacks: take the schema from torch."""
    if _kiln.has_schema(name):
        return
    schema = getattr(target, "_schema", None)
    if schema is None:
        return
    text = str(schema)
    text = text[text.index("("):]
    _kiln.register_schema(name, name.split(".")[1] + text)


def converter(target, capability_validator=None, supports_dynamic_shapes=False,
              priority=ConverterPriority.STANDARD, requires_output_allocator=False):
    """Registers the decorated function as a converter for `target` (a torch OpOverload such as
    torch.ops.aten.gelu.default, or its name "aten.gelu.default"). HIGH priority goes before every
    converter already registered for the op, STANDARD after them."""
    name = target_name(target)
    torch_target = target if not isinstance(target, str) else _torch_target(name)
    if isinstance(torch_target, str) and not _kiln.has_schema(name):
        # Neither PyTorch nor kiln's schema table knows it: a misspelt name would never be called.
        raise ValueError(f"kiln.conversion.converter: unknown op {name!r}: not a PyTorch operator overload "
                         "(expected e.g. torch.ops.aten.gelu.default or 'aten.gelu.default')")

    def register(fn):
        origin = f"python:{fn.__module__}.{fn.__qualname__}"
        _ensure_schema(name, torch_target)

        def call(ctx, args, kwargs, node_name):
            out = fn(ctx, torch_target, tuple(_to_python(a) for a in args),
                     {k: _to_python(v) for k, v in kwargs.items()}, node_name)
            return _from_python(out)

        validator = None
        validator_name = ""
        if capability_validator is not None:
            validator_name = _describe(capability_validator)

            def validator(ir_node, settings):
                return bool(capability_validator(NodeView(ir_node, torch_target), settings))

        _kiln.register_converter(name, call, validator, supports_dynamic_shapes, priority,
                                 requires_output_allocator, origin, validator_name)
        _cache.python_converters.append((name, origin, int(priority), supports_dynamic_shapes,
                                         requires_output_allocator, _code_identity(fn),
                                         _code_identity(capability_validator)))
        return fn

    return register


def _describe(fn):
    qual = getattr(fn, "__qualname__", type(fn).__name__)
    code = getattr(fn, "__code__", None)
    if qual.endswith("<lambda>") and code is not None:
        return f"lambda at {code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}"
    return f"{getattr(fn, '__module__', '?')}.{qual}"


def converters(target):
    """The registry's candidates for an op, in the order they are tried."""
    return _kiln.converters(target_name(target))


def remove_python_converters(prefix="python:"):
    """Drops converters registered from Python (tests; re-registration after a module reload)."""
    _cache.python_converters[:] = [c for c in _cache.python_converters if not c[1].startswith(prefix)]
    return _kiln.remove_converters(prefix)


def _code_identity(fn):
    """What decides a Python function's behaviour, as far as the engine cache can see it: its
    bytecode and constants (a converter edited between runs makes another cache key)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return type(fn).__qualname__ if fn is not None else ""
    h = hashlib.sha256()

    def walk(c):  # nested functions' code too; a code object's repr holds its address
        h.update(c.co_code)
        h.update(repr(c.co_names).encode())
        for k in c.co_consts:
            if isinstance(k, types.CodeType):
                walk(k)
            else:
                h.update(repr(k).encode())
    walk(code)
    return h.hexdigest()


# Python converters hold Python objects; drop them while the interpreter can still free them.
atexit.register(remove_python_converters)
