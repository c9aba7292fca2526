"""kiln: an ahead-of-time inference compiler for PyTorch programs.

    compiled = kiln.compile(module, arg_inputs=(x,), min_block_size=1)
    print(compiled.graph)      # _run_on_acc_N submodules and the ops left to PyTorch
    compiled(x)

Converters: kiln.conversion (the seed's decorator, registry and impl helpers).
"""
import inspect
import os
import sys
import time
import warnings
from collections.abc import Mapping

import torch

from . import _cache, _kiln
from ._capture import CaptureError, Input, capture
from ._module import CompiledModule, _attr_name, build_module
from ._mutable import MutableCompiledModule
from ._values import engine_dtype

# PyTorch 2.11's ExportedProgram.run_decompositions deep-copies pytree specs, and each copy of a
# leaf spec warns (FutureWarning, reported at copyreg) about PyTorch's own deprecated LeafSpec
# check: noise from inside torch on every kiln.compile that the user cannot act on. Hidden by its
# exact text where copyreg reports it, once for the process (a filter scoped to each compile would
# race between threads compiling at once).
warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg",
                        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

SourceIR = _kiln.SourceIR
CompilationSettings = _kiln.CompilationSettings
ITensor = _kiln.ITensor
KilnError = _kiln.KilnError
ConversionError = _kiln.ConversionError
InputError = _kiln.InputError
PartitionError = _kiln.PartitionError
FormatError = _kiln.FormatError
ShapeError = _kiln.ShapeError
NetworkError = _kiln.NetworkError
VerifyError = _kiln.VerifyError

from . import conversion  # noqa: E402  (needs the names above)

__all__ = ["compile", "refit", "MutableCompiledModule", "Input", "save", "load", "load_pt2", "SourceIR",
           "CompilationSettings", "ITensor", "CompiledModule", "conversion", "KilnError", "ConversionError", "InputError", "PartitionError",
           "FormatError", "ShapeError", "NetworkError", "VerifyError", "CaptureError"]
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


_ALLOWED_PRECISIONS = "torch.float32, torch.float16, torch.bfloat16 (or 'fp32', 'fp16', 'bf16')"


def _precision(precision, enabled_precisions, where="kiln.compile"):
    """The build precision. Every entry is checked, as the CLI's --precision is: int8 (quantization)
    and float64 have no engine support and must not silently become fp32."""
    if precision is not None:
        if isinstance(precision, _kiln.Precision):
            return precision
        try:
            return _PRECISIONS[precision]
        except (KeyError, TypeError):
            raise ValueError(f"{where}: precision={precision!r} is not supported; allowed: "
                             f"{_ALLOWED_PRECISIONS}") from None
    if enabled_precisions is None:
        enabled = set()
    elif isinstance(enabled_precisions, (torch.dtype, str)):
        enabled = {enabled_precisions}
    else:
        try:
            enabled = set(enabled_precisions)
        except TypeError:
            raise TypeError(f"{where}: enabled_precisions must be a set of dtypes, got "
                            f"{type(enabled_precisions).__name__}") from None
    for p in enabled:
        try:
            ok = p in _PRECISIONS
        except TypeError:
            ok = False
        if not ok:
            extra = ""
            if p in (torch.int8, "int8", torch.qint8):
                extra = " (int8 quantization is not supported)"
            elif p in (torch.float64, "fp64", "float64"):
                extra = " (float64 programs are computed in float32 anyway: see truncate_double)"
            raise ValueError(f"{where}: enabled_precisions holds {p!r}, which is not supported{extra}; "
                             f"allowed: {_ALLOWED_PRECISIONS}")
    if torch.float16 in enabled or "fp16" in enabled or "float16" in enabled or "half" in enabled:
        return _kiln.Precision.FP16
    if torch.bfloat16 in enabled or "bf16" in enabled or "bfloat16" in enabled:
        return _kiln.Precision.BF16
    return _kiln.Precision.FP32


