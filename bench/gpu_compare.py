#!/usr/bin/env python3
"""kiln beside PyTorch eager and torch.compile on the GPU: a suite of 16 models in four families, fp16,
random weights, each at batch 1 and a throughput batch, through both of kiln's entry paths.

For each model and batch (one row):
  - eager fp16 (and an fp32 reference, to see that fp16 itself keeps the output meaningful);
  - kiln py:  kiln.compile(model, precision="fp16", device="cuda", min_block_size=1) in this process;
  - kiln cli: torch.export of the fp32 model -> .pt2 -> `kiln compile --precision fp16 --device cuda` ->
              `kiln run` (output, for the cosine) -> `kiln bench` (latency, in its own process);
  - torch.compile default and reduce-overhead (--max-autotune adds max-autotune);
  - timing in interleaved rounds (every method once per round, order rotated; median over rounds and the
    rounds' spread), compile times, device memory, cosine to eager, kiln's segments and fallback ops.
ratio = best torch.compile time / kiln time; a geomean line closes the table.

Each model runs in a child process (a crash, hang or OOM costs that model only: --timeout per model,
--deadline for the whole run); results go to --json / --md after every model. Progress on stderr.

    PYTHONPATH=build-gpu/python python3 bench/gpu_compare.py --kiln-bin build-gpu/bin/kiln \\
        --part 1/5 --json $OUT/suite_1.json --md $OUT/suite_1.md --deadline 540
    python3 bench/gpu_compare.py --list            # the models, families, batches, estimated seconds
    python3 bench/gpu_compare.py --plan 5          # how --part K/5 splits them
    python3 bench/merge_results.py $OUT/suite_*.json   # one table from the parts

The old single-path usage still works: --cli BIN measures kiln through its CLI only (as --paths cli).
"""
import argparse
import collections
import collections.abc
import copy
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import suite_table  # noqa: E402

kiln = None  # imported in the worker, only for the Python path
# Where the worker measures: "cuda" (fp16) for real; "cpu" (fp32, wall-clock timing, no memory figures) only to
# check the script's flow on a machine without a GPU (--device cpu).
DEVICE, DTYPE, PRECISION = "cuda", torch.float16, "fp16"
OOM = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)


# ----------------------------------------------------------------------------------------------------------
# Models. Random weights, built offline (torchvision weights=None, transformers from Config objects).

class HiddenState(torch.nn.Module):
    """A transformers model's last_hidden_state (one tensor out) for one tensor in."""

    def __init__(self, model, key="input_ids", **call_kwargs):
        super().__init__()
        self.model = model
        self.key = key
        self.call_kwargs = call_kwargs

    def forward(self, x):
        return self.model(**{self.key: x}, **self.call_kwargs).last_hidden_state


class OutKey(torch.nn.Module):
    """One entry of a model's dict output (torchvision's segmentation models: 'out')."""

    def __init__(self, model, key):
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, x):
        return self.model(x)[self.key]


def _images(size):
    return lambda b: (torch.randn(b, 3, size, size),)


def _tokens(seq, vocab, low=0):
    return lambda b: (torch.randint(low, vocab, (b, seq)),)


def _tv(name, **kw):
    import torchvision
    return getattr(torchvision.models, name)(weights=None, **kw)


def _hf(model_cls, config_cls, attn="sdpa", model_kwargs=None, **config):
    """transformers model from a Config object (no download). `attn` asked for when the installed version
    and model support it (else transformers' default)."""
    import transformers
    C, M = getattr(transformers, config_cls), getattr(transformers, model_cls)
    err = None
    for impl in ([attn, None] if attn else [None]):
        try:
            cfg = C(**config, **({"attn_implementation": impl} if impl else {}))
            return M(cfg, **(model_kwargs or {}))
        except (ValueError, ImportError, TypeError) as e:  # this version / model does not offer `impl`
            err = e
    raise err


Spec = collections.namedtuple("Spec", "family build inputs small large cost desc")
SPECS = collections.OrderedDict()


def _model(name, family, inputs, large, cost, desc, small=1):
    """Registers a builder. cost: rough seconds on an H100 for both batches through both paths with
    torch.compile default and reduce-overhead (to balance --part)."""
    def register(fn):
        SPECS[name] = Spec(family, fn, inputs, small, large, cost, desc)
        return fn
    return register


@_model("resnet50", "cnn", _images(224), 32, 115, "224²")
def resnet50():
    return _tv("resnet50")


@_model("mobilenet-v3-large", "cnn", _images(224), 32, 115, "224²")
def mobilenet_v3_large():
    return _tv("mobilenet_v3_large")


@_model("efficientnet-b0", "cnn", _images(224), 32, 125, "224²")
def efficientnet_b0():
    return _tv("efficientnet_b0")


@_model("convnext-tiny", "cnn", _images(224), 32, 120, "224²")
def convnext_tiny():
    return _tv("convnext_tiny")


@_model("regnet-y-800mf", "cnn", _images(224), 32, 120, "224²")
def regnet_y_800mf():
    return _tv("regnet_y_800mf")


@_model("deeplabv3-mbv3", "cnn", _images(512), 8, 150, "512², 'out'")
def deeplabv3_mobilenet_v3_large():
    import torchvision
    seg = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)
    return OutKey(seg, "out")


@_model("vit-b16", "vit", _images(224), 32, 125, "224²")
def vit_b16():
    return _tv("vit_b_16")


