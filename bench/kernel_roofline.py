#!/usr/bin/env python3
"""How close kiln's kernels come to the card: memory-bound layers against the copy bandwidth measured
in the same run, matrix multiplies and attention against the matrix rate measured in the same run
(cuBLAS through torch.matmul at 8192³). Each case is a one-op module compiled by kiln.compile (one
segment, nothing left to PyTorch, or the row says so), timed beside eager PyTorch (and torch.compile
with --tc) in interleaved rounds.

    PYTHONPATH=build-gpu/python python3 bench/kernel_roofline.py [--cases add,softmax] [--tc]
    python3 bench/kernel_roofline.py --device cpu --scale 0.01   # the script's own check, no GPU

Bandwidth counts the bytes a kernel must move at least (every input read once, every output written
once); FLOP counts are the useful multiply-adds × 2 (causal attention: half the score matrix).
"""
import argparse
import math
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kiln  # noqa: E402
from gpu_compare import parse_summary  # noqa: E402


class Fn(torch.nn.Module):
    def __init__(self, fn, *params):
        super().__init__()
        self.fn = fn
        self.params = torch.nn.ParameterList([torch.nn.Parameter(p, requires_grad=False) for p in params])

    def forward(self, *xs):
        return self.fn(*xs, *self.params)


def _window_partition(x, w=7):
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def _rms_norm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def cases(scale):
    """(name, shape text, module, input shapes, work kind, work amount in bytes or FLOPs)."""
    def n(v, lo=1):  # scaled size, kept a multiple of 64 so shapes stay tile-friendly
        return max(lo, int(v * scale) // 64 * 64)
    rows, cols = n(16384, 64), 8192
    big = rows * cols  # elements in one large operand: 256 MiB in fp16 at scale 1
    win_b = max(1, int(256 * scale))
    hw = 56
    m = n(16384, 64)
    mm = n(8192, 64)
    s = n(4096, 64)
    b_attn = max(1, int(8 * scale))
    out = []

    def mem(name, shape, module, shapes, extra_elems=0):
        elems = sum(math.prod(sh) for sh in shapes) + extra_elems
        out.append((name, shape, module, shapes, "bytes", elems))  # elements; bytes once the dtype is known
    mem("add", f"{rows}x{cols} + same", Fn(torch.add), [(rows, cols)] * 2, extra_elems=big)
    mem("gelu(x*s+b)", f"{rows}x{cols}, per-column s, b",
        Fn(lambda x, s, b: F.gelu(x * s + b), torch.rand(cols) + 0.5, torch.randn(cols)), [(rows, cols)],
        extra_elems=big)
    mem("silu", f"{rows}x{cols}", Fn(F.silu), [(rows, cols)], extra_elems=big)
    # Data movement alone is a view PyTorch does for free, so each is measured as a consumer sees it:
    # folded into the loads of the pointwise op after it.
    mem("permute 0213 + 1", f"{rows // 16}x128x16x{cols // 128}",
        Fn(lambda x: x.permute(0, 2, 1, 3) + 1), [(rows // 16, 128, 16, cols // 128)], extra_elems=big)
    mem("concat dim 1", f"2 x {rows}x{cols // 2}", Fn(lambda a, b: torch.cat([a, b], 1)),
        [(rows, cols // 2)] * 2, extra_elems=big)
    mem("window partition 7x7 + 1", f"{win_b}x{hw}x{hw}x128", Fn(lambda x: _window_partition(x) + 1),
        [(win_b, hw, hw, 128)],
        extra_elems=win_b * hw * hw * 128)
    mem("layer_norm(1024)", f"{big // 1024}x1024",
        Fn(lambda x, w, b: F.layer_norm(x, (1024,), w, b), torch.rand(1024) + 0.5, torch.randn(1024)),
        [(big // 1024, 1024)], extra_elems=big)
    mem("rms_norm(4096)", f"{big // 4096}x4096", Fn(_rms_norm, torch.rand(4096) + 0.5), [(big // 4096, 4096)],
        extra_elems=big)
    mem("softmax(-1)", f"{big // 2048}x2048", Fn(lambda x: torch.softmax(x, -1)), [(big // 2048, 2048)],
        extra_elems=big)
    mem("sum(-1)", f"{rows}x{cols}", Fn(lambda x: x.sum(-1)), [(rows, cols)], extra_elems=rows)
    pool_b = max(1, big // (512 * 32 * 32))
    mem("global avg pool", f"{pool_b}x512x32x32", Fn(lambda x: F.adaptive_avg_pool2d(x, 1)),
        [(pool_b, 512, 32, 32)], extra_elems=pool_b * 512)
    out.append(("matmul", f"{mm}x{mm} @ {mm}x{mm}", Fn(torch.matmul), [(mm, mm), (mm, mm)], "flops",
                2 * mm**3))
    lin = torch.nn.Linear(4096, 4096)
    out.append(("linear+bias", f"{m}x4096 -> 4096", lin, [(m, 4096)], "flops", 2 * m * 4096 * 4096))
    for causal in (False, True):
        out.append((f"sdpa{' causal' if causal else ''}", f"{b_attn}x16x{s}x128",
                    Fn(lambda q, k, v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c)),
                    [(b_attn, 16, s, 128)] * 3, "flops", 4 * b_attn * 16 * s * s * 128 // (2 if causal else 1)))
    return out


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn, iters, device):
    """Per-call milliseconds over `iters` back-to-back calls (the host's launch work overlaps the
    device's; the work per call is sized to take far longer than a launch)."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def interleaved(methods, rounds, iters, device):
    """Median per-call ms of each method and the (min, max) of its per-round values; the order rotates
    every round so no method always runs first."""
    with torch.no_grad():
        for fn in methods.values():
            fn()
        sync(device)
        per = {k: [] for k in methods}
        names = list(methods)
        for r in range(rounds):
            for k in names[r % len(names):] + names[:r % len(names)]:
                per[k].append(timed_ms(methods[k], iters, device))
    return {k: (statistics.median(v), min(v), max(v)) for k, v in per.items()}


def references(device, dtype, scale, rounds, iters):
    """The card's copy bandwidth (bytes/s, read + write) and matrix rates (FLOP/s) in this run."""
    elems = max(2**16, int(2**29 * scale))  # 1 GiB fp16 at scale 1
    src = torch.randn(elems, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    ms = interleaved({"copy": lambda: dst.copy_(src)}, rounds, iters, device)["copy"][0]
    refs = {"copy": 2 * elems * src.element_size() / (ms * 1e-3)}
    del src, dst
    n = max(256, int(8192 * scale) // 64 * 64)
    for mdt in (torch.float16, torch.bfloat16) if device == "cuda" else (dtype,):
        a = torch.randn(n, n, device=device, dtype=mdt)
        b = torch.randn(n, n, device=device, dtype=mdt)
        ms = interleaved({"mm": lambda: torch.matmul(a, b)}, rounds, iters, device)["mm"][0]
        refs[str(mdt).replace("torch.", "")] = 2 * n**3 / (ms * 1e-3)
    return refs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--cases", default="", help="comma-separated case names (prefix match); all by default")
    ap.add_argument("--scale", type=float, default=1.0, help="sizes × this (small for a CPU check)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--tc", action="store_true", help="torch.compile (default mode) too")
    ap.add_argument("--deadline", type=float, default=0, help="seconds; cases not started by then are skipped")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    device = args.device
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    if device == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # eager CPU half kernels are too slow to be a reference
    refs = references(device, dtype, args.scale, args.rounds, args.iters)
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{card}, PyTorch {torch.__version__}, {args.precision}, kiln {os.environ.get('KILN_COMMIT', '')}".rstrip())
    print(f"measured here: copy {refs['copy'] / 1e9:.0f} GB/s (read + write); matmul "
          + ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in refs.items() if k != "copy") + "\n")
    matrix_ref = max(v for k, v in refs.items() if k != "copy")
    tc_col = " tc µs |" if args.tc else ""
    print(f"| case | shape | eager µs |{tc_col} kiln µs | kiln rate | of the card's | eager ÷ kiln | "
          "segments+fallback | max rel. err |")
    print("|---|---|---|" + ("---|" if args.tc else "") + "---|---|---|---|---|---|", flush=True)
    wanted = [w for w in args.cases.split(",") if w]
    for name, shape, module, shapes, kind, work in cases(args.scale):
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        if args.deadline and time.perf_counter() - started > args.deadline:
            print(f"[roofline] {name}: deadline reached, not run", file=sys.stderr)
            continue
        g = torch.Generator().manual_seed(0)
        inputs = [torch.randn(*sh, generator=g).to(device, dtype) for sh in shapes]
        module = module.to(device, dtype).eval()
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                compiled = kiln.compile(module, arg_inputs=tuple(inputs), precision=args.precision,
                                        device=device, min_block_size=1)
                got, ref = compiled(*inputs), module(*inputs)
        except Exception as e:  # a case kiln refuses is a row of the table, not the end of the run
            print(f"| {name} | {shape} | kiln failed: {str(e).splitlines()[0][:150]} |", flush=True)
            continue
        build_s = time.perf_counter() - t0
        err = ((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30)).item()
        segments = parse_summary(compiled.program.summary()).get("segments", "?")
        fallback = compiled.program.fallback_ops()
        methods = {"eager": lambda: module(*inputs), "kiln": lambda: compiled(*inputs)}
        if args.tc:
            torch._dynamo.reset()
            tc = torch.compile(module)
            methods["tc"] = lambda: tc(*inputs)
        times = interleaved(methods, args.rounds, args.iters, device)
        kiln_ms = times["kiln"][0]
        if kind == "bytes":
            rate = work * inputs[0].element_size() / (kiln_ms * 1e-3)
            rate_text, share = f"{rate / 1e9:.0f} GB/s", rate / refs["copy"]
        else:
            rate = work / (kiln_ms * 1e-3)
            rate_text, share = f"{rate / 1e12:.0f} TFLOP/s", rate / matrix_ref
        cell = lambda k: f"{times[k][0] * 1e3:.0f} ({times[k][1] * 1e3:.0f}–{times[k][2] * 1e3:.0f})"
        tc_cell = f" {cell('tc')} |" if args.tc else ""
        print(f"| {name} | {shape} | {cell('eager')} |{tc_cell} {cell('kiln')} | {rate_text} | {100 * share:.0f}% | "
              f"{times['eager'][0] / kiln_ms:.2f}× | {segments}+{len(fallback)}"
              f"{' (' + ', '.join(fallback) + ')' if fallback else ''} | {err:.1e} |", flush=True)
        print(f"[roofline] {name}: built in {build_s:.1f} s", file=sys.stderr)
        del compiled, methods, inputs, got, ref
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
