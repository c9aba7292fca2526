"""Capture: a torch.nn.Module and example inputs -> an ATen-level FX graph -> kiln's IR.

torch.export where it exists (PyTorch >= 2.1), make_fx on older PyTorch (Debian's 1.13). Either
way the FX graph is translated node by node through `_kiln.ProgramBuilder`; weights are handed
over as pointers into torch tensors that the IR keeps alive (no copies, no files).
"""
import contextlib
import inspect
import math
import operator
import os
import re
import sysconfig
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.utils._pytree as pytree

from . import _kiln
from ._module import forget_fx_sources, fx_sources
from ._values import scalar_type, sympy_to_kiln, target_name, to_kiln


class Input:
    """An input's shape range, as Torch-TensorRT's `Input`: a dim is dynamic where min != max.

    `kiln.Input(min_shape=(1, 3, 224, 224), opt_shape=(8, 3, 224, 224), max_shape=(32, 3, 224, 224))`
    or `kiln.Input(shape=(1, 3, 224, 224))` for a static one.
    """

    def __init__(self, shape=None, min_shape=None, opt_shape=None, max_shape=None, dtype=torch.float32,
                 name=None):
        if shape is not None:
            min_shape = opt_shape = max_shape = shape
        if min_shape is None or max_shape is None:
            raise ValueError("kiln.Input needs shape=, or min_shape= and max_shape= (opt_shape= optional)")
        if opt_shape is None:
            opt_shape = min_shape
        self.min_shape, self.opt_shape, self.max_shape = tuple(min_shape), tuple(opt_shape), tuple(max_shape)
        if not (len(self.min_shape) == len(self.opt_shape) == len(self.max_shape)):
            raise ValueError("kiln.Input: min_shape, opt_shape and max_shape need the same rank")
        for lo, opt, hi in zip(self.min_shape, self.opt_shape, self.max_shape):
            if not (0 <= lo <= opt <= hi):
                raise ValueError(f"kiln.Input: needs 0 <= min <= opt <= max per dim, got {lo}, {opt}, {hi}")
        self.dtype = dtype
        self.name = name

    def dynamic_dims(self):
        return [d for d, (lo, hi) in enumerate(zip(self.min_shape, self.max_shape)) if lo != hi]

    def example(self, device, taken=()):
        """A tensor to trace with. Dynamic dims take a value that no other dim has (tracers that
        share symbols between equal sizes would otherwise tie them) and that is not 0 or 1
        (tracers specialize those)."""
        shape = []
        for d, (lo, opt, hi) in enumerate(zip(self.min_shape, self.opt_shape, self.max_shape)):
            if lo == hi:
                shape.append(lo)
                continue
            candidates = [opt] + list(range(opt + 1, hi + 1)) + list(range(opt - 1, lo - 1, -1))
            shape.append(next((v for v in candidates if v >= 2 and v not in taken), max(opt, 2)))
        if self.dtype.is_floating_point:
            return torch.randn(shape, dtype=self.dtype, device=device)
        return torch.zeros(shape, dtype=self.dtype, device=device)  # safe as indices

    def __repr__(self):
        if self.min_shape == self.max_shape:
            return f"Input(shape={self.min_shape}, dtype={self.dtype})"
        return (f"Input(min_shape={self.min_shape}, opt_shape={self.opt_shape}, max_shape={self.max_shape}, "
                f"dtype={self.dtype})")


@dataclass
class Captured:
    """What capture() produces for compile(): the IR program plus what the returned module needs."""
    program: Any                          # _kiln.IRProgram
    input_names: List[str]                # IR placeholder names of the flattened tensor inputs
    in_spec: Any                          # pytree spec of (args, kwargs)
    tensor_leaf: List[bool]               # per flattened leaf: a tensor input (else a constant)
    out_spec: Any                         # pytree spec of the module's output
    weights: Dict[str, torch.Tensor]      # state-dict name -> tensor (the module's own, any device)
    dynamic: List[Tuple[str, int, int, int, int]] = field(default_factory=list)  # (input, dim, min, opt, max)
    # Per flattened leaf, what the program was traced with: a tensor's dtype, else the value itself
    # (a Python scalar, None, a string: baked into the program). The module's calls are checked
    # against it (CompiledModule.forward).
    leaf_values: List[Any] = field(default_factory=list)
    # Builds the IR program again from the same trace with other parameter and buffer values
    # ({state-dict name: tensor}, every name of `refittable`): what kiln.refit compiles. It keeps the
    # traced graph, not the weights.
    rebuild: Any = None
    refittable: Dict[str, Tuple[Tuple[int, ...], torch.dtype]] = field(default_factory=dict)


# ---- tracing -------------------------------------------------------------------------------------