@_model("swin-t", "vit", _images(224), 8, 160, "224²")
def swin_t():
    return _tv("swin_t")


@_model("maxvit-t", "vit", _images(224), 8, 190, "224²")
def maxvit_t():
    return _tv("maxvit_t")


@_model("deit-s", "vit", _images(224), 32, 115, "224² (transformers ViT)")
def deit_s():
    # DeiT-small's shape as a transformers ViTModel: width 384, 6 heads, 12 layers.
    return HiddenState(_hf("ViTModel", "ViTConfig", hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                           intermediate_size=1536, image_size=224, patch_size=16,
                           model_kwargs={"add_pooling_layer": False}), key="pixel_values")


@_model("bert-base", "encoder", _tokens(128, 30522), 32, 125, "seq 128")
def bert_base():
    return HiddenState(_hf("BertModel", "BertConfig", model_kwargs={"add_pooling_layer": False}))


@_model("roberta-base", "encoder", _tokens(128, 50265, low=3), 32, 125, "seq 128")
def roberta_base():
    return HiddenState(_hf("RobertaModel", "RobertaConfig", vocab_size=50265, max_position_embeddings=514,
                           type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           model_kwargs={"add_pooling_layer": False}))


@_model("t5-base-enc", "encoder", _tokens(128, 32128), 32, 145, "seq 128 (relative position bias)")
def t5_base_encoder():
    # t5-base's encoder: width 768, 12 layers, 12 heads, ReLU feed-forward 3072.
    return HiddenState(_hf("T5EncoderModel", "T5Config", attn=None, vocab_size=32128, d_model=768, d_kv=64,
                           d_ff=3072, num_layers=12, num_heads=12, feed_forward_proj="relu"))


@_model("gpt2", "decoder", _tokens(512, 50257), 32, 150, "seq 512")
def gpt2():
    return HiddenState(_hf("GPT2Model", "GPT2Config"), use_cache=False)


@_model("llama", "decoder", _tokens(512, 32000), 8, 185, "seq 512 (GQA 16/4 heads of 128, RoPE, RMSNorm, SwiGLU)")
def llama():
    # A Llama-architecture model of ~330M parameters: GQA (4 KV heads for 16 query heads), head size 128.
    return HiddenState(_hf("LlamaModel", "LlamaConfig", hidden_size=2048, intermediate_size=5632,
                           num_hidden_layers=6, num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
                           max_position_embeddings=2048), use_cache=False)


@_model("qwen2", "decoder", _tokens(512, 32768), 8, 175, "seq 512 (GQA 14/2 heads of 64, qkv bias)")
def qwen2():
    # Qwen2-0.5B's layer shape (width 896, 14 heads, 2 KV heads, biased q/k/v), 12 layers, smaller vocabulary.
    return HiddenState(_hf("Qwen2Model", "Qwen2Config", hidden_size=896, intermediate_size=4864,
                           num_hidden_layers=12, num_attention_heads=14, num_key_value_heads=2, vocab_size=32768,
                           max_position_embeddings=4096), use_cache=False)


ALIASES = {"vit_b_16": "vit-b16", "bert": "bert-base", "mobilenet_v3_large": "mobilenet-v3-large",
           "efficientnet_b0": "efficientnet-b0", "convnext_tiny": "convnext-tiny", "regnet_y_800mf": "regnet-y-800mf",
           "swin_t": "swin-t", "maxvit_t": "maxvit-t", "deeplabv3": "deeplabv3-mbv3", "t5": "t5-base-enc",
           "roberta": "roberta-base", "deit": "deit-s"}


def canonical(name):
    name = name.strip()
    if name in SPECS:
        return name
    return ALIASES.get(name, ALIASES.get(name.replace("-", "_"), name.replace("_", "-")))


def fix_vanishing_init(model):
    """Random-init choices that make an fp16 output meaningless or a block a no-op, undone:
    parameters that are all (nearly) zero but not biases -- torchvision's zero-initialised classifier heads
    (vit), zero-init residual norms, class tokens -- and convnext's 1e-6 layer scales. Returns their names."""
    changed = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() == 0 or name.endswith("bias") or p.abs().max().item() >= 1e-4:
                continue
            scale_like = ("scale" in name or "gamma" in name or p.dim() == 1
                          or sum(s != 1 for s in p.shape) <= 1)
            if scale_like and name.endswith("weight") and p.dim() == 1:
                p.fill_(1.0)  # a norm's weight
            elif scale_like:
                p.uniform_(0.1, 0.5)  # a layer scale (or a token): trained ones sit around here
            else:
                torch.nn.init.normal_(p, std=0.02)
            changed.append(name)
    return changed


