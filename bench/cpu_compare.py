#!/usr/bin/env python3
"""kiln's CPU backend beside PyTorch's own CPU kernels (eager, and torch.compile where this
PyTorch has it), fp32, in one process on one machine: median latency of each, kiln's build time,
and the largest difference from eager. Prints one markdown table (stdout); progress on stderr.

    PYTHONPATH=build/python /usr/bin/python3 bench/cpu_compare.py [--models resnet18,encoder] [--iters 20]

Both sides use every core (torch.set_num_threads; kiln's OpenBLAS threads follow
OPENBLAS_NUM_THREADS, default all). Random weights; the numbers say nothing about accuracy.
"""
import argparse
import os
import statistics
import sys
import time

import torch

import kiln
from table import print_markdown


def resnet18():
    import torchvision
    return torchvision.models.resnet18(), lambda b: (torch.randn(b, 3, 224, 224),)


def mobilenet_v2():
    import torchvision
    return torchvision.models.mobilenet_v2(), lambda b: (torch.randn(b, 3, 224, 224),)


def encoder():
    """A BERT-sized encoder slice: 4 post-norm layers, width 768, 12 heads, sequence 128."""
    layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, batch_first=True, activation="gelu")
    return torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False), lambda b: (torch.randn(b, 128, 768),)


def mlp():
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024))
    return model, lambda b: (torch.randn(b, 1024),)


MODELS = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "encoder": encoder, "mlp": mlp}


def median_ms(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def bench(name, batch, iters, with_tc):
    torch.manual_seed(0)
    model, make_inputs = MODELS[name]()
    model = model.eval()
    inputs = make_inputs(batch)
    row = {"model": name, "batch": batch}
    with torch.no_grad():
        want = first(model(*inputs))
        row["eager"] = median_ms(lambda: model(*inputs), iters)
        t0 = time.perf_counter()
        compiled = kiln.compile(model, arg_inputs=inputs, min_block_size=1)
        row["kiln_build_s"] = time.perf_counter() - t0
        row["fallback_ops"] = sum(n.op == "call_function" for n in compiled.graph.nodes)
        row["max_abs_diff"] = (first(compiled(*inputs)) - want).abs().max().item()
        row["kiln"] = median_ms(lambda: compiled(*inputs), iters)
        if with_tc:
            tc = torch.compile(model)
            t0 = time.perf_counter()
            tc(*inputs)
            row["tc_compile_s"] = time.perf_counter() - t0
            row["tc"] = median_ms(lambda: tc(*inputs), iters)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with_tc = hasattr(torch, "compile")
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, date {time.strftime('%Y-%m-%d')}", file=sys.stderr)
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            try:
                rows.append(bench(name, batch, args.iters, with_tc))
            except Exception as e:  # one model's failure must not hide the others' numbers
                rows.append({"model": name, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            print(rows[-1], file=sys.stderr)
    cols = ["model", "batch", "eager", "kiln", "kiln/eager"] + (["tc", "kiln/tc"] if with_tc else []) + \
           ["kiln build s", "fallback ops", "max |kiln - eager|"]
    print_markdown(cols, rows, lambda r: [
        r["model"], str(r["batch"]), f"{r['eager']:.2f} ms", f"{r['kiln']:.2f} ms", f"{r['eager'] / r['kiln']:.2f}x",
        *([f"{r['tc']:.2f} ms", f"{r['tc'] / r['kiln']:.2f}x"] if with_tc else []),
        f"{r['kiln_build_s']:.1f}", str(r["fallback_ops"]), f"{r['max_abs_diff']:.1e}"])

if __name__ == "__main__":
    main()