class CaptureError(_kiln.KilnError):
    """kiln.compile could not trace the model: its Python code branches on a tensor's value, calls
    what the tracer cannot run, or the like. The message names the model's line where tracing
    stopped; the tracer's own exception is its __cause__."""


# What PyTorch's tracers say when the code branches on a tensor's value.
_DATA_DEPENDENT = re.compile(r"data.dependent|value out of a tracing tensor|GuardOnDataDependent|"
                             r"Could not guard on|symbolic boolean", re.I)
# PyTorch's, kiln's and the standard library's own folders (third-party model code, torchvision's or
# transformers', lives in site-packages, often inside the standard library's folder, and is the
# model's code here).
_LIBRARY_DIRS = tuple(os.path.abspath(d) + os.sep for d in (os.path.dirname(torch.__file__),
                                                             os.path.dirname(os.path.abspath(__file__)),
                                                             sysconfig.get_paths()["stdlib"]))
_PACKAGE_DIRS = ("site-packages", "dist-packages")


def _is_library(path):
    parts = path.split(os.sep)
    if "functorch" in parts or path.startswith(_LIBRARY_DIRS[:2]):
        return True
    # The standard library, but not the packages installed inside its folder.
    return path.startswith(_LIBRARY_DIRS[2]) and not any(p in parts for p in _PACKAGE_DIRS)


def _user_frame(tb):
    """file:line in function (the source line) of the innermost frame of the model's own code in a
    traceback (not PyTorch's, kiln's, the standard library's or generated code), or None."""
    found = None
    for frame in traceback.extract_tb(tb):
        interactive = frame.filename in ("<stdin>", "<string>") or frame.filename.startswith("<ipython-input")
        path = os.path.abspath(frame.filename) if not frame.filename.startswith("<") else None
        if not interactive and (path is None or _is_library(path)):
            continue
        found = frame
    if found is None:
        return None
    line = (found.line or "").strip()
    return f"{found.filename}:{found.lineno} in {found.name}" + (f" (`{line}`)" if line else "")


def _capture_error(module, error):
    """The CaptureError for `error`, raised while tracing `module`."""
    text = str(error).strip() or type(error).__name__
    if len(text) > 800:
        text = text[:800] + " ..."
    where = _user_frame(error.__traceback__)
    message = f"kiln.compile: tracing {type(module).__name__} failed" + (f" at {where}" if where else "") + \
        f": {type(error).__name__}: {text}"
    if _DATA_DEPENDENT.search(str(error)):
        message += ("\nThe code reads a tensor's value in Python (an `if` on it, `.item()`, `.tolist()`), which a "
                    "trace cannot record. Compile the parts around that code (a backbone, an encoder) with kiln.compile, or, "
                    "on PyTorch >= 2.1, export the model with torch.export (torch.cond records such branches) "
                    "and compile the .pt2 with kiln.load_pt2 or `kiln compile`.")
    return CaptureError(message)


def _has_export():
    return hasattr(torch, "export") and hasattr(torch.export, "export")


def _forward_names(module, count):
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params]
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"arg{i}" for i in range(count)]


class _Symbols:
    """Names and ranges of the symbolic sizes a trace produced.

    Symbols at the dims the user declared dynamic stay symbols (renamed s0, s1, ...); every other
    symbol (make_fx on 1.13 makes every size symbolic) is replaced by its traced value."""

    def __init__(self, keep, values):
        self.keep = keep        # sympy symbol -> (min, max)
        self.values = values    # sympy symbol -> traced int, for the others
        self.names = {}
        self.ranges = {}

    def rename(self, sym):
        if sym not in self.keep:
            raise KeyError(sym)
        if sym not in self.names:
            name = str(sym) if str(sym).isidentifier() else f"s{len(self.names)}"
            self.names[sym] = name
            self.ranges[name] = self.keep[sym]
        return self.names[sym]

    def size(self, s):
        """int | SymInt -> the bindings' form (int, symbol name or expression tuple)."""
        if isinstance(s, int):
            return s
        expr = _sym_expr(s)
        if expr is None:
            return int(s)
        if self.values:
            expr = expr.xreplace({k: v for k, v in self.values.items() if k in expr.free_symbols})
        return sympy_to_kiln(expr, self.rename)


def _sym_expr(s):
    node = getattr(s, "node", None)          # PyTorch 2.x SymInt
    if node is not None and hasattr(node, "expr"):
        return node.expr
    get = getattr(s, "get_pyobj", None)      # PyTorch 1.13 SymIntNode
    if get is not None:
        return get().expr
    return None