def calibrate_batchnorm(model, make_inputs, device):
    """BatchNorm's running statistics from random inputs (fresh ones are mean 0, var 1: every BN an
    identity and activations drifting in scale through a deep net). False if the model has none."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.to(device).train()
    with torch.no_grad():
        for _ in range(2):
            model(*(t.to(device) for t in make_inputs(4)))
    model.eval().cpu()
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return True


def build(name, device=None):
    """(model on CPU in fp32, eval mode, weights fixed; make_inputs(batch) -> CPU tensors; notes)."""
    spec = SPECS[name]
    torch.manual_seed(0)
    model = spec.build().eval()
    notes = []
    changed = fix_vanishing_init(model)
    if changed:
        notes.append(f"re-initialised {len(changed)} all-zero/1e-6 parameters ({', '.join(changed[:3])}"
                     f"{', ...' if len(changed) > 3 else ''})")
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if calibrate_batchnorm(model, spec.inputs, dev):
        notes.append("BatchNorm statistics calibrated on random inputs")
    return model, spec.inputs, notes


class _ModelsView(collections.abc.Mapping):
    """MODELS[name]() -> (model, make_inputs), as bench/kernel_trace.py uses it."""

    def __getitem__(self, name):
        name = canonical(name)
        if name not in SPECS:
            raise KeyError(name)
        return lambda: build(name)[:2]

    def __iter__(self):
        return iter(SPECS)

    def __len__(self):
        return len(SPECS)


MODELS = _ModelsView()


# ----------------------------------------------------------------------------------------------------------
# Measurement helpers (worker side).

def set_device(device):
    global DEVICE, DTYPE, PRECISION
    DEVICE = device
    DTYPE, PRECISION = (torch.float16, "fp16") if device == "cuda" else (torch.float32, "fp32")


def _cuda():
    return DEVICE == "cuda"


def _sync():
    if _cuda():
        torch.cuda.synchronize()


def _empty_cache():
    if _cuda():
        torch.cuda.empty_cache()


def _allocated():
    return torch.cuda.memory_allocated() if _cuda() else 0


def _reset_peak():
    if _cuda():
        torch.cuda.reset_peak_memory_stats()


def _peak():
    return torch.cuda.max_memory_allocated() if _cuda() else 0


def _free_and_reserved():
    return (torch.cuda.mem_get_info()[0], torch.cuda.memory_reserved()) if _cuda() else (0, 0)


def _memory_mark():
    """Where the device's memory stands before a method builds: measured against it by _process_mb."""
    _sync()
    _empty_cache()
    (free, reserved), alloc = _free_and_reserved(), _allocated()
    _reset_peak()
    return free, reserved, alloc


def _process_mb(mark, graph_pools=False):
    """Device memory a method took since `mark`, seen the same way for kiln and torch.compile: what left
    the device's free memory outside PyTorch's allocator (library handles and workspaces, loaded kernels,
    CUDA graphs, kiln's plans), plus the peak PyTorch's allocator handed out (its caching slack left out)."""
    free0, res0, alloc0 = mark
    _sync()
    free1, res1 = _free_and_reserved()
    seen = (free0 - free1) - (res1 - res0) + (_peak() - alloc0)
    if not (graph_pools and _cuda()):
        return seen / 2**20
    # graph_pools (torch.compile's CUDA graph modes): once a graph is recorded, PyTorch's allocator
    # counts its private pool as reserved, not allocated (pytorch/pytorch#121932), so `seen` misses
    # what those graphs hold (MobileNetV3-Large b32: 29 MiB of activations, below its one 49 MiB
    # tensor). What the process still holds once the cache is released is a floor that counts them.
    _empty_cache()
    _sync()
    held = free0 - torch.cuda.mem_get_info()[0]
    return max(seen, held) / 2**20


def event_times(fn, n):
    if not _cuda():
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return out
    out = []
    for _ in range(n):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        for v in x:
            t = first_tensor(v)
            if t is not None:
                return t
    return getattr(x, "last_hidden_state", None)


