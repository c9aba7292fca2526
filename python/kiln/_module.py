"""The module kiln.compile returns: a torch.fx graph whose `_run_on_acc_N` submodules run engine
plans and whose other nodes are the fallback ops, called in PyTorch itself.

Built from a CompiledProgram's steps (the order the program layer decided), so a program loaded
from a .kiln file gives the same module as the one just compiled.
"""
import linecache
import math
import operator
import weakref

import torch
import torch.utils._pytree as pytree

from . import _kiln
from ._values import FROM_ENGINE, TO_ENGINE, _dim, resolve_target, sym_expr, to_torch

InputError = _kiln.InputError


_side_streams = {}


def _side_stream(device):
    """One kiln stream per device, kept for the process: a stable stream keeps each segment's
    execution context (and its recorded CUDA graphs) alive across calls."""
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in _side_streams:
        _side_streams[key] = torch.cuda.Stream(device=torch.device("cuda", key))
    return _side_streams[key]


class AcceleratedSegment(torch.nn.Module):
    """One engine plan. Inputs cross as data pointers (no copies) on torch's current CUDA stream;
    outputs are written into fresh torch tensors."""

    def __init__(self, program, index, info, on_cpu=False):
        super().__init__()
        self._runner = _kiln.SegmentRunner(program, index, on_cpu)
        self._info = info
        self._cuda = info["device"] == _kiln.DeviceKind.CUDA and not on_cpu

    def extra_repr(self):
        ops = ", ".join(dict.fromkeys(self._info["ops"]))
        return f"{self._info['name']}: {self._info['compute_ops']} compute ops ({ops})"

    def forward(self, *inputs):
        views = []
        for t in inputs:
            try:
                dtype = TO_ENGINE[t.dtype]
            except (KeyError, AttributeError):
                raise TypeError(f"{self._info['name']}: input of type {type(t).__name__} "
                                f"{getattr(t, 'dtype', '')} is not an engine tensor") from None
            # Strides only for non-contiguous views (the engine copies those once at binding).
            strides = () if t.is_contiguous() else tuple(t.stride())
            views.append((t.data_ptr(), dtype, tuple(t.shape), strides, t.is_cuda))
        side = None
        if self._cuda:
            device = inputs[0].device if inputs else torch.device("cuda", torch.cuda.current_device())
            current = torch.cuda.current_stream(device)
            if current.cuda_stream == 0:
                # The legacy default stream can be neither shared by kiln's own stream (no implicit
                # ordering with non-blocking streams) nor captured into a CUDA graph: run on a side
                # stream that starts after the caller's queued work and that the caller waits for.
                side = _side_stream(device)
                side.wait_stream(current)
                stream = side.cuda_stream
            else:
                stream = current.cuda_stream
        else:
            device, stream = torch.device("cpu"), 0

        def alloc(i, dims, dtype):
            out = torch.empty(tuple(dims), dtype=FROM_ENGINE[dtype], device=device)
            return out, out.data_ptr()

        outs = self._runner.run(views, stream, alloc)
        if side is not None:
            current.wait_stream(side)
        return outs[0] if len(outs) == 1 else tuple(outs)