def _one_hot(x, num_classes=-1):
    """F.one_hot(x, num_classes) as `x.unsqueeze(-1) == arange(num_classes)`. PyTorch 1.13's one_hot
    reads its input's values to check them (MoE routers call it). The result is the same for every
    valid input; a class out of range gives a zero row where PyTorch raises, as torch.export's trace
    on 2.x does too. Without num_classes the size depends on the values: None, left to PyTorch."""
    if not isinstance(num_classes, int) or num_classes < 0:
        return None
    return (x.unsqueeze(-1) == torch.arange(num_classes, device=x.device)).to(torch.int64)


def _quantile(input, q, dim=None, keepdim=False, *, interpolation="linear", out=None):
    """torch.quantile at one float q as PyTorch computes it, from the sorted values at the two
    places around q * (n - 1); NaN where a slice holds NaN. 1.13's quantile checks q's range on
    a tensor, which stops make_fx. A tensor of q's: None, left to PyTorch."""
    if out is not None or not isinstance(q, float) or not 0 <= q <= 1 or interpolation not in (
            "linear", "lower", "higher", "midpoint", "nearest"):
        return None
    x = input.reshape(-1) if dim is None else input
    d = 0 if dim is None else dim
    n = x.shape[d]
    if not isinstance(n, int) or n == 0:
        return None
    rank = q * (n - 1)
    below, above = math.floor(rank), math.ceil(rank)
    ordered = x.sort(d).values
    if interpolation == "nearest":
        below = above = round(rank)  # half to even, as torch.round
    low = ordered.narrow(d, below, 1)
    high = ordered.narrow(d, above, 1)
    if interpolation in ("lower", "nearest"):
        y = low
    elif interpolation == "higher":
        y = high
    else:
        y = torch.lerp(low, high, 0.5 if interpolation == "midpoint" and above > below else rank - below)
    y = torch.where(x.isnan().any(d, keepdim=True), torch.full_like(y, float("nan")), y)
    if dim is None:
        return y.reshape([1] * input.dim()) if keepdim else y.reshape(())
    return y if keepdim else y.squeeze(d)


class _TraceableCalls(torch.overrides.TorchFunctionMode):
    """Calls PyTorch 1.13 cannot trace with make_fx, written in traceable ops while capture runs
    (one_hot, quantile); each returns None where it does not apply, and the call then runs as it is."""

    def __init__(self):
        super().__init__()
        self.rewrites = {torch.nn.functional.one_hot: _one_hot, torch.quantile: _quantile,
                         torch.Tensor.quantile: _quantile}
        one_hot = getattr(torch._C._nn, "one_hot", None)
        if one_hot is not None:
            self.rewrites[one_hot] = _one_hot

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rewrite = self.rewrites.get(func)
        if rewrite is not None:
            result = rewrite(*args, **kwargs)
            if result is not None:
                return result
        return func(*args, **kwargs)