def cosine(a, b):
    a = a.detach().to("cpu", torch.float64).flatten()
    b = b.detach().to("cpu", torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def short(e, n=300):
    s = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
    return s if len(s) <= n else s[:n] + "…"


SUMMARY_SEG = re.compile(r"segments: (\d+), fallback ops: (\d+)")
SUMMARY_MEM = re.compile(r"weights (\d+) B, activations (\d+) B")


def parse_summary(text):
    """kiln's program summary (`kiln compile` output, CompiledProgram.summary()) -> segments, fallback ops,
    planned bytes."""
    info = {}
    m = SUMMARY_SEG.search(text)
    if m:
        info["segments"], info["fallback"] = int(m.group(1)), int(m.group(2))
    mem = [(int(w), int(a)) for w, a in SUMMARY_MEM.findall(text)]
    if mem:
        info["plan_weights_mb"] = sum(w for w, _ in mem) / 2**20
        info["plan_activations_mb"] = sum(a for _, a in mem) / 2**20
    for line in text.splitlines():
        if line.strip().startswith("run by PyTorch:"):
            info["fallback_ops"] = sorted(set(line.split(":", 1)[1].split()))
    return info


def run_tool(cmd, timeout, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        tail = [l for l in (p.stderr + p.stdout).splitlines() if l.strip()][-3:]
        raise RuntimeError(f"`kiln {cmd[1]}` exit {p.returncode}: {' / '.join(tail)}")
    return p


class Progress:
    def __init__(self, emit, name):
        self.emit, self.name, self.t0 = emit, name, time.perf_counter()

    def __call__(self, batch, stage, secs=None, extra=""):
        t = time.perf_counter() - self.t0
        msg = f"[{t:6.1f}s] {self.name} b{batch} {stage}" + (f" {secs:.1f}s" if secs is not None else "") + \
              (f" {extra}" if extra else "")
        print(msg, file=sys.stderr, flush=True)
        self.emit({"event": "stage", "batch": batch, "stage": stage, "t": t})


def interleaved(methods, cli_bench, args):
    """Median over rounds of each method's per-round median. methods: name -> callable (in process);
    cli_bench: callable() -> ms from one `kiln bench` process, run in the first --cli-rounds rounds."""
    iters, errors = {}, {}
    for name, fn in list(methods.items()):
        try:
            t = statistics.median(event_times(fn, args.warmup))
            iters[name] = max(3, min(args.iters, int(args.round_ms / max(t, 1e-3))))
        except Exception as e:
            errors[name] = short(e)
            del methods[name]
    per = {name: [] for name in methods}
    cli = []
    names = list(methods)
    for r in range(args.rounds):
        k = r % max(1, len(names))
        for name in names[k:] + names[:k]:
            if name not in methods:
                continue
            try:
                per[name].append(statistics.median(event_times(methods[name], iters[name])))
            except Exception as e:
                errors[name] = short(e)
                del methods[name]
        if cli_bench is not None and r < args.cli_rounds:
            try:
                cli.append(cli_bench())
            except Exception as e:
                errors["kiln_cli"] = short(e)
                cli_bench = None
    out = {name: summarize(v, iters[name]) for name, v in per.items() if v}
    if cli:
        out["kiln_cli"] = summarize(cli, args.iters)
    return out, errors


def summarize(values, iters):
    v = sorted(values)
    if len(v) >= 10:
        lo, hi = v[int(0.1 * (len(v) - 1) + 0.5)], v[int(0.9 * (len(v) - 1) + 0.5)]
    else:
        lo, hi = v[0], v[-1]
    return {"ms": statistics.median(v), "lo": lo, "hi": hi, "rounds": [round(x, 4) for x in values], "iters": iters}


# ----------------------------------------------------------------------------------------------------------
# One row: a model at one batch size (worker side).

def bench_row(name, model_cpu, make_inputs, batch, args, progress, notes):
    spec = SPECS[name]
    row = {"model": name, "family": spec.family, "desc": spec.desc, "batch": batch, "status": "ok", "errors": {},
           "time": {}, "compile_s": {}, "mem_mb": {}, "kiln": {}, "cosine": {}, "notes": [], "prepared": list(notes)}
    errors = row["errors"]
    torch.manual_seed(1)
    host_inputs = make_inputs(batch)
    paths = args.paths
    dev = torch.device(DEVICE)
    elem = torch.tensor([], dtype=DTYPE).element_size()
    weights_mb = sum(t.numel() * elem for t in list(model_cpu.parameters()) + list(model_cpu.buffers())
                     if t.is_floating_point()) / 2**20
    row["mem_mb"]["weights"] = weights_mb

    # Eager: an fp32 reference, then the fp16 module every other method starts from.
    t0 = time.perf_counter()
    inputs32 = tuple(t.to(dev) for t in host_inputs)
    inputs = tuple(t.to(DTYPE) if t.is_floating_point() else t for t in inputs32)
    with torch.no_grad():
        model = copy.deepcopy(model_cpu).to(dev)
        try:
            ref32 = first_tensor(model(*inputs32)).float().cpu()
        except OOM as e:
            ref32 = None
            row["notes"].append(f"no fp32 reference ({short(e, 80)})")
        model = model.to(DTYPE)
        _sync()
        _empty_cache()
        alloc0 = _allocated()
        _reset_peak()
        ref = first_tensor(model(*inputs)).detach().clone()
        _sync()
        row["mem_mb"]["eager"] = weights_mb + (_peak() - alloc0) / 2**20
    reff = ref.float()
    row["out"] = {"shape": list(ref.shape), "std": reff.std().item() if ref.numel() > 1 else 0.0,
                  "finite": bool(torch.isfinite(reff).all().item())}
    if ref32 is not None:
        row["cosine"]["eager_fp32"] = cosine(ref, ref32)
    if row["cosine"].get("eager_fp32", 1.0) < 0.999:
        row["notes"].append(f"eager fp16 vs fp32 cosine {row['cosine']['eager_fp32']:.5f}: fp16 itself drifts here")
    if not row["out"]["finite"] or row["out"]["std"] < 1e-4:
        row["notes"].append(f"eager fp16 output degenerate (std {row['out']['std']:.2e}, "
                            f"finite {row['out']['finite']}): cosines say little")
    progress(batch, "eager reference", time.perf_counter() - t0,
             f"out {tuple(ref.shape)} std {row['out']['std']:.3g} cos16~32 {row['cosine'].get('eager_fp32', float('nan')):.5f}")
    del reff

    methods = {"eager": lambda: model(*inputs)}
    cli_bench = None
    tmp = tempfile.mkdtemp(prefix=f"kiln_{name}_b{batch}_", dir=args.tmpdir or None)
    try:
        # kiln through its CLI: export of the fp32 CPU module, `kiln compile`, `kiln run`, `kiln bench`.
        if "cli" in paths:
            try:
                cli_bench = kiln_cli(row, model_cpu, host_inputs, ref, ref32, batch, args, progress, tmp)
            except Exception as e:
                errors.setdefault("kiln_cli", short(e))
                progress(batch, "kiln cli FAILED", extra=short(e, 200))

        # kiln through Python: kiln.compile of the fp16 CUDA module.
        if "py" in paths:
            try:
                compiled = kiln_py(row, model, inputs, ref, ref32, batch, progress)
                methods["kiln_py"] = lambda: compiled(*inputs)
            except Exception as e:
                errors.setdefault("kiln_py", short(e))
                progress(batch, "kiln py FAILED", extra=short(e, 200))
                _empty_cache()

        # torch.compile, each mode on the same fp16 module (dynamo keeps one cache entry per backend).
        for mode in args.modes:
            key = f"tc_{mode}"
            try:
                fn = torch_compile(row, model, inputs, mode, batch, progress)
                methods[key] = (lambda f: (lambda: f(*inputs)))(fn)
            except Exception as e:
                errors[key] = short(e)
                progress(batch, f"{key} FAILED", extra=short(e, 200))
                _empty_cache()

        t0 = time.perf_counter()
        graphs0 = _dynamo_graphs()
        with torch.no_grad():
            times, terr = interleaved(methods, cli_bench, args)
        if _dynamo_graphs() > graphs0:
            row["notes"].append("torch.compile compiled new graphs during the timing rounds (recompilation)")
        row["time"].update(times)
        for k, v in terr.items():
            errors.setdefault(k, f"while timing: {v}")
        progress(batch, "timing rounds", time.perf_counter() - t0, "  ".join(
            f"{k} {v['ms']:.3f}" for k, v in times.items()))
    finally:
        methods.clear()
        if args.keep:
            dst = os.path.join(args.keep, f"{name}_b{batch}")
            shutil.rmtree(dst, ignore_errors=True)
            shutil.move(tmp, dst)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if errors and not row["time"]:
        row["status"] = "error"
    return row


def _dynamo_reset():
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()


def _dynamo_graphs():
    try:
        return torch._dynamo.utils.counters["stats"]["unique_graphs"]
    except Exception:
        return 0


def kiln_py(row, model, inputs, ref, ref32, batch, progress):
    global kiln
    if kiln is None:
        import kiln as _k
        kiln = _k
    mark = _memory_mark()
    t0 = time.perf_counter()
    with torch.no_grad():
        compiled = kiln.compile(model, arg_inputs=inputs, precision=PRECISION, device=DEVICE, min_block_size=1)
        t1 = time.perf_counter()
        out = first_tensor(compiled(*inputs))
        _sync()
    t2 = time.perf_counter()
    row["compile_s"]["kiln_py"] = t2 - t0
    row["compile_s"]["kiln_py_first_call"] = t2 - t1
    row["mem_mb"]["kiln_py_measured"] = _process_mb(mark)
    info = parse_summary(compiled.program.summary())
    info["graph_segments"] = sum(1 for n in compiled.graph.nodes
                                 if n.op == "call_module" and str(n.target).startswith("_run_on_acc"))
    if "plan_weights_mb" in info:
        row["mem_mb"]["kiln_py_plan"] = info["plan_weights_mb"] + info["plan_activations_mb"]
    row["kiln"]["py"] = info
    row["cosine"]["kiln_py"] = cosine(out, ref)
    if ref32 is not None:
        row["cosine"]["kiln_py_fp32"] = cosine(out, ref32)
    progress(batch, "kiln.compile + first call", t2 - t0,
             f"segments {info.get('segments')} fallback {info.get('fallback')} cos {row['cosine']['kiln_py']:.5f}")
    return compiled


def kiln_cli(row, model_cpu, host_inputs, ref, ref32, batch, args, progress, tmp):
    """torch.export of the fp32 CPU module saved as .pt2 with the inputs as .npy, then kiln_cli_pt2."""
    t0 = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(model_cpu, tuple(host_inputs))
    pt2 = os.path.join(tmp, "model.pt2")
    torch.export.save(ep, pt2)
    del ep
    inputs = []
    for i, t in enumerate(host_inputs):
        inputs += ["--input", os.path.join(tmp, f"input_{i}.npy")]
        np.save(inputs[-1], t.numpy())
    row["compile_s"]["kiln_cli_export"] = time.perf_counter() - t0
    progress(batch, "torch.export + save", row["compile_s"]["kiln_cli_export"])
    return kiln_cli_pt2(row, pt2, inputs, ref, ref32, batch, args, progress, tmp)


def kiln_cli_pt2(row, pt2, inputs, ref, ref32, batch, args, progress, tmp):
    """`kiln compile` of `pt2`, `kiln run` for the output, and a callable that runs `kiln bench` once.
    inputs: the CLI's --input arguments."""
    kb = args.kiln_bin
    kf = os.path.join(tmp, "model.kiln")
    t0 = time.perf_counter()
    built = run_tool([kb, "compile", pt2, "-o", kf, "--precision", PRECISION, "--device", DEVICE, "--min-block-size", "1"],
                     args.stage_timeout)
    row["compile_s"]["kiln_cli"] = time.perf_counter() - t0
    info = parse_summary(built.stdout + "\n" + built.stderr)
    row["kiln"]["cli"] = info
    if "plan_weights_mb" in info:
        row["mem_mb"]["kiln_cli_plan"] = info["plan_weights_mb"] + info["plan_activations_mb"]
    progress(batch, "kiln compile", row["compile_s"]["kiln_cli"],
             f"segments {info.get('segments')} fallback {info.get('fallback')}")
    if os.path.dirname(pt2) == tmp and not args.keep:
        os.remove(pt2)  # large; the .kiln holds what is needed now
    outdir = os.path.join(tmp, "out")
    os.makedirs(outdir, exist_ok=True)
    run_tool([kb, "run", kf, *inputs, "--output-dir", outdir], args.stage_timeout)
    out = torch.from_numpy(np.load(os.path.join(outdir, "output_0.npy")))
    row["cosine"]["kiln_cli"] = cosine(out, ref)
    if ref32 is not None:
        row["cosine"]["kiln_cli_fp32"] = cosine(out, ref32)
    if args.profile:  # where kiln's time goes, layer by layer (KILN_PROFILE; kernels synchronized)
        prof = subprocess.run([kb, "bench", kf, *inputs, "--iters", "5", "--warmup", "1"], capture_output=True,
                              text=True, env={**os.environ, "KILN_PROFILE": "1"}, timeout=args.stage_timeout).stderr
        print(f"--- {row['model']} batch {batch}\n" + "\n".join(
            l for l in prof.splitlines() if not l.startswith("kiln: ")), file=sys.stderr, flush=True)

    def bench():
        p = run_tool([kb, "bench", kf, *inputs, "--iters", str(args.iters), "--warmup", "5"], args.stage_timeout)
        m = re.search(r"median ([0-9.]+) ms", p.stdout)
        if not m:
            raise RuntimeError(f"no median in `kiln bench` output: {p.stdout[-200:]}")
        return float(m.group(1))
    return bench


def torch_compile(row, model, inputs, mode, batch, progress):
    key = f"tc_{mode}"
    kwargs = {"dynamic": False}
    if mode != "default":
        kwargs["mode"] = mode
    mark = _memory_mark()
    alloc0 = mark[2]
    t0 = time.perf_counter()
    fn = torch.compile(model, **kwargs)
    with torch.no_grad():
        fn(*inputs)
        _sync()
        row["compile_s"][key] = time.perf_counter() - t0
        for _ in range(2):  # reduce-overhead warms up, then records its CUDA graph
            fn(*inputs)
        _sync()
    row["mem_mb"][key] = row["mem_mb"]["weights"] + (_peak() - alloc0) / 2**20
    # The weights are the eager module's, allocated before the mark; kiln's plan holds its own copy.
    row["mem_mb"][f"{key}_measured"] = row["mem_mb"]["weights"] + _process_mb(mark, graph_pools=mode != "default")
    progress(batch, f"torch.compile {mode}", row["compile_s"][key])
    return fn


def warm_up(args, progress, batch):
    """One-time costs of a process (Inductor's imports and compile workers, kiln's module and library
    handles) paid on a tiny module first, so that the first row's compile times are comparable to the rest."""
    global kiln
    t0 = time.perf_counter()
    tiny = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()).eval().to(DEVICE, DTYPE)
    x = torch.randn(8, 64, device=DEVICE, dtype=DTYPE)
    with torch.no_grad():
        if args.modes and hasattr(torch, "compile"):
            try:
                torch.compile(tiny, dynamic=False)(x)
            except Exception as e:
                progress(batch, "torch.compile warm-up failed", extra=short(e, 200))
            _dynamo_reset()
        if "py" in args.paths:
            try:
                import kiln as _k
                kiln = _k
                kiln.compile(tiny, arg_inputs=(x,), precision=PRECISION, device=DEVICE, min_block_size=1)(x)
            except Exception as e:
                progress(batch, "kiln warm-up failed", extra=short(e, 200))
    _sync()
    progress(batch, "process warm-up", time.perf_counter() - t0)


def worker(name, batches, args, emit):
    """One model, its batches in order; each finished row goes to emit() at once."""
    progress = Progress(emit, name)
    import importlib
    import platform
    set_device(args.device)
    env = {"device": torch.cuda.get_device_name() if _cuda() else f"CPU {platform.machine()} (flow check only)",
           "torch": torch.__version__,
           "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d")}
    for mod in ("torchvision", "transformers"):
        try:
            env[mod] = importlib.import_module(mod).__version__
        except Exception:
            pass
    emit({"event": "env", **env})
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    warm_up(args, progress, batches[0])
    t0 = time.perf_counter()
    try:
        model_cpu, make_inputs, notes = build(name, DEVICE if DEVICE == "cpu" else None)
    except Exception as e:
        for b in batches:
            emit({"event": "row", "row": {"model": name, "family": SPECS[name].family, "desc": SPECS[name].desc,
                                          "batch": b, "status": "error", "errors": {"build": short(e)}}})
        progress(batches[0], "build FAILED", extra=short(e, 200))
        return
    progress(batches[0], "model built", time.perf_counter() - t0, "; ".join(notes))
    for b in batches:
        try:
            row = bench_row(name, model_cpu, make_inputs, b, args, progress, notes)
        except Exception as e:  # eager itself failed (OOM at this batch, ...)
            row = {"model": name, "family": SPECS[name].family, "desc": SPECS[name].desc, "batch": b,
                   "status": "error", "errors": {"eager": short(e)}}
            progress(b, "row FAILED", extra=short(e, 200))
        emit({"event": "row", "row": row})
        _dynamo_reset()
        _sync()
        _empty_cache()