class CompiledModule(torch.nn.Module):
    """What kiln.compile returns. Callable like the original module; `.graph` is the fx graph
    (`_run_on_acc_N` calls and fallback ops), `.program` the C++ CompiledProgram."""

    def __init__(self, gm, program, in_spec=None, tensor_leaf=None, out_spec=None, leaf_values=None):
        super().__init__()
        self.module = gm
        self.program = program
        self._in_spec = in_spec
        self._tensor_leaf = tensor_leaf
        self._out_spec = out_spec
        self._leaf_values = leaf_values
        # The common call (positional tensors in, a tensor or a tuple of tensors out, one segment and
        # nothing else) without pytree walks or the fx module's call: a few microseconds a call, which
        # count at batch 1 (_fast_call).
        self._positional = _positional_arity(in_spec, tensor_leaf)
        self._out_kind = _output_kind(out_spec)
        self.__dict__["_direct"] = _direct_segment(gm)  # a reference, not a second registered submodule

    @property
    def graph(self):
        return self.module.graph

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)  # _run_on_acc_N, weights

    def __reduce__(self):
        # torch.save, pickle and copy.deepcopy: the program's .kiln bytes (plans, fallback ops,
        # weights) and the input/output structure; loading rebuilds the module as kiln.load does.
        # The live engine state (SegmentRunner) is never pickled.
        device = next((t.device for t in self.module.buffers()), None)
        return (_restore, (self.program.serialize(), str(device) if device is not None else None,
                           _portable_spec(self._in_spec), self._tensor_leaf, _portable_spec(self._out_spec),
                           self._leaf_values))

    def __deepcopy__(self, memo):
        # Defined here: otherwise __getattr__ would hand copy.deepcopy the fx module's own.
        fn, args = self.__reduce__()
        twin = fn(*args)
        refit_source = self.__dict__.get("_refit_source")  # the trace kiln.refit rebuilds from: shared
        if refit_source is not None:
            twin._refit_source = refit_source
        return twin

    def _fast_call(self, args):
        """The outputs for a call of plain positional tensors of the traced dtypes, or None where the
        general path must take it (it also raises the errors)."""
        dtypes = self._leaf_values
        for i, v in enumerate(args):
            if not isinstance(v, torch.Tensor) or (dtypes is not None and v.dtype != dtypes[i]):
                return None
        seg = self._direct
        if seg is not None and not (seg._forward_hooks or seg._forward_pre_hooks or self.module._forward_hooks
                                    or self.module._forward_pre_hooks):
            outs = seg.forward(*args)
            return (outs,) if isinstance(outs, torch.Tensor) else outs
        return self.module(*args)

    def forward(self, *args, **kwargs):
        if not kwargs and self._positional == len(args) and self._out_kind is not None:
            outs = self._fast_call(args)
            if outs is not None:
                return outs[0] if self._out_kind == "single" else tuple(outs)
        if self._in_spec is None:
            tensors = list(args) + list(kwargs.values())
        else:
            flat, spec = pytree.tree_flatten((args, kwargs))
            if spec != self._in_spec:
                raise InputError("kiln: this module was compiled for arguments shaped like "
                                 f"{_describe_call(self._in_spec, self._tensor_leaf, self._leaf_values)}, "
                                 f"and is called with {_describe_call(spec, None, flat)}; compile it again "
                                 "for these arguments (kiln.compile traces one call's structure)")
            if self._leaf_values is not None:
                _check_leaves(flat, spec, self._tensor_leaf, self._leaf_values)
            tensors = [v for v, t in zip(flat, self._tensor_leaf) if t]
        outs = self.module(*tensors)
        if self._out_spec is None:
            return outs[0] if len(outs) == 1 else outs
        return pytree.tree_unflatten(list(outs), self._out_spec)


def _positional_arity(in_spec, tensor_leaf):
    """N when the traced call was N positional tensors and nothing else; else None."""
    if in_spec is None or tensor_leaf is None or not all(tensor_leaf):
        return None
    n = len(tensor_leaf)
    try:
        shaped = pytree.tree_unflatten(list(range(n)), in_spec)
    except Exception:
        return None
    return n if shaped == (tuple(range(n)), {}) else None


def _output_kind(out_spec):
    """"single" when the module returned one tensor, "tuple" for a plain tuple of them, else None."""
    if out_spec is None:
        return None
    try:
        n = out_spec.num_leaves
        shaped = pytree.tree_unflatten(list(range(n)), out_spec)
    except Exception:
        return None
    if n == 1 and shaped == 0:
        return "single"
    return "tuple" if type(shaped) is tuple and shaped == tuple(range(n)) else None


def _direct_segment(gm):
    """The one AcceleratedSegment when the fx graph is just it (placeholders in order, the segment,
    its outputs in order); else None."""
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    calls = [n for n in nodes if n.op == "call_module"]
    if len(calls) != 1 or tuple(calls[0].args) != tuple(placeholders) or calls[0].kwargs:
        return None
    call = calls[0]
    getitems = [n for n in nodes if n.op == "call_function"]
    output = nodes[-1]
    if output.op != "output" or len(nodes) != len(placeholders) + 1 + len(getitems) + 1:
        return None
    if getitems:
        if any(g.target is not operator.getitem or g.args != (call, i) for i, g in enumerate(getitems)):
            return None
        results = tuple(getitems)
    else:
        results = (call,)
    if tuple(output.args[0]) != results:
        return None
    return getattr(gm, call.target)