def _trace_make_fx(module, flat, tensor_leaf, in_spec, specs, device):
    """PyTorch 1.13: make_fx over a function that takes the weights as inputs (so they become
    placeholders we can name), in symbolic mode only when some dim is dynamic."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.nn.utils import stateless

    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    names = list(state)
    constants = [None if t else v for v, t in zip(flat, tensor_leaf)]
    out_spec = []

    def fn(weights, inputs):
        it = iter(inputs)
        leaves = [next(it) if t else c for c, t in zip(constants, tensor_leaf)]
        args, kwargs = pytree.tree_unflatten(leaves, in_spec)
        out = stateless.functional_call(module, dict(zip(names, weights)), tuple(args), kwargs)
        flat_out, spec = pytree.tree_flatten(out)
        out_spec.append(spec)
        return flat_out

    dynamic = any(s is not None and s.dynamic_dims() for s in specs)
    examples = [v for v, t in zip(flat, tensor_leaf) if t]
    traced_fn = fn
    if not dynamic:  # a functional graph (relu, not relu_), as torch.export gives on 2.x
        try:         # (1.13's functionalize does not compose with symbolic tracing: see below)
            from functorch import functionalize
            traced_fn = functionalize(fn)
        except ImportError:
            pass
    # make_fx (1.13) hangs each traced tensor's proxy, which holds the whole tracer and graph, off
    # the tensor itself, in a weak map keyed by the tracer that the proxy keeps alive: tracing the
    # user's parameters and inputs would keep every trace for as long as they live (~40 KiB per
    # compile of a small MLP). Detached aliases share the data and die with the trace.
    def trace(rewrites):
        out_spec.clear()
        with torch.no_grad(), (_TraceableCalls() if rewrites else contextlib.nullcontext()):
            return make_fx(traced_fn, tracing_mode="symbolic" if dynamic else "real")(
                [w.detach() for w in state.values()], [e.detach() for e in examples])

    # The rewrites of one_hot / quantile run as a TorchFunctionMode, and any such mode turns off
    # PyTorch's fast paths (nn.MultiheadAttention's and TransformerEncoderLayer's fused attention,
    # which kiln converts whole; without it a ViT-S ran 1.7x slower): so only when tracing without
    # them failed (those calls read values while tracing, which fails loudly, never silently).
    try:
        gm = trace(rewrites=False)
    except Exception:
        gm = trace(rewrites=True)
    _functional_inplace(gm.graph)
    gm.graph.eliminate_dead_code()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    weight_of = {placeholders[i].name: names[i] for i in range(len(names))}
    user = placeholders[len(names):]

    keep, values = {}, {}
    if dynamic:
        for ph in placeholders:
            val = ph.meta.get("val")
            sizes = [s for s in (val.shape if isinstance(val, torch.Tensor) else ()) if _sym_expr(s) is not None]
            if sizes:
                values = dict(_shape_env(sizes[0]).var_to_val)
                break
        for ph, spec in zip(user, specs):
            if spec is None:
                continue
            for d in spec.dynamic_dims():
                e = _sym_expr(ph.meta["val"].shape[d])
                if e is not None and getattr(e, "is_Symbol", False):
                    keep[e] = (spec.min_shape[d], spec.max_shape[d])
                    values.pop(e, None)
    return gm, user, weight_of, out_spec[0], _Symbols(keep, values), state


_VIEW_OPS = {"view", "_reshape_alias", "reshape", "slice", "select", "transpose", "t", "permute", "expand",
             "unsqueeze", "squeeze", "as_strided", "alias", "detach", "narrow", "unfold", "diagonal", "split",
             "chunk", "unbind"}


def _functional_inplace(graph):
    """`y = relu_(x)` -> `y = relu(x)`, later readers of x reading y: exact when x is an
    intermediate that views nothing else (no other tensor sees the mutation)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        schema = target._schema
        op = schema.name.split("::")[-1]
        if not op.endswith("_") or op.endswith("__") or not schema.arguments:
            continue
        alias = schema.arguments[0].alias_info
        if alias is None or not alias.is_write or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        base = node.args[0]
        base_op = getattr(base.target, "_schema", None)
        if base.op != "call_function" or (base_op is not None and base_op.name.split("::")[-1] in _VIEW_OPS):
            continue
        functional = getattr(getattr(torch.ops.aten, op[:-1], None), target._overloadname, None)
        if functional is None:
            continue
        node.target = functional
        for user in list(base.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(base, node)


def _shape_env(s):
    return s.get_pyobj().shape_env if hasattr(s, "get_pyobj") else s.node.shape_env


# Kept whole in every case: fused attention and linear (decomposed on a CUDA machine, attention
# becomes a backend kernel or fp32 steps, linear over a transposed activation a bmm over copies).
_ALWAYS_WHOLE = ("aten.scaled_dot_product_attention.default", "aten.linear.default")


def _decomposition_table(decompose=frozenset()):
    """Core ATen's table less the ops kiln's registry converts whole, and the names of the ops so
    kept. A decomposed op reaches kiln as several smaller ones: silu as a sigmoid and a multiply,
    which no longer fuse into a convolution's epilogue; hardswish, gelu or group_norm as a dozen
    pointwise steps; scaled_dot_product_attention, on a CUDA machine, as a backend kernel or attention
    written out in fp32; linear over a transposed activation as a bmm over copies of its weight. A
    converter registered from Python for such an op is what the user wants called. The ops in
    `decompose` (kept whole before, then refused by their converter) are decomposed after all;
    decompose=None keeps only _ALWAYS_WHOLE. (None, empty) where PyTorch has no editable table
    (< 2.6): everything is decomposed."""
    if not hasattr(torch.export, "default_decompositions"):
        return None, frozenset()
    table = torch.export.default_decompositions()
    kept = set()
    for op in list(table.keys()):  # keys(): the table holds its entries apart from the dict's own
        schema = getattr(op, "_schema", None)
        if schema is None or schema.is_mutable:  # in-place and out= forms: functionalized as before
            continue
        name = target_name(op)
        whole = name in _ALWAYS_WHOLE if decompose is None else name not in decompose and _kiln.converters(name)
        if whole:
            del table[op]
            kept.add(name)
    return table, frozenset(kept)


def _refused_whole(program, kept, converts):
    """The ops kept whole (not decomposed) that `converts` says would not convert in this program:
    decomposed, their parts may."""
    return {node.target for node in program.nodes()
            if node.kind == "call_function" and node.target in kept and not converts(node)}


def _export(module, args, kwargs, flat, tensor_leaf, specs):
    """PyTorch >= 2.1: torch.export, with torch.export.Dim for the dims kiln.Input marks dynamic."""
    dims_of = []
    k = 0
    for leaf, is_t in zip(flat, tensor_leaf):
        spec = specs[k] if is_t else None
        k += is_t
        if spec is None or not spec.dynamic_dims():
            dims_of.append(None)
            continue
        dims_of.append({d: torch.export.Dim(f"kiln_{k - 1}_{d}", min=max(spec.min_shape[d], 2) if spec.max_shape[d] > 2
                                            else spec.min_shape[d], max=spec.max_shape[d])
                        for d in spec.dynamic_dims()})
    dynamic_shapes = None
    if any(d is not None for d in dims_of):
        dynamic_shapes = pytree.tree_unflatten(dims_of, pytree.tree_flatten((tuple(args), kwargs))[1])
        if not kwargs:
            dynamic_shapes = dynamic_shapes[0]
    return torch.export.export(module, tuple(args), kwargs or None, dynamic_shapes=dynamic_shapes)


def _decomposed(exported, specs, decompose=frozenset()):
    """An exported program decomposed to core ATen, less the ops kiln converts whole (and with those
    of `decompose` decomposed), as make_fx's trace is returned: the graph, its user inputs, weights,
    output spec, symbols, state and user outputs; and the names of the ops kept whole."""
    table, kept = _decomposition_table(decompose)
    if table is None:
        ep = exported.run_decompositions()
    else:
        try:
            ep = exported.run_decompositions(table)
        except Exception:  # noqa: BLE001 - an op kept whole that PyTorch cannot keep: as before
            if decompose is None:
                raise
            table, kept = _decomposition_table(None)
            ep = exported.run_decompositions(table)
    gm = ep.graph_module
    sig = ep.graph_signature
    by_name = {n.name: n for n in gm.graph.nodes if n.op == "placeholder"}
    weight_of, user, state = {}, [], {}
    for spec in sig.input_specs:
        kind = spec.kind.name
        if kind == "USER_INPUT":
            # Non-tensor arguments (a float, None, a string) are specialized by torch.export: their
            # placeholders read nothing; CompiledModule checks their values on every call.
            if type(spec.arg).__name__ == "TensorArgument":
                user.append(by_name[spec.arg.name])
        elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            weight_of[spec.arg.name] = spec.target
            tensor = ep.state_dict.get(spec.target)
            if tensor is None:
                tensor = ep.constants[spec.target]
            state[spec.target] = tensor
        else:
            raise NotImplementedError(f"kiln: exported input of kind {kind} ({spec.arg.name})")
    keep = {}
    user_dims = []
    for ph, spec in zip(user, specs):
        if spec is None:
            continue
        for d in spec.dynamic_dims():
            e = _sym_expr(ph.meta["val"].shape[d])
            if e is not None and getattr(e, "is_Symbol", False):
                keep[e] = (spec.min_shape[d], spec.max_shape[d])
                user_dims.append(e)
    _add_derived_ranges(keep, ep.range_constraints)
    try:
        out_spec = ep.call_spec.out_spec
    except AttributeError:
        out_spec = ep.module_call_graph[0].signature.out_spec
    user_outputs = [i for i, s in enumerate(sig.output_specs) if s.kind.name == "USER_OUTPUT"]
    return (gm, user, weight_of, out_spec, _Symbols(keep, {}), state, user_outputs), kept


# ---- symbol ranges -------------------------------------------------------------------------------

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_INFINITIES = {"oo": 1, "int_oo": 1, "inf": 1, "+inf": 1, "Infinity": 1,
               "-oo": -1, "-int_oo": -1, "-inf": -1, "-Infinity": -1}


def _range_bound(v, upper):
    """One end of a symbol's value range as the IR takes it: an int; an unbounded lower end is the
    int64 minimum and an unbounded upper end None (as the .pt2 reader does).

    Ranges from torch.export hold sympy's oo / -oo, torch's own int_oo / -int_oo (not sympy numbers:
    int() of one fails, e.g. "'Infinity' object has no attribute '_mpf_'" for efficientnet_b0 on
    PyTorch 2.11), sympy Integers, and non-integers (rounded inward, as export's serializer does)."""
    unbounded = None if upper else _INT64_MIN
    if v is None:
        return unbounded
    sign = _INFINITIES.get(str(v).replace(" ", ""))
    if sign is not None:
        if (sign > 0) == bool(upper):
            return unbounded
        return _INT64_MIN if upper else _INT64_MAX  # an empty range's far end: kept, the IR reports it
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int) or getattr(v, "is_Integer", False):
        n = int(v)
    else:
        try:
            f = float(v)
        except (TypeError, ValueError, AttributeError):
            return unbounded  # a symbolic bound (an expression): no constant to keep
        if math.isnan(f):
            return unbounded
        if math.isinf(f):
            return unbounded if (f > 0) == bool(upper) else (_INT64_MIN if upper else _INT64_MAX)
        try:
            n = math.floor(v) if upper else math.ceil(v)
        except (TypeError, ValueError, AttributeError):
            n = math.floor(f) if upper else math.ceil(f)
        n = int(n)
    if n > _INT64_MAX:
        return None if upper else _INT64_MAX
    if n < _INT64_MIN:
        return _INT64_MIN
    return n