# ----------------------------------------------------------------------------------------------------------
# The suite (parent side): selection, parts, one child process per model, outputs.

def select(args):
    names = [canonical(n) for n in args.models.split(",") if n.strip()] if args.models else list(SPECS)
    bad = [n for n in names if n not in SPECS]
    if bad:
        sys.exit(f"unknown model(s): {', '.join(bad)} (known: {', '.join(SPECS)})")
    if args.families:
        fams = {f.strip() for f in args.families.split(",")}
        unknown = fams - set(suite_table.FAMILIES)
        if unknown:
            sys.exit(f"unknown famil(ies): {', '.join(unknown)} (known: {', '.join(suite_table.FAMILIES)})")
        names = [n for n in names if SPECS[n].family in fams]
    return names


def batches_of(name, choice):
    s = SPECS[name]
    if choice == "small":
        return [s.small]
    if choice == "large":
        return [s.large]
    if choice == "both":
        return [s.small, s.large]
    return [int(b) for b in choice.split(",") if b.strip()]


def split_parts(names, n, choice="both"):
    """Longest-processing-time-first over the estimated costs; each part keeps the suite's order."""
    load = [0.0] * n
    part_of = {}
    for name in sorted(names, key=lambda x: -SPECS[x].cost):
        k = min(range(n), key=lambda i: load[i])
        load[k] += SPECS[name].cost * len(batches_of(name, choice)) / 2
        part_of[name] = k
    return [[x for x in names if part_of[x] == k] for k in range(n)], load


