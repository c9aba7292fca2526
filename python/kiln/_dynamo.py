"""torch.compile(model, backend="kiln", options={...}): registered when kiln is imported on a
PyTorch with TorchDynamo (>= 2.1). Each graph dynamo hands over is compiled by kiln.compile with
`options` (kiln.compile's keywords; min_block_size defaults to 1 here, as each graph is already what
dynamo could capture). Graph breaks are dynamo's: the Python between graphs runs as usual. A call
whose inputs differ in shape, dtype or device from every compiled one compiles the graph again for
them (dynamo's own guards decide when it hands over a graph again)."""
import warnings

import torch

_registered = False


def _concrete(v):
    """A real value for what dynamo passes as an example: fake tensors become zeros of their shape,
    symbolic sizes their hint."""
    if isinstance(v, torch.Tensor) and type(v).__name__ == "FakeTensor":
        shape = tuple(int(s) for s in v.shape)
        return torch.zeros(shape, dtype=v.dtype, device=v.device)
    if isinstance(v, getattr(torch, "SymInt", ())):  # (PyTorch < 2 has no SymInt)
        return int(v.node.hint) if getattr(v.node, "hint", None) is not None else int(v)
    return v


def _key(args):
    return tuple((tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else ("value", a) for a in args)


def kiln_backend(gm, example_inputs, options=None):
    """The backend function dynamo calls: (GraphModule, example inputs) -> callable like gm.forward."""
    from . import _compile_option_names, compile as kiln_compile
    options = dict(options or {})
    known = _compile_option_names() - {"arg_inputs", "kwarg_inputs", "inputs"}  # dynamo gives the inputs
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"torch.compile(backend='kiln'): unknown option(s) {', '.join(unknown)} "
                        f"(kiln.compile's keywords: {', '.join(sorted(known))})")
    options.setdefault("min_block_size", 1)
    compiled = {}

    def compile_for(args):
        with torch.no_grad():
            module = kiln_compile(gm, arg_inputs=tuple(args), **options)
        compiled[_key(args)] = module
        return module

    # Built now, so that a graph kiln cannot take fails inside torch.compile's first call, named.
    compile_for([_concrete(v) for v in example_inputs])

    def run(*args):
        module = compiled.get(_key(args)) or compile_for(args)
        return module(*args)

    run._kiln_compiled = compiled  # what was built, for tests and inspection
    return run


def register():
    """Registers the backend under the name "kiln" where PyTorch has dynamo; once."""
    global _registered
    if _registered:
        return True
    try:
        from torch._dynamo import list_backends, register_backend
    except ImportError:  # PyTorch < 2.1: no torch.compile
        return False
    try:
        if "kiln" not in list_backends(exclude_tags=()):
            register_backend(kiln_backend, name="kiln")
    except Exception as e:  # noqa: BLE001 - `import kiln` must work whatever this PyTorch's dynamo does
        warnings.warn(f"kiln: torch.compile's backend 'kiln' could not be registered ({type(e).__name__}: {e})",
                      stacklevel=2)
        return False
    _registered = True
    return True