def _add_derived_ranges(keep, range_constraints):
    """Ranges of the symbols export derived itself (not declared by the user) into `keep`."""
    for sym, vr in range_constraints.items():
        if sym not in keep and getattr(sym, "is_Symbol", False):
            keep[sym] = (_range_bound(getattr(vr, "lower", None), upper=False),
                         _range_bound(getattr(vr, "upper", None), upper=True))


# ---- FX -> IR ------------------------------------------------------------------------------------

def _tensor_meta(t, sym, device=None):
    try:
        strides = [sym.size(s) for s in t.stride()]
    except Exception:  # noqa: BLE001 - strides are optional in the IR
        strides = []
    return (scalar_type(t.dtype), [sym.size(s) for s in t.shape], strides, device or str(t.device))


def _meta_of(node, sym):
    val = node.meta.get("val")
    if val is None and "tensor_meta" in node.meta:
        tm = node.meta["tensor_meta"]
        if hasattr(tm, "shape"):
            return ("tensor", (scalar_type(tm.dtype), [int(s) for s in tm.shape],
                               [int(s) for s in getattr(tm, "stride", ())], "cpu"))
    if isinstance(val, torch.Tensor):
        return ("tensor", _tensor_meta(val, sym))
    if isinstance(val, (list, tuple)):
        return ("tuple", [_tensor_meta(v, sym) if isinstance(v, torch.Tensor) else None for v in val])
    if isinstance(val, bool) or type(val).__name__ in ("SymBool", "SymBoolNode"):
        # (2.x: a runtime assertion's test on a data-dependent size, u0 >= 0, is a SymBool)
        return ("symbool", None)
    if isinstance(val, int) or type(val).__name__ in ("SymInt", "SymIntNode", "PySymInt"):
        if type(val).__name__ == "PySymInt":  # 1.13's raw symbolic int
            return ("sym", sympy_to_kiln(_subst(val.expr, sym), sym.rename))
        return ("sym", sym.size(val))
    if isinstance(val, float) or type(val).__name__ in ("SymFloat", "SymFloatNode"):
        return ("symfloat", None)
    if val is None:
        # Ops whose tuple result has no recorded meta (1.13's native_batch_norm): from the getitems.
        items = {u.args[1]: u for u in node.users if u.target is operator.getitem}
        if items:
            n = max(items) + 1
            return ("tuple", [(_meta_of(items[i], sym) or (None, None))[1] if i in items else None
                              for i in range(n)])
    return None