def run_child(name, batches, args, timeout):
    """Runs the worker for `name` in a child process (its own process group, killed on timeout).
    Returns (env, rows, failure) where failure says how the child ended if not cleanly."""
    fd, events = tempfile.mkstemp(prefix=f"suite_{name}_", suffix=".jsonl")
    os.close(fd)
    afd, argfile = tempfile.mkstemp(prefix="suite_args_", suffix=".json")
    with os.fdopen(afd, "w") as f:
        json.dump(vars(args), f)
    env = dict(os.environ)
    cache = None
    if not args.warm_inductor_cache:  # torch.compile's compile time from a cold cache, as a new user has it
        cache = tempfile.mkdtemp(prefix="inductor_cache_")
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
        env["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--worker-batches",
           ",".join(map(str, batches)), "--worker-events", events, "--worker-args", argfile]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    tail = collections.deque(maxlen=20)

    def pump():
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip())
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    failure = None
    try:
        rc = proc.wait(timeout=timeout)
        if rc != 0:
            failure = ("crash", f"child exit {rc}" + (f" (signal {-rc})" if rc < 0 else ""))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        failure = ("timeout", f"timed out after {timeout:.0f} s")
    reader.join(timeout=5)
    env_info, rows, last_stage = {}, [], None
    with open(events) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "env":
                env_info = {k: v for k, v in ev.items() if k != "event"}
            elif ev.get("event") == "row":
                rows.append(ev["row"])
            elif ev.get("event") == "stage":
                last_stage = f"b{ev['batch']} after {ev['stage']} ({ev['t']:.0f} s)"
    for p in (events, argfile):
        os.remove(p)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    if failure:
        failure = (failure[0], failure[1] + (f", last stage {last_stage}" if last_stage else "")
                   + (f"; stderr: {' / '.join(l for l in list(tail)[-3:] if l)[-300:]}" if failure[0] == "crash" else ""))
    return env_info, rows, failure


