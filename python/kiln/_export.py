"""kiln.save(compiled, path, output_format="exported_program"): a .pt2 in PyTorch's own format whose
graph is one call of the custom op torch.ops.kiln.execute_program. The op's arguments are the
program itself (the .kiln bytes, a uint8 buffer of the exported program), the inputs, and a JSON
signature: the program's identity (SHA-256 of its bytes), its inputs and its outputs' dtypes and
sizes, as expressions in the input sizes where shapes are dynamic.

Loaded with torch.export.load once kiln is imported (which registers the op), the program runs as
kiln.load would run it: the first call of a program builds its module from the bytes, later calls
reuse it. Under torch.export, torch.compile and other fake-tensor tracing the op's outputs come
from the signature, so a program with dynamic shapes stays dynamic.

Needs torch.library.custom_op (PyTorch >= 2.4); the .kiln format needs no PyTorch.
"""
import hashlib
import json
import operator
import threading
import warnings
from collections import OrderedDict

import torch
import torch.utils._pytree as pytree

from . import _kiln
from ._values import FROM_SCALAR_TYPE, eval_sym

InputError = _kiln.InputError

OP_NAME = "kiln::execute_program"
_FORMAT_VERSION = 1
_registered = False
_registration_error = None  # why registering the op failed, if it did
_modules = OrderedDict()  # program id -> module built from its bytes (a few, least recently used dropped)
_modules_lock = threading.Lock()
_MAX_MODULES = 8


def available():
    return hasattr(torch, "library") and hasattr(torch.library, "custom_op") and hasattr(torch, "export")


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _torch_dtype(name):
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise InputError(f"kiln.execute_program: unknown dtype {name!r} in the program's signature")
    return dtype


def _json_dim(d):
    """A size for JSON: an int, a symbol name, or an expression as nested lists."""
    if isinstance(d, (int, str)):
        return d
    return [_json_dim(x) for x in d]


def _expr(d):
    """JSON's nested lists back to the nested tuples eval_sym takes."""
    if isinstance(d, list):
        return tuple(_expr(x) for x in d)
    return d


def _value_metas(program):
    """The tensor metas of the program's inputs and outputs (graph order)."""
    inputs = list(program.inputs)
    outputs = []
    out = program.graph_nodes()[-1]
    for v in pytree.tree_flatten(list(out.args))[0]:
        meta = getattr(v, "meta", None)
        if meta is None or meta[0] != "tensor":
            raise InputError(f"kiln.save: output {getattr(v, 'name', v)!r} of this program is not a tensor; "
                             "output_format='exported_program' writes programs whose outputs are tensors")
        outputs.append(meta[1])
    return inputs, outputs


def signature_of(program, data):
    """The JSON signature of a program whose .kiln bytes are `data`."""
    inputs, outputs = _value_metas(program)
    return {
        "format": _FORMAT_VERSION,
        "id": hashlib.sha256(data).hexdigest(),
        "device": "cuda" if any(s["device"] == _kiln.DeviceKind.CUDA for s in program.segments) else "cpu",
        "inputs": [{"name": name, "dtype": _dtype_name(FROM_SCALAR_TYPE[meta[0]]),
                    "sizes": [_json_dim(d) for d in meta[1]]} for name, meta in inputs],
        "outputs": [{"dtype": _dtype_name(FROM_SCALAR_TYPE[m[0]]), "sizes": [_json_dim(d) for d in m[1]]}
                    for m in outputs],
        "ranges": {k: list(v) for k, v in program.ranges.items()},
    }


def _module_for(program, sig):
    from ._module import _restore
    key = (sig["id"], sig["device"])
    with _modules_lock:
        module = _modules.get(key)
        if module is not None:
            _modules.move_to_end(key)
            return module
    data = program.detach().cpu().contiguous().numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != sig["id"]:
        raise InputError("kiln.execute_program: the program's bytes do not match its signature (a damaged or "
                         "edited .pt2)")
    module = _restore(data, sig["device"], None, None, None)
    with _modules_lock:
        _modules[key] = module
        while len(_modules) > _MAX_MODULES:
            _modules.popitem(last=False)
    return module


def _execute(program, inputs, signature):
    sig = json.loads(signature)
    module = _module_for(program, sig)
    outs = module.module(*inputs)
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    # A custom op's outputs are fresh tensors: none may share storage with an input or another
    # output (a view of an input that a fallback op returned, say), which PyTorch checks by storage.
    seen = {_storage_of(t) for t in inputs}
    fresh = []
    for o in outs:
        if _storage_of(o) in seen:
            o = o.clone()
        seen.add(_storage_of(o))
        fresh.append(o)
    return fresh


def _storage_of(t):
    return t.untyped_storage().data_ptr() if hasattr(t, "untyped_storage") else t.storage().data_ptr()


def _fake(program, inputs, signature):
    sig = json.loads(signature)
    bindings = {}
    for spec, t in zip(sig["inputs"], inputs):
        for d, size in zip(spec["sizes"], t.shape):
            if isinstance(d, str) and d not in bindings:
                bindings[d] = size
    # The program's device (a CUDA program's outputs are on the GPU of its inputs).
    device = inputs[0].device if inputs and inputs[0].device.type == sig["device"] else torch.device(sig["device"])
    ctx = None
    outs = []
    for spec in sig["outputs"]:
        sizes = []
        for d in spec["sizes"]:
            try:
                sizes.append(eval_sym(_expr(d), bindings))
            except KeyError:  # a size no input determines (a data-dependent op's): new and unbacked
                if ctx is None:
                    ctx = torch.library.get_ctx()
                sizes.append(ctx.new_dynamic_size())
        outs.append(torch.empty(sizes, dtype=_torch_dtype(spec["dtype"]), device=device))
    return outs