def _subst(expr, sym):
    return expr.xreplace({k: v for k, v in sym.values.items() if k in expr.free_symbols}) if sym.values else expr


def _arg(a, names):
    if isinstance(a, torch.fx.Node):
        return _kiln.NodeRef(names[a.name])
    if isinstance(a, (list, tuple)):
        return [_arg(x, names) for x in a]
    if isinstance(a, (bool, int, float, str)) or a is None:
        return a
    mapped = to_kiln(a)
    if mapped is a:
        raise TypeError(f"kiln cannot take the graph argument {a!r} ({type(a).__name__})")
    return mapped


def capture(module, arg_inputs, kwarg_inputs, device, converts=None, torch_ops=frozenset()):
    """Traces `module` on its example inputs (tensors or kiln.Input) and builds the IR program.
    `converts(ir_node)`: whether the registry converts an op node as it stands (the compile's
    settings decide); an op kept whole for kiln that it would not convert is decomposed instead.
    `torch_ops`: the ops the user gave to PyTorch; where one is a piece of an op kept whole
    (sigmoid of silu), the ops kept whole are decomposed so that it exists."""
    sources_before = set(fx_sources())
    try:
        return _capture(module, arg_inputs, kwarg_inputs, device, converts, frozenset(torch_ops))
    finally:
        if not _has_export():
            _release_shape_env_caches()
        # FX keeps the generated source of every GraphModule for tracebacks (in its loader and in
        # linecache), never released: ~10 KiB per GraphModule, and torch.export makes about 18 per
        # compile. Those of the tracer's modules go now; a trace kept for kiln.refit still runs (it
        # holds its code), only its traceback lines would be missing.
        forget_fx_sources(set(fx_sources()) - sources_before)


def _release_shape_env_caches():
    """PyTorch 1.13's ShapeEnv memoizes some methods with class-level lru_caches whose keys hold
    `self`, so every symbolic trace's ShapeEnv, and through it its whole graph, would live for the
    rest of the process (~230 KiB per dynamic-shape compile of a small MLP). Clearing them only
    drops memoized answers."""
    from torch.fx.experimental.symbolic_shapes import ShapeEnv
    for attr in vars(ShapeEnv).values():
        # plain lru_cache wrappers have cache_clear; 1.13's _lru_cache wrapper only exposes the
        # inner cache's bound cache_info
        cache = getattr(getattr(attr, "cache_info", None), "__self__", attr)
        clear = getattr(cache, "cache_clear", None)
        if callable(clear):
            clear()