def _leaf_names(spec):
    """A readable name per flattened leaf of a (args, kwargs) spec: args[1], kwargs['scale'],
    args[0][2]; leaf #i inside containers pytree knows and this does not."""
    names = []

    def walk(s, path):
        if s.is_leaf() if hasattr(s, "is_leaf") else isinstance(s, pytree.LeafSpec):
            names.append(path)
            return
        children = s.children() if callable(getattr(s, "children", None)) else s.children_specs  # 2.x / 1.13
        keys = s.context if isinstance(s.context, (list, tuple)) and len(s.context) == len(children) else None
        for i, c in enumerate(children):
            walk(c, f"{path}[{keys[i]!r}]" if keys is not None else f"{path}[{i}]")

    walk(spec, "")
    # The root is (args, kwargs): "[0][1]" -> "args[1]", "[1]['scale']" -> "kwargs['scale']".
    return [("args" + n[3:]) if n.startswith("[0]") else ("kwargs" + n[3:]) if n.startswith("[1]") else n
            for n in names]


def _describe_call(spec, tensor_leaf, values):
    """(x: tensor, scale=3.0)-style summary of a call's leaves for error messages."""
    parts = []
    for i, name in enumerate(_leaf_names(spec)):
        v = values[i] if values is not None and i < len(values) else None
        is_tensor = tensor_leaf[i] if tensor_leaf is not None else isinstance(v, torch.Tensor)
        parts.append(f"{name}: tensor" if is_tensor else f"{name}={v!r}")
    return "(" + ", ".join(parts) + ")"