def _device(device, inputs, where="kiln.compile"):
    if device is None:
        cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for t in torch.utils._pytree.tree_flatten(inputs)[0])
        device = "cuda" if cuda else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{where}: device={device!r} is not a device; allowed: 'cpu', 'cuda', 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{where}: device must be cpu or cuda, got {device}")
    if device.type == "cuda":
        # Fail now, not at the first call (as the CLI's --device cuda does).
        if not _kiln.cuda_available():
            raise InputError(f"{where}: device={str(device)!r}: no GPU is available to kiln here "
                             "(or this kiln was built without CUDA)")
        if not torch.cuda.is_available():
            raise InputError(f"{where}: device={str(device)!r}: this PyTorch has no CUDA support "
                             "(fallback ops and the module's tensors need it)")
    return device


def _check_int(name, v, where="kiln.compile", minimum=0):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{where}: {name} must be an int >= {minimum}, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {v}")
    return v


def _check_bool(name, v, where="kiln.compile"):
    if not isinstance(v, bool):
        raise TypeError(f"{where}: {name} must be True or False, got {type(v).__name__} {v!r}")
    return v


def _op_names(ops, where="kiln.compile"):
    """torch_executed_ops as overload names, each one known (as the CLI's --torch-executed-ops):
    a misspelt name would otherwise force nothing, silently."""
    from ._values import target_name
    if ops is None:
        return set()
    if isinstance(ops, str) or not hasattr(ops, "__iter__"):
        ops = [ops]  # one op, not its characters
    known = set(_kiln.converter_targets())
    out = set()
    for op in ops:
        try:
            name = target_name(op)
        except Exception:  # noqa: BLE001 - any unreadable entry is reported the same way
            name = None
        if isinstance(name, str) and name.startswith("torch.ops."):
            name = name[len("torch.ops."):]
        if not isinstance(name, str) or (name not in known and not _kiln.has_schema(name)):
            raise ValueError(f"{where}: torch_executed_ops: unknown op {op!r} (expected an ATen overload "
                             "such as torch.ops.aten.relu.default or 'aten.relu.default')")
        out.add(name)
    return out


def _has_float64(module, inputs):
    flat = torch.utils._pytree.tree_flatten(inputs)[0]
    if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in flat):
        return True
    if isinstance(module, torch.nn.Module):
        return any(t.dtype == torch.float64 for t in list(module.parameters()) + list(module.buffers()))
    return False


def _acceleration_report(program, settings):
    """A warning when a compile accelerates nothing or little, naming why (Torch-TensorRT warns
    likewise): which ops have no converter or were rejected, and convertible ops left to PyTorch
    because their runs are shorter than min_block_size."""
    accelerated = sum(int(s["compute_ops"]) for s in program.segments)
    fallback = [node for kind, node in program.steps if kind == "node"
                and node.target not in ("getitem",) and not str(node.target).startswith(("_operator.", "aten.sym_"))]
    total = accelerated + len(fallback)
    if total == 0 or (program.segments and accelerated >= 0.5 * total):
        return None
    reasons, short = {}, 0
    for node in fallback:
        verdict, reason, _ = _kiln.lookup(node, settings)
        if verdict == _kiln.Verdict.CONVERTIBLE:
            short += 1
        else:
            key = f"{node.target}: {reason}"
            reasons[key] = reasons.get(key, 0) + 1
    head = ("kiln.compile accelerated nothing: every op runs in PyTorch" if not program.segments else
            f"kiln.compile accelerated little: {accelerated} of {total} compute ops in "
            f"{len(program.segments)} segment(s)")
    why = []
    if short and settings.min_block_size <= 1:  # runs with no compute op at all
        why.append(f"{short} convertible op(s) are data movement alone (views, slices, reshapes: no compute op), "
                   "which kiln leaves to PyTorch")
    elif short:
        why.append(f"{short} convertible op(s) were left to PyTorch because their runs have fewer than "
                   f"min_block_size={settings.min_block_size} compute ops (lower min_block_size)")
    for key, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:6]:
        why.append(f"{count}x {key}")
    return head + ("; " + "; ".join(why) if why else "")