def _capture(module, arg_inputs, kwarg_inputs, device, converts, torch_ops):
    kwarg_inputs = dict(kwarg_inputs or {})
    flat_specs, in_spec = pytree.tree_flatten((tuple(arg_inputs), kwarg_inputs))
    tensor_leaf = [isinstance(v, (torch.Tensor, Input)) for v in flat_specs]
    specs = [v if isinstance(v, Input) else None for v, t in zip(flat_specs, tensor_leaf) if t]
    taken = {s for v in flat_specs if isinstance(v, torch.Tensor) for s in v.shape}
    taken |= {s for p in module.parameters() for s in p.shape}
    for v in flat_specs:
        if isinstance(v, Input):
            taken |= {lo for lo, hi in zip(v.min_shape, v.max_shape) if lo == hi}
    flat = [v.example(device, taken) if isinstance(v, Input) else v for v in flat_specs]
    args, kwargs = pytree.tree_unflatten(flat, in_spec)

    user_outputs = exported = None
    kept = frozenset()
    try:
        if _has_export():
            exported = _export(module, args, kwargs, flat, tensor_leaf, specs)
            traced, kept = _decomposed(exported, specs)
            gm, user, weight_of, out_spec, sym, state, user_outputs = traced
        else:
            gm, user, weight_of, out_spec, sym, state = _trace_make_fx(
                module, flat, tensor_leaf, in_spec, specs, device)
    except _kiln.KilnError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the tracer raised, with where and why
        raise _capture_error(module, e) from e

    # Placeholders take the forward's parameter names (and kwarg keys) when inputs are flat.
    leaves = [v for v in list(args) + list(kwargs.values())]
    if len(leaves) == len(user) and all(isinstance(v, torch.Tensor) for v in leaves):
        forward_names = _forward_names(module, len(args)) + list(kwargs)
    else:
        forward_names = [None] * len(user)
    program, input_names, weights = _build_ir(gm, user, weight_of, state, sym, forward_names, user_outputs)
    decompose = set()
    if kept:
        if converts is not None:
            decompose |= _refused_whole(program, kept, converts)
        if torch_ops - {n.target for n in program.nodes()}:
            decompose |= kept - torch_ops
    if decompose:
        try:
            traced, _ = _decomposed(exported, specs, frozenset(decompose))
        except Exception as e:  # noqa: BLE001 - as the first decomposition's errors
            raise _capture_error(module, e) from e
        gm, user, weight_of, out_spec, sym, state, user_outputs = traced
        program, input_names, weights = _build_ir(gm, user, weight_of, state, sym, forward_names, user_outputs)
    counts = None
    if exported is None and converts is not None:
        counts = _data_dependent_fallbacks(gm, program, converts, sym)
        if counts:
            program, input_names, weights = _build_ir(gm, user, weight_of, state, sym, forward_names, user_outputs,
                                                      counts)
    # Parameters and persistent buffers (what a state dict holds) can be refitted; the traced values of
    # the rest (non-persistent buffers, constants the export lifted) stay, kept here.
    in_state_dict = set(module.state_dict()) if isinstance(module, torch.nn.Module) else set()
    refittable = {name: (tuple(t.shape), t.dtype) for name, t in state.items()
                  if name in weights and name in in_state_dict}
    fixed = {name: t for name, t in state.items() if name not in refittable}

    def rebuild(new_state):
        return _build_ir(gm, user, weight_of, {**fixed, **new_state}, sym, forward_names, user_outputs, counts)[0]

    dynamic = []
    for name, spec in zip(input_names, specs):
        if spec is not None:
            dynamic += [(name, d, spec.min_shape[d], spec.opt_shape[d], spec.max_shape[d])
                        for d in spec.dynamic_dims()]
    leaf_values = [v.dtype if t else v for v, t in zip(flat, tensor_leaf)]
    return Captured(program, input_names, in_spec, tensor_leaf, out_spec, weights, dynamic, leaf_values, rebuild,
                    refittable)