def missing_rows(name, batches, rows, status, msg):
    done = {r["batch"] for r in rows}
    return [{"model": name, "family": SPECS[name].family, "desc": SPECS[name].desc, "batch": b, "status": status,
             "errors": {status: msg}} for b in batches if b not in done]


def write_outputs(args, meta, rows):
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        os.replace(tmp, args.json)
    if args.md:
        with open(args.md, "w") as f:
            f.write(suite_table.markdown(rows, meta, list(SPECS)))


def kiln_commit():
    try:
        return subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except Exception:
        return None


def run_suite(args, names):
    start = time.perf_counter()
    meta = {"date": time.strftime("%Y-%m-%d"), "kiln_commit": os.environ.get("KILN_COMMIT") or kiln_commit(),
            "args": {k: v for k, v in vars(args).items() if not k.startswith("worker")},
            "spread": "min–max of the per-round medians" if args.rounds < 10 else "p10–p90 of the per-round medians",
            "models": names, "part": args.part}
    rows = []
    for i, name in enumerate(names):
        batches = batches_of(name, args.batches)
        left = args.deadline - (time.perf_counter() - start) if args.deadline else None
        if left is not None and left < max(args.min_model_s, 0.5 * SPECS[name].cost):
            rows += missing_rows(name, batches, [], "skipped", f"run deadline reached ({args.deadline:.0f} s)")
            print(f"[suite] {name}: skipped, {left:.0f} s left of the deadline", file=sys.stderr, flush=True)
            continue
        timeout = args.timeout if left is None else min(args.timeout, left - 5)
        print(f"[suite] {i + 1}/{len(names)} {name} batches {batches} (timeout {timeout:.0f} s)",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if args.in_process:
            got = []
            env_info = {}

            def emit(ev):
                if ev.get("event") == "row":
                    got.append(ev["row"])
                elif ev.get("event") == "env":
                    env_info.update({k: v for k, v in ev.items() if k != "event"})
            worker(name, batches, args, emit)
            failure = None
        else:
            env_info, got, failure = run_child(name, batches, args, timeout)
        for k, v in env_info.items():
            meta.setdefault(k, v)
        rows += got
        if failure:
            rows += missing_rows(name, batches, got, *failure)
        print(f"[suite] {name} done in {time.perf_counter() - t0:.0f} s" + (f" ({failure[1]})" if failure else ""),
              file=sys.stderr, flush=True)
        write_outputs(args, meta, rows)
    meta["wall_s"] = round(time.perf_counter() - start, 1)
    write_outputs(args, meta, rows)
    skipped = [r["model"] for r in rows if r.get("status") == "skipped"]
    if skipped:
        print(f"[suite] not run (deadline): rerun with --models {','.join(dict.fromkeys(skipped))}",
              file=sys.stderr, flush=True)
    print(suite_table.markdown(rows, meta, list(SPECS)))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", default="", help="comma-separated model names (default: all; see --list)")
    ap.add_argument("--families", default="", help="comma-separated: " + ",".join(suite_table.FAMILIES))
    ap.add_argument("--batches", default="both",
                    help="small (batch 1), large (the model's throughput batch), both, or explicit sizes '1,32'")
    ap.add_argument("--part", default="", help="K/N: run the K-th (1-based) of N parts of the selection, split "
                    "by estimated cost (--plan N shows the split)")
    ap.add_argument("--paths", default="", help="kiln entry paths: py, cli or py,cli (default: py,cli when the "
                    "kiln binary exists, else py)")
    ap.add_argument("--kiln-bin", default="", help="the kiln CLI (default: build-gpu/bin/kiln, then build/bin/kiln)")
    ap.add_argument("--cli", default="", help="old form: measure kiln through this CLI binary only (--paths cli)")
    ap.add_argument("--modes", default="default,reduce-overhead",
                    help="torch.compile modes to compare against ('' for none)")
    ap.add_argument("--max-autotune", action="store_true", help="add torch.compile mode max-autotune (slow builds)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    ap.add_argument("--iters", type=int, default=20, help="most timed calls per method per round (default 20)")
    ap.add_argument("--round-ms", type=float, default=250.0,
                    help="aim of each method's share of a round in ms (fewer calls for slow methods)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls per method before the rounds")
    ap.add_argument("--cli-rounds", type=int, default=3, help="rounds that also run `kiln bench` (a process each)")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per model (all its batches)")
    ap.add_argument("--deadline", type=float, default=0.0,
                    help="seconds for the whole run: models that would start later are skipped (0: none)")
    ap.add_argument("--min-model-s", type=float, default=75.0,
                    help="with --deadline: do not start a model with less than this left")
    ap.add_argument("--stage-timeout", type=float, default=240.0, help="seconds for one kiln CLI call")
    ap.add_argument("--json", default="", help="write raw results here (rewritten after every model)")
    ap.add_argument("--md", default="", help="write the markdown table here too")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark for eager/tc")
    ap.add_argument("--warm-inductor-cache", action="store_true",
                    help="share Inductor's on-disk cache between models (default: a fresh one per model)")
    ap.add_argument("--in-process", action="store_true", help="no child process per model (debugging)")
    ap.add_argument("--profile", action="store_true", help="cli path: print kiln's per-layer profile too")
    ap.add_argument("--keep", default="", help="cli path: keep each row's inputs and .kiln under this folder")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: fp32 on the CPU, to check the script's flow without a GPU (numbers mean nothing)")
    ap.add_argument("--tmpdir", default="", help="where the .pt2/.kiln files go (default: the system's)")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    ap.add_argument("--plan", type=int, default=0, help="print how the selection splits into N parts and exit")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--worker-batches", default="", help=argparse.SUPPRESS)
    ap.add_argument("--worker-events", default="", help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m] if isinstance(args.modes, str) else args.modes
    if args.max_autotune and "max-autotune" not in args.modes:
        args.modes.append("max-autotune")
    if args.cli:
        args.kiln_bin, args.paths = args.cli, args.paths or "cli"
    if not args.kiln_bin:
        root = os.path.dirname(HERE)
        args.kiln_bin = next((p for p in (os.path.join(root, "build-gpu/bin/kiln"), os.path.join(root, "build/bin/kiln"))
                              if os.path.exists(p)), "")
    if not args.paths:
        args.paths = "py,cli" if args.kiln_bin else "py"
    args.paths = [p for p in args.paths.split(",") if p] if isinstance(args.paths, str) else args.paths
    bad = [p for p in args.paths if p not in suite_table.PATHS]
    if bad:
        ap.error(f"--paths: unknown {bad}")
    if "cli" in args.paths and not args.kiln_bin:
        ap.error("--paths cli needs the kiln binary (--kiln-bin)")
    return args


def main():
    args = parse_args()
    if args.worker:  # child: one model
        with open(args.worker_args) as f:
            saved = json.load(f)
        for k, v in saved.items():
            if not k.startswith("worker"):
                setattr(args, k, v)
        with open(args.worker_events, "a") as out:
            def emit(ev):
                out.write(json.dumps(ev) + "\n")
                out.flush()
            worker(args.worker, [int(b) for b in args.worker_batches.split(",")], args, emit)
        return
    names = select(args)
    if args.list or args.plan:
        n = args.plan or 1
        parts, load = split_parts(names, n, args.batches)
        for k, part in enumerate(parts):
            if n > 1:
                print(f"part {k + 1}/{n}: ~{load[k]:.0f} s")
            for x in part:
                s = SPECS[x]
                print(f"  {x:20s} {s.family:8s} batches {','.join(map(str, batches_of(x, args.batches))):8s} "
                      f"~{s.cost * len(batches_of(x, args.batches)) / 2:.0f} s  {s.desc}")
        return
    if args.part:
        k, n = (int(v) for v in args.part.split("/"))
        if not 1 <= k <= n:
            sys.exit(f"--part {args.part}: K must be within 1..N")
        names = split_parts(names, n, args.batches)[0][k - 1]
    print(f"[suite] models {','.join(names)}; paths {','.join(args.paths)}; tc modes {','.join(args.modes) or '-'}; "
          f"kiln {args.kiln_bin or '-'}", file=sys.stderr, flush=True)
    run_suite(args, names)


if __name__ == "__main__":
    main()