def compile(module, arg_inputs=(), kwarg_inputs=None, *, inputs=None, min_block_size=5, torch_executed_ops=(),
            require_full_compilation=False, enabled_precisions=None, precision=None, device=None, dryrun=False,
            assume_dynamic_shape_support=False, workspace_size=None, verbose=False, truncate_double=True,
            immutable_weights=False, cache_built_engines=False, reuse_cached_engines=False,
            engine_cache_dir=None, engine_cache_size=None, **unsupported):
    """Compiles `module` for its example inputs (tensors, or kiln.Input for dynamic shapes).

    Returns a CompiledModule: accelerated segments run by kiln's engine, every other op by PyTorch.
    With dryrun=True prints the partition report instead and returns the module unchanged.
    Every option is checked as the CLI checks its flags: a bad value is an error naming the option
    and what it allows. float64 programs are computed in float32 with a warning (truncate_double,
    as Torch-TensorRT; False refuses them instead). immutable_weights=False (the default) keeps the
    traced graph so that kiln.refit can give the module new weights without a rebuild; True keeps
    nothing for it.
    """
    if unsupported:
        raise TypeError(f"kiln.compile: unknown option(s) {', '.join(sorted(unsupported))}")
    if inputs is not None:
        if arg_inputs is not None and (not isinstance(arg_inputs, (tuple, list)) or len(arg_inputs)):
            raise ValueError("kiln.compile: give the example inputs once: inputs= (Torch-TensorRT's older "
                             "keyword) or arg_inputs=, not both")
        arg_inputs = inputs  # Torch-TensorRT's older keyword
    if arg_inputs is None:
        arg_inputs = ()
    if isinstance(arg_inputs, (torch.Tensor, Input)):
        arg_inputs = (arg_inputs,)
    if not isinstance(arg_inputs, (tuple, list)):
        raise TypeError(f"kiln.compile: arg_inputs must be a tuple of tensors or kiln.Input, got "
                        f"{type(arg_inputs).__name__}")
    if kwarg_inputs is not None and not isinstance(kwarg_inputs, dict):
        raise TypeError(f"kiln.compile: kwarg_inputs must be a dict, got {type(kwarg_inputs).__name__}")
    settings = CompilationSettings()
    settings.min_block_size = _check_int("min_block_size", min_block_size)
    settings.torch_executed_ops = _op_names(torch_executed_ops)
    settings.require_full_compilation = _check_bool("require_full_compilation", require_full_compilation)
    settings.precision = _precision(precision, enabled_precisions)
    settings.assume_dynamic_shape_support = _check_bool("assume_dynamic_shape_support", assume_dynamic_shape_support)
    settings.dryrun = _check_bool("dryrun", dryrun)
    _check_bool("verbose", verbose)
    _check_bool("truncate_double", truncate_double)
    _check_bool("immutable_weights", immutable_weights)
    _check_bool("cache_built_engines", cache_built_engines)
    _check_bool("reuse_cached_engines", reuse_cached_engines)
    if engine_cache_dir is not None and not isinstance(engine_cache_dir, (str, os.PathLike)):
        raise TypeError(f"kiln.compile: engine_cache_dir must be a path, got {type(engine_cache_dir).__name__}")
    if engine_cache_size is not None:
        _check_int("engine_cache_size", engine_cache_size, minimum=1)
    if workspace_size:  # None or 0 (Torch-TensorRT's default value): kiln's default, 1 GiB
        settings.workspace_limit = _check_int("workspace_size", workspace_size, minimum=1)
    dev = _device(device, (arg_inputs, kwarg_inputs))
    settings.device = _kiln.DeviceKind.CUDA if dev.type == "cuda" else _kiln.DeviceKind.CPU
    if isinstance(module, torch.nn.Module):
        module = module.eval()
    if _has_float64(module, (arg_inputs, kwarg_inputs)):
        if not truncate_double:
            raise ValueError("kiln.compile: the module or its inputs are float64, which the engine does not "
                             "compute; pass truncate_double=True to compute in float32")
        warnings.warn("kiln.compile: float64 module or inputs: computed in float32 (truncate_double); "
                      "inputs and outputs stay float64", stacklevel=2)

    to_torch = set(settings.torch_executed_ops)

    def converts(node):
        # An op the user gave to PyTorch (torch_executed_ops) stays whole: decomposed, its parts
        # would be converted against the user's wish.
        return (node.target in to_torch
                or _kiln.lookup(node, settings)[0] == _kiln.Verdict.CONVERTIBLE)

    started = time.perf_counter()
    with torch.no_grad():
        cap = capture(module, arg_inputs, kwarg_inputs, dev, converts, to_torch)
    if verbose:
        print(f"kiln.compile: captured in {time.perf_counter() - started:.3f} s", file=sys.stderr)
    if dryrun:
        print(_kiln.dry_run(cap.program, settings, cap.dynamic))
        return module
    cache = key = program = None
    if cache_built_engines or reuse_cached_engines:
        cache = _cache.EngineCache(engine_cache_dir, engine_cache_size)
        key = _cache.key_of(cap, settings, dev)
        if reuse_cached_engines:
            looked_up = time.perf_counter()
            program = cache.load(key)
            if program is not None and verbose:
                print(f"kiln.compile: loaded from the engine cache ({key[:16]}) in "
                      f"{time.perf_counter() - looked_up:.3f} s", file=sys.stderr)
    if program is None:
        program = _kiln.compile_program(cap.program, settings, cap.dynamic, verbose)
        report = _acceleration_report(program, settings)
        if report:
            warnings.warn(report, stacklevel=2)
        if cache_built_engines:
            try:
                cache.store(key, program)
            except OSError as e:  # an unwritable cache must not cost the compile
                warnings.warn(f"kiln.compile: could not store the program in the engine cache "
                              f"({cache.directory}): {e}", stacklevel=2)
    weights = _program_weights(program, dev, cap.weights)
    compiled = build_module(program, weights, cap.in_spec, cap.tensor_leaf, cap.out_spec, cap.leaf_values)
    if not immutable_weights:
        compiled._refit_source = _RefitSource(cap.rebuild, cap.refittable, settings, cap.dynamic, dev)
    return compiled