# Ops whose output's first dim is a count that depends on the values, and the most it can be, from
# the traced input metas: make_fx (PyTorch 1.13) records the traced count as a number.
def _numel_of(arg):
    meta = arg.meta.get("tensor_meta") if isinstance(arg, torch.fx.Node) else None
    return math.prod(int(d) for d in meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _rows_of(arg):
    meta = arg.meta.get("tensor_meta") if isinstance(arg, torch.fx.Node) else None
    return int(meta.shape[0]) if meta is not None and len(getattr(meta, "shape", ())) else None


_UNBOUNDED_COUNT = 1 << 20  # program/compile.cpp's kUnboundedMax
_DATA_DEPENDENT_COUNTS = {
    "torchvision.nms.default": lambda node: _rows_of(node.args[0]),
    "aten.nonzero.default": lambda node: _numel_of(node.args[0]),
    "aten.masked_select.default": lambda node: max(filter(None, (_numel_of(a) for a in node.args[:2])), default=None),
}


def _data_dependent_fallbacks(gm, program, converts, sym):
    """PyTorch 1.13's trace: the data-dependent ops that will run in PyTorch (no converter takes them:
    torchvision's nms), whose outputs' counts the trace froze at their traced values. A segment
    after one would be built for that count and refuse the next input's; each count becomes a
    symbol of range [0, at least the most it can be] instead, as torch.export's unbacked sizes are.
    {fx node name: symbol}; the ranges go into `sym`."""
    counts = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        bound = _DATA_DEPENDENT_COUNTS.get(target_name(node.target))
        ir_node = program.find(node.name) if bound else None
        if ir_node is None or converts(ir_node):
            continue
        most = bound(node)
        if most is None:
            continue
        name = f"count_{len(counts)}_{node.name}"
        counts[node.name] = name
        # The input's traced size may itself be a count (nms over boxes[keep]): the bound is at
        # least what the compiler gives any unbounded size.
        sym.ranges[name] = (0, max(most, _UNBOUNDED_COUNT))
    return counts


def _build_ir(gm, user, weight_of, state, sym, forward_names, user_outputs, counts=None):
    """The IR program of a traced graph whose parameter placeholders read `state` (state-dict name ->
    tensor). Returns it with the IR names of the user inputs and the weights it views. `counts`:
    {fx node name: symbol} for outputs whose first dim is a data-dependent count."""
    b = _kiln.ProgramBuilder()
    names = {}
    user_index = {ph.name: i for i, ph in enumerate(user)}
    input_names = [None] * len(user)
    weights = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if node.name not in weight_of and node.name not in user_index:
                if node.users:
                    raise _kiln.InputError(f"kiln: the traced graph reads the non-tensor argument {node.name}; "
                                           "pass it as a tensor, or leave it out of the call")
                continue
            if node.name in weight_of:
                names[node.name] = _add_weight(b, node.name, weight_of[node.name], state[weight_of[node.name]],
                                               "parameter", weights)
            else:
                i = user_index[node.name]
                wanted = forward_names[i] or node.name
                names[node.name] = b.placeholder(wanted, _meta_of(node, sym))
                input_names[i] = names[node.name]
        elif node.op == "get_attr":
            tensor = _get_attr(gm, node.target)
            names[node.name] = _add_weight(b, node.name, node.target, tensor, "constant", weights)
        elif node.op == "call_function":
            meta = _meta_of(node, sym)
            if counts and node.name in counts and meta and meta[0] == "tensor" and meta[1][1]:
                dtype, sizes, strides, dev = meta[1]
                meta = ("tensor", (dtype, [counts[node.name]] + list(sizes[1:]), strides, dev))
            target, args = node.target, tuple(node.args)
            if target is getattr(torch.ops.aten, "_reshape_alias").default:
                # 1.13's make_fx records reshape of a contiguous tensor as _reshape_alias(x, size, stride).
                target, args = torch.ops.aten.view.default, args[:2]
            md = {}
            if node.meta.get("stack_trace"):
                md["stack_trace"] = str(node.meta["stack_trace"])
            names[node.name] = b.call(node.name, target_name(target), _arg(args, names),
                                      {k: _arg(v, names) for k, v in node.kwargs.items()}, meta, md)
        elif node.op == "output":
            outs = node.args[0]
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            if user_outputs is not None:
                outs = [outs[i] for i in user_outputs]
            b.output([_arg(o, names) for o in outs])
        else:
            raise NotImplementedError(f"kiln: FX node {node.op} {node.target} in the traced graph")
    program = b.finish(torch.__version__)
    for name, (lo, hi) in sym.ranges.items():
        program.set_range(name, lo, hi)
    return program, input_names, weights


def _get_attr(gm, target):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _add_weight(builder, node_name, state_name, tensor, kind, weights):
    """A weight viewing the torch tensor's memory (a CPU copy when it lives elsewhere, made once)."""
    t = tensor.detach()
    weights[state_name] = t
    host = t if t.device.type == "cpu" else t.cpu()
    if not host.is_contiguous():
        host = host.contiguous()
    meta = (scalar_type(host.dtype), list(host.shape), list(host.stride()), "cpu")
    return builder.weight(node_name, state_name, kind, meta, host.data_ptr(),
                          host.numel() * host.element_size(), host)