def _same_constant(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # values without a usable ==: only the same object is the same
        return a is b


def _check_leaves(flat, spec, tensor_leaf, leaf_values):
    """What the trace baked in must hold for this call: tensors where tensors were traced, of the
    traced dtype, and every other leaf (Python scalars, None, strings) equal to its traced value."""
    for i, (v, is_tensor, traced) in enumerate(zip(flat, tensor_leaf, leaf_values)):
        if is_tensor:
            if not isinstance(v, torch.Tensor):
                raise InputError(f"kiln: {_leaf_names(spec)[i]} was a tensor when this module was compiled and is "
                                 f"a {type(v).__name__} now")
            if v.dtype != traced:
                raise InputError(f"kiln: {_leaf_names(spec)[i]} is {v.dtype} and was {traced} when this module was "
                                 "compiled; convert it, or compile again for it")
        elif not _same_constant(v, traced):
            raise InputError(f"kiln: {_leaf_names(spec)[i]} is {v!r} and was {traced!r} when this module was "
                             "compiled: kiln bakes non-tensor arguments into the program, so compile again for the "
                             "new value, or pass it as a tensor")


_SPEC_TAG = "kiln.pytree"


def _portable_spec(spec):
    """A pytree spec as the structure it describes, with leaf numbers for leaves: pickled TreeSpec
    objects tie a file to one PyTorch's pytree classes (2.11 warns on unpickling 1.x-style leaf
    specs), while plain containers flatten back to the same spec in any version."""
    if spec is None:
        return None
    return (_SPEC_TAG, pytree.tree_unflatten(list(range(spec.num_leaves)), spec))


def _spec_of(portable):
    """_portable_spec's inverse; a TreeSpec pickled by an older kiln passes through."""
    if isinstance(portable, tuple) and len(portable) == 2 and portable[0] == _SPEC_TAG:
        return pytree.tree_flatten(portable[1])[1]
    return portable


def _restore(data, device, in_spec, tensor_leaf, out_spec, leaf_values=None):
    """Unpickles a CompiledModule (see CompiledModule.__reduce__)."""
    from . import _program_device, _program_weights
    in_spec, out_spec = _spec_of(in_spec), _spec_of(out_spec)
    program = _kiln.CompiledProgram.deserialize(data)
    dev = torch.device(device) if device is not None else _program_device(program)
    return build_module(program, _program_weights(program, dev), in_spec, tensor_leaf, out_spec, leaf_values, dev)


def _attr_name(state_name):
    return "_w_" + "".join(c if c.isalnum() else "_" for c in state_name)


def build_module(program, weights, in_spec=None, tensor_leaf=None, out_spec=None, leaf_values=None, device=None):
    """CompiledProgram -> CompiledModule. `weights`: state-dict name -> tensor, for the get_attr
    nodes of fallback ops. device "cpu" runs every plan on the CPU, whatever it was built for."""
    on_cpu = device is not None and torch.device(device).type == "cpu"
    g = torch.fx.Graph()
    root = torch.nn.Module()
    env = {}
    nodes = {n.name: n for n in program.graph_nodes()}
    sym_source = {}  # symbol -> (input name, dim): where a run finds its value
    for name, meta in program.inputs:
        env[name] = g.placeholder(name)
        for d, size in enumerate(meta[1]):
            if isinstance(size, str):
                sym_source.setdefault(size, (name, d))

    def symbolic(expr, name):
        if isinstance(expr, int):
            return expr
        syms = []

        def collect(e):
            if isinstance(e, str):
                syms.append(e)
            elif isinstance(e, tuple):
                for a in e[1:]:
                    collect(a)
        collect(expr)
        dims = []
        for s in dict.fromkeys(syms):
            if s not in sym_source:
                raise RuntimeError(f"kiln: symbol {s} of %{name} is bound by no input")
            key = f"{s}_size"
            if key not in env:
                inp, d = sym_source[s]
                env[key] = g.create_node("call_function", _dim, (env[inp], d), name=key)
            dims.append(env[key])
        if isinstance(expr, str):
            return dims[0]
        return g.create_node("call_function", sym_expr, (expr, tuple(dict.fromkeys(syms)), *dims), name=name)

    def arg(a):
        if isinstance(a, _kiln.IRNode):
            return value(a.name)
        if isinstance(a, list):
            return [arg(x) for x in a]
        return to_torch(a)

    def emit(node):
        meta = node.meta
        if node.kind == "call_function" and not node.args and meta is not None and meta[0] == "sym":
            return symbolic(meta[1], node.name)  # its value follows from the input shapes
        fn = resolve_target(node.target)
        if fn is None:
            raise RuntimeError(f"kiln: PyTorch has no op {node.target} (node %{node.name})")
        return g.create_node("call_function", fn, tuple(arg(a) for a in node.args),
                             {k: arg(v) for k, v in node.kwargs.items()}, name=node.name)

    def value(name):
        if name in env:
            return env[name]
        node = nodes.get(name)
        if node is not None and node.kind == "get_attr":
            attr = _attr_name(node.target)
            if not hasattr(root, attr):
                if node.target not in weights:
                    raise RuntimeError(f"kiln: weight {node.target} of %{name} is not available")
                root.register_buffer(attr, weights[node.target])
            env[name] = g.get_attr(attr)
        elif node is not None and node.kind == "call_function":
            env[name] = emit(node)
        elif node is not None and node.meta is not None and node.meta[0] in ("tuple", "list"):
            env[name] = [env.get(f"{name}.{i}") for i in range(len(node.meta[1]))]
        elif "." in name and name.rsplit(".", 1)[0] in nodes:
            whole, i = name.rsplit(".", 1)
            env[name] = value(whole)[int(i)]
        else:
            raise RuntimeError(f"kiln: value %{name} is used before it is computed")
        return env[name]

    segments = program.segments
    for kind, x in program.steps:
        if kind == "segment":
            info = segments[x]
            root.add_module(info["name"], AcceleratedSegment(program, x, info, on_cpu))
            call = g.call_module(info["name"], tuple(value(n) for n in info["inputs"]))
            outs = info["outputs"]
            if len(outs) == 1:
                env[outs[0]] = call
            else:
                for i, o in enumerate(outs):
                    env[o] = g.create_node("call_function", operator.getitem, (call, i), name=o)
        else:
            env[x.name] = emit(x)
    out = next(n for n in program.graph_nodes() if n.kind == "output")
    results = out.args[0] if out.args and isinstance(out.args[0], list) else list(out.args)
    g.output(tuple(arg(r) for r in results))
    g.lint()
    gm = torch.fx.GraphModule(root, g, class_name="KilnGraphModule")
    weakref.finalize(gm, forget_fx_sources, {type(gm).forward.__code__.co_filename})
    return CompiledModule(gm, program, in_spec, tensor_leaf, out_spec, leaf_values)


def fx_sources():
    """FX's store of generated GraphModule source (for tracebacks), by its '<eval_with_key>' name."""
    from torch.fx import graph_module
    return getattr(getattr(graph_module, "_loader", None), "eval_cache", {})


def forget_fx_sources(keys):
    """FX never releases a GraphModule's source, in its loader and in linecache (~10 KiB each):
    kiln drops those of its own graphs once they are gone."""
    for key in keys:
        fx_sources().pop(key, None)
        linecache.cache.pop(key, None)