def _compile_option_names():
    """kiln.compile's keyword options, for the wrappers that pass options on (checked up front)."""
    return set(inspect.signature(compile).parameters) - {"module", "unsupported"}


class _RefitSource:
    """What kiln.refit needs of a compile: the trace (to build the IR program with other weights),
    the names, shapes and dtypes of the weights it may replace, and the compile's settings."""

    def __init__(self, rebuild, refittable, settings, dynamic, device):
        self.rebuild, self.refittable, self.settings = rebuild, refittable, settings
        self.dynamic, self.device = dynamic, device


def refit(compiled, new_weights, *, strict=True):
    """Gives a compiled module new weights without rebuilding it (Torch-TensorRT's
    refit_module_weights): `new_weights` is the same architecture as a module with other weights (a
    fine-tuned copy), or its state dict. Returns `compiled`, changed in place.

    The program is converted again with the new values, on the host only; each plan takes the new
    constants (folded ones, such as batch norm in a convolution, recomputed) and keeps its kernels,
    kernel choices and recorded CUDA graphs. Checked first, with nothing changed on an error:
    every weight of the compiled module is given, with its shape and dtype (kiln.InputError names
    each one that is not), and no name is unknown (strict=False ignores unknown names). Refit is
    refused where the weights' values decided the program (a scalar weight inlined into a kernel):
    compile again then."""
    if not isinstance(compiled, CompiledModule):
        raise TypeError(f"kiln.refit: expected the module kiln.compile returned, got {type(compiled).__name__}")
    source = getattr(compiled, "_refit_source", None)
    if source is None:
        raise InputError("kiln.refit: this module keeps no trace to refit from: it was compiled with "
                         "immutable_weights=True or loaded from a saved program; compile it again with "
                         "immutable_weights=False")
    _check_bool("strict", strict, "kiln.refit")
    if isinstance(new_weights, torch.nn.Module):
        state = dict(new_weights.named_parameters())
        state.update(new_weights.named_buffers())
    elif isinstance(new_weights, Mapping):
        state = dict(new_weights)
    else:
        raise TypeError(f"kiln.refit: new_weights must be a torch.nn.Module or a state dict, got "
                        f"{type(new_weights).__name__}")
    problems = []
    missing = [n for n in source.refittable if n not in state]
    if missing:
        problems.append(f"missing {len(missing)} weight(s): {', '.join(missing[:8])}"
                        + (" ..." if len(missing) > 8 else ""))
    unknown = [n for n in state if n not in source.refittable]
    if unknown and strict and isinstance(new_weights, Mapping):
        problems.append(f"unknown name(s): {', '.join(unknown[:8])}" + (" ..." if len(unknown) > 8 else "")
                        + " (strict=False ignores them)")
    for name, (shape, dtype) in source.refittable.items():
        t = state.get(name)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            problems.append(f"{name} is a {type(t).__name__}, not a tensor")
        elif tuple(t.shape) != shape or t.dtype != dtype:
            problems.append(f"{name} is {t.dtype} {list(t.shape)}, the compiled module's is {dtype} {list(shape)}")
    if problems:
        raise InputError("kiln.refit: the new weights do not fit the compiled module: " + "; ".join(problems))
    new_state = {n: state[n] for n in source.refittable}
    with torch.no_grad():
        fresh = _kiln.compile_program(source.rebuild(new_state), source.settings, source.dynamic, False,
                                      device_code=False)
    compiled.program.refit(fresh)
    # Fallback ops read the weights as buffers of the fx module: the new tensors, on its device.
    for name, tensor in _program_weights(compiled.program, source.device, new_state).items():
        attr = _attr_name(name)
        if attr in compiled.module._buffers:
            compiled.module._buffers[attr] = tensor.to(source.device)
    return compiled


