"""kiln.MutableCompiledModule: a compiled module that follows the module it was made from, as
Torch-TensorRT's MutableTorchTensorRTModule does. Change the weights (load_state_dict, an optimizer
step, a replaced layer) and the next call refits; call it with inputs the compiled program does not
take (another shape, dtype or argument structure) and it compiles again."""
import torch

from . import _kiln
from ._capture import Input

InputError = _kiln.InputError


def _leaves(args, kwargs):
    """The call's structure, and per leaf what a compiled program fixes: a tensor's rank, dtype
    and device, any other argument's value."""
    flat, spec = torch.utils._pytree.tree_flatten((tuple(args), dict(kwargs)))
    kinds = tuple((v.dim(), v.dtype, v.device.type) if isinstance(v, torch.Tensor) else ("value", repr(v))
                  for v in flat)
    return flat, (spec, kinds)


def _shape_ranges(flat):
    """Per tensor leaf, the (min, max) of each dim the compiled program takes: a kiln.Input's range,
    an example tensor's own size."""
    out = []
    for v in flat:
        if isinstance(v, Input):
            out.append(list(zip(v.min_shape, v.max_shape)))
        elif isinstance(v, torch.Tensor):
            out.append([(d, d) for d in v.shape])
    return out


def _within(flat, ranges):
    shapes = [v.shape for v in flat if isinstance(v, torch.Tensor)]
    return len(shapes) == len(ranges) and all(
        len(s) == len(r) and all(lo <= d <= hi for d, (lo, hi) in zip(s, r)) for s, r in zip(shapes, ranges))


def _weight_state(module):
    """Each parameter's and buffer's identity and version: an in-place change (load_state_dict, an
    optimizer step) bumps the version, a new tensor changes the identity."""
    return tuple((name, id(t), t.data_ptr(), t._version, tuple(t.shape), t.dtype)
                 for name, t in list(module.named_parameters()) + list(module.named_buffers()))


class MutableCompiledModule(torch.nn.Module):
    """Behaves like `module`, run by kiln: `kiln.MutableCompiledModule(model, min_block_size=1)`,
    then `mutable(x)`. Options are kiln.compile's (arg_inputs is taken from the first call when not
    given). State dict, attributes and submodules are the wrapped module's. Counters `refits` and
    `compiles` say what it did."""

    def __init__(self, module, **compile_options):
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"kiln.MutableCompiledModule: expected a torch.nn.Module, got {type(module).__name__}")
        from . import _compile_option_names
        unknown = sorted(set(compile_options) - _compile_option_names())
        if unknown:
            raise TypeError(f"kiln.MutableCompiledModule: unknown option(s) {', '.join(unknown)}")
        if compile_options.get("immutable_weights"):
            raise ValueError("kiln.MutableCompiledModule: immutable_weights=True leaves nothing to refit with")
        state = self.__dict__
        state["_options"] = compile_options
        state["_compiled"] = None
        state["_kinds"] = None    # structure, ranks, dtypes, devices and values the program was compiled for
        state["_ranges"] = None   # and the shapes it takes
        state["_weights"] = None  # the weights it holds (_weight_state)
        state["refits"] = 0
        state["compiles"] = 0
        self.original = module

    def _compile(self, args, kwargs):
        from . import compile as kiln_compile
        options = dict(self._options)
        if self._compiled is None and "arg_inputs" in options:  # the user's example inputs (kiln.Input ranges)
            examples = options.pop("arg_inputs"), options.pop("kwarg_inputs", None) or {}
        else:
            options.pop("arg_inputs", None), options.pop("kwarg_inputs", None)
            examples = tuple(args), dict(kwargs)
        with torch.no_grad():
            compiled = kiln_compile(self.original, arg_inputs=examples[0], kwarg_inputs=examples[1], **options)
        flat, kinds = _leaves(*examples)
        state = self.__dict__
        state["_compiled"], state["_ranges"] = compiled, _shape_ranges(flat)
        # kiln.Input leaves say no device: the first call that runs sets the kinds then.
        state["_kinds"] = None if any(isinstance(v, Input) for v in flat) else kinds
        state["compiles"] += 1

    def forward(self, *args, **kwargs):
        from . import refit
        flat, kinds = _leaves(args, kwargs)
        weights = _weight_state(self.original)
        fits = self._compiled is not None and (self._kinds is None or kinds == self._kinds) \
            and _within(flat, self._ranges)
        if not fits:
            self._compile(args, kwargs)
        elif weights != self._weights:
            try:
                with torch.no_grad():
                    refit(self._compiled, self.original)
                self.__dict__["refits"] += 1
            except InputError:  # a layer of another shape, a value baked into a kernel: compile again
                self._compile(args, kwargs)
        out = self._compiled(*args, **kwargs)
        self.__dict__["_weights"] = weights
        if self._kinds is None:
            self.__dict__["_kinds"] = kinds
        return out

    # The wrapped module's state and attributes, as Torch-TensorRT's mutable module gives them.
    def state_dict(self, *args, **kwargs):
        return self.original.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict=True):
        return self.original.load_state_dict(state_dict, strict=strict)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["original"], name)