def register():
    """Registers torch.ops.kiln.execute_program where this PyTorch has custom ops (>= 2.4)."""
    global _registered, _registration_error
    if _registered or _registration_error or not available():
        return
    try:
        op = torch.library.custom_op(OP_NAME, mutates_args=(),
                                     schema="(Tensor program, Tensor[] inputs, str signature) -> Tensor[]")(_execute)
        op.register_fake(_fake)
    except Exception as e:  # noqa: BLE001 - `import kiln` must work whatever this PyTorch's custom-op API does
        _registration_error = f"{type(e).__name__}: {e}"
        warnings.warn(f"kiln: torch.ops.kiln.execute_program could not be registered ({_registration_error}); "
                      "kiln.save(..., output_format='exported_program') and loading such files are unavailable",
                      stacklevel=2)
        return
    _registered = True


def _example_inputs(sig, min_two=False):
    """Concrete example inputs for torch.export and the dynamic dims, one torch.export.Dim per symbol.
    `min_two`: dynamic dims start at 2 at the least (PyTorch versions that refuse a range from 0 or 1)."""
    ranges = sig["ranges"]
    dims, values = {}, {}
    for spec in sig["inputs"]:
        for d in spec["sizes"]:
            if isinstance(d, str) and d not in dims:
                lo, opt, hi = ranges.get(d, (0, 2, None))
                if hi is not None and hi <= 2:
                    # No example above 1 in range, and torch.export specializes 0 and 1: this size
                    # is fixed at its optimum in the saved program.
                    values[d], dims[d] = opt, None
                    continue
                # Not 0 or 1, which torch.export would specialize on.
                values[d] = max(opt, 2)
                if min_two:
                    lo = max(lo, 2)
                bounds = {"min": lo} if hi is None else {"min": lo, "max": hi}
                dims[d] = torch.export.Dim(d, **bounds)
    examples, dynamic = [], []
    for spec in sig["inputs"]:
        sizes = [eval_sym(_expr(d), values) for d in spec["sizes"]]
        dtype = _torch_dtype(spec["dtype"])
        examples.append(torch.zeros(sizes, dtype=dtype, device=sig["device"]))
        per = {i: dims[d] for i, d in enumerate(spec["sizes"]) if isinstance(d, str) and dims.get(d) is not None}
        dynamic.append(per or None)
    return examples, dynamic


def export(compiled, path):
    """Writes `compiled` (a CompiledModule or CompiledProgram) as a .pt2 of torch.export."""
    if not available():
        raise InputError(f"kiln.save: output_format='exported_program' needs torch.export and torch.library."
                         f"custom_op (PyTorch >= 2.4); this is PyTorch {torch.__version__}. Save as .kiln "
                         "(the default) or pickle the compiled module with torch.save")
    register()
    if not _registered:
        raise InputError(f"kiln.save: torch.ops.kiln.execute_program could not be registered on this PyTorch "
                         f"({_registration_error}); save as .kiln or pickle the compiled module with torch.save")
    program = getattr(compiled, "program", compiled)
    data = program.serialize()
    sig = signature_of(program, data)
    if sig["device"] == "cuda" and not torch.cuda.is_available():
        raise InputError("kiln.save: this program was built for CUDA, and torch.export traces it with example "
                         "inputs on a GPU, which this machine lacks; save it where it runs")
    signature = json.dumps(sig, separators=(",", ":"))
    graph = torch.fx.Graph()
    # The module's parameters take the program's input names where they are identifiers (fx renames
    # any that would shadow a builtin); torch.export matches the dynamic sizes by position.
    placeholders = [graph.placeholder(spec["name"] if spec["name"].isidentifier() else f"input_{i}")
                    for i, spec in enumerate(sig["inputs"])]
    blob = graph.get_attr("program")
    results = graph.call_function(torch.ops.kiln.execute_program.default, (blob, placeholders, signature))
    leaves = [graph.call_function(operator.getitem, (results, i)) for i in range(len(sig["outputs"]))]
    out_spec = getattr(compiled, "_out_spec", None)
    if out_spec is not None and out_spec.num_leaves == len(leaves):
        graph.output(pytree.tree_unflatten(leaves, out_spec))
    else:
        graph.output(leaves[0] if len(leaves) == 1 else tuple(leaves))
    root = torch.nn.Module()
    root.register_buffer("program", torch.frombuffer(bytearray(data), dtype=torch.uint8))
    module = torch.fx.GraphModule(root, graph, "KilnProgram")

    try:
        exported = _export_with(module, sig, min_two=False)
    except Exception as first:  # noqa: BLE001 - a PyTorch that refuses dynamic ranges from 0 or 1
        try:
            exported = _export_with(module, sig, min_two=True)
        except Exception:  # noqa: BLE001
            raise first from None
        warnings.warn("kiln.save: this PyTorch's torch.export takes dynamic sizes from 2 only; the saved program "
                      "refuses sizes 0 and 1 that the kiln program takes", stacklevel=3)
    torch.export.save(exported, str(path))


def _export_with(module, sig, min_two):
    examples, dynamic = _example_inputs(sig, min_two)
    dynamic_shapes = tuple(dynamic) if any(d is not None for d in dynamic) else None
    return torch.export.export(module, tuple(examples), dynamic_shapes=dynamic_shapes, strict=False)