def save(compiled, path, output_format="kiln"):
    """Writes a compiled module's program (segments, plans, fallback ops, weights).

    output_format="kiln" (the default): a .kiln file, for kiln.load, `kiln run` and the C++ runtime,
    no PyTorch needed. output_format="exported_program": a .pt2 of torch.export (PyTorch >= 2.4)
    whose graph calls the program through torch.ops.kiln.execute_program; load it with
    torch.export.load after `import kiln`, and call `.module()` with the program's tensor inputs."""
    program = compiled.program if isinstance(compiled, CompiledModule) else compiled
    if not isinstance(program, _kiln.CompiledProgram):
        raise InputError(f"kiln.save: expected what kiln.compile or kiln.load returns, got {type(compiled).__name__}")
    if output_format == "kiln":
        program.save(str(path))
    elif output_format == "exported_program":
        _export.export(compiled, path)
    else:
        raise InputError(f"kiln.save: output_format={output_format!r} is not one of 'kiln', 'exported_program'")


def load(path, device=None):
    """Loads a .kiln file as a CompiledModule (inputs positional, outputs a tensor or a tuple).
    device="cpu" runs it on the CPU whatever it was built for (a GPU program too, as `kiln run
    --device cpu`); by default it runs where it was built for."""
    program = _kiln.CompiledProgram.load(str(path))
    dev = _device(device, (), "kiln.load") if device is not None else _program_device(program)
    return build_module(program, _program_weights(program, dev), device=dev)


def load_pt2(path, arg_inputs=None, **options):
    """Compiles an exported program (.pt2, as torch.export.save writes it) into a CompiledModule."""
    program = _kiln.load_pt2(str(path))
    settings = CompilationSettings()
    w = "kiln.load_pt2"
    settings.min_block_size = _check_int("min_block_size", options.pop("min_block_size", 5), w)
    settings.torch_executed_ops = _op_names(options.pop("torch_executed_ops", ()), w)
    settings.require_full_compilation = _check_bool("require_full_compilation",
                                                    options.pop("require_full_compilation", False), w)
    settings.precision = _precision(options.pop("precision", None), options.pop("enabled_precisions", None), w)
    dev = _device(options.pop("device", "cpu"), (), w)
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


# torch.compile(model, backend="kiln") on PyTorch >= 2.1 (kiln/_dynamo.py).
from . import _dynamo  # noqa: E402
_dynamo.register()

# torch.ops.kiln.execute_program, which .pt2 files kiln.save writes call (PyTorch >= 2.4).
from . import _export  # noqa: E402
_export.register()
