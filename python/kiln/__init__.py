"""kiln: an ahead-of-time inference compiler for PyTorch programs.

    compiled = kiln.compile(module, arg_inputs=(x,), min_block_size=1)
    print(compiled.graph)      # _run_on_acc_N submodules and the ops left to PyTorch
    compiled(x)

Converters: kiln.conversion (the seed's decorator, registry and impl helpers).
"""
import torch

from . import _kiln
from ._capture import Input, capture
from ._module import CompiledModule, build_module
from ._values import engine_dtype

SourceIR = _kiln.SourceIR
CompilationSettings = _kiln.CompilationSettings
ITensor = _kiln.ITensor
KilnError = _kiln.KilnError
ConversionError = _kiln.ConversionError
InputError = _kiln.InputError
PartitionError = _kiln.PartitionError
FormatError = _kiln.FormatError

from . import conversion  # noqa: E402  (needs the names above)

__all__ = ["compile", "Input", "save", "load", "load_pt2", "SourceIR", "CompilationSettings", "ITensor",
           "CompiledModule", "conversion", "KilnError", "ConversionError", "InputError", "PartitionError",
           "FormatError"]
__version__ = "0.1.0"

# ITensor.dtype as torch names it (the engine's own type stays at .engine_dtype).
ITensor.dtype = property(lambda self: _values_from_engine(self.engine_dtype))


def _values_from_engine(dt):
    from ._values import FROM_ENGINE
    return FROM_ENGINE[dt]


_PRECISIONS = {"fp32": _kiln.Precision.FP32, "float32": _kiln.Precision.FP32, "fp16": _kiln.Precision.FP16,
               "float16": _kiln.Precision.FP16, "half": _kiln.Precision.FP16, "bf16": _kiln.Precision.BF16,
               "bfloat16": _kiln.Precision.BF16, torch.float32: _kiln.Precision.FP32,
               torch.float16: _kiln.Precision.FP16, torch.bfloat16: _kiln.Precision.BF16}


def _precision(precision, enabled_precisions):
    if precision is not None:
        if isinstance(precision, _kiln.Precision):
            return precision
        try:
            return _PRECISIONS[precision]
        except KeyError:
            raise ValueError(f"kiln.compile: unknown precision {precision!r} (fp32, fp16 or bf16)") from None
    enabled = set(enabled_precisions or ())
    if torch.float16 in enabled or torch.half in enabled:
        return _kiln.Precision.FP16
    if torch.bfloat16 in enabled:
        return _kiln.Precision.BF16
    return _kiln.Precision.FP32


def _device(device, inputs):
    if device is None:
        cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for t in torch.utils._pytree.tree_flatten(inputs)[0])
        device = "cuda" if cuda else "cpu"
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"kiln.compile: device must be cpu or cuda, got {device}")
    return device


def _op_names(ops):
    from ._values import target_name
    return {target_name(op) for op in ops}


def compile(module, arg_inputs=(), kwarg_inputs=None, *, inputs=None, min_block_size=5, torch_executed_ops=(),
            require_full_compilation=False, enabled_precisions=None, precision=None, device=None, dryrun=False,
            assume_dynamic_shape_support=False, workspace_size=None, verbose=False, **unsupported):
    """Compiles `module` for its example inputs (tensors, or kiln.Input for dynamic shapes).

    Returns a CompiledModule: accelerated segments run by kiln's engine, every other op by PyTorch.
    With dryrun=True prints the partition report instead and returns the module unchanged.
    """
    if unsupported:
        raise TypeError(f"kiln.compile: unknown option(s) {', '.join(sorted(unsupported))}")
    if inputs is not None and not arg_inputs:
        arg_inputs = inputs  # Torch-TensorRT's older keyword
    if isinstance(arg_inputs, (torch.Tensor, Input)):
        arg_inputs = (arg_inputs,)
    if isinstance(module, torch.nn.Module):
        module = module.eval()
    dev = _device(device, (arg_inputs, kwarg_inputs))
    settings = CompilationSettings()
    settings.min_block_size = int(min_block_size)
    settings.torch_executed_ops = _op_names(torch_executed_ops)
    settings.require_full_compilation = bool(require_full_compilation)
    settings.precision = _precision(precision, enabled_precisions)
    settings.device = _kiln.DeviceKind.CUDA if dev.type == "cuda" else _kiln.DeviceKind.CPU
    settings.assume_dynamic_shape_support = bool(assume_dynamic_shape_support)
    settings.dryrun = bool(dryrun)
    if workspace_size:
        settings.workspace_limit = int(workspace_size)

    with torch.no_grad():
        cap = capture(module, arg_inputs, kwarg_inputs, dev)
    if dryrun:
        print(_kiln.dry_run(cap.program, settings, cap.dynamic))
        return module
    program = _kiln.compile_program(cap.program, settings, cap.dynamic, verbose)
    weights = _program_weights(program, dev, cap.weights)
    return build_module(program, weights, cap.in_spec, cap.tensor_leaf, cap.out_spec)


def save(compiled, path):
    """Writes a compiled module's program (segments, plans, fallback ops, weights) to a .kiln file."""
    program = compiled.program if isinstance(compiled, CompiledModule) else compiled
    program.save(str(path))


def load(path, device=None):
    """Loads a .kiln file as a CompiledModule (inputs positional, outputs a tensor or a tuple)."""
    program = _kiln.CompiledProgram.load(str(path))
    return build_module(program, _program_weights(program, device or _program_device(program)))


def load_pt2(path, arg_inputs=None, **options):
    """Compiles an exported program (.pt2, as torch.export.save writes it) into a CompiledModule."""
    program = _kiln.load_pt2(str(path))
    settings = CompilationSettings()
    settings.min_block_size = int(options.pop("min_block_size", 5))
    settings.torch_executed_ops = _op_names(options.pop("torch_executed_ops", ()))
    settings.require_full_compilation = bool(options.pop("require_full_compilation", False))
    settings.precision = _precision(options.pop("precision", None), options.pop("enabled_precisions", None))
    dev = torch.device(options.pop("device", "cpu"))
    settings.device = _kiln.DeviceKind.CUDA if dev.type == "cuda" else _kiln.DeviceKind.CPU
    dynamic = options.pop("dynamic", [])
    if options:
        raise TypeError(f"kiln.load_pt2: unknown option(s) {', '.join(sorted(options))}")
    compiled = _kiln.compile_program(program, settings, dynamic, False)
    return build_module(compiled, _program_weights(compiled, dev))


def _program_device(program):
    segments = program.segments
    cuda = any(s["device"] == _kiln.DeviceKind.CUDA for s in segments)
    return torch.device("cuda" if cuda else "cpu")


def _program_weights(program, device, own=None):
    """Weights that fallback ops read, as torch tensors on `device`: the module's own where given
    (`own`, by state-dict name), else views of the program's (lowering may have made new ones)."""
    from ._values import FROM_SCALAR_TYPE
    out = {}
    for name, (array, scalar_type) in program.weights().items():
        if own is not None and name in own:
            out[name] = own[name]
            continue
        dtype = FROM_SCALAR_TYPE[scalar_type]
        t = torch.from_numpy(array)
        if t.dtype != dtype:
            t = t.view(dtype)
        out[name] = t.to(device) if device is not None else t
    return out
