#!/usr/bin/env python3
"""How long kiln takes to build a model on the GPU, with and without its timing cache.

Build time here is what a user waits for: kiln.compile plus the first call (the first call is when
each convolution and GEMM shape times its candidate kernels). For each model and batch, two fresh
processes share one new timing-cache file (KILN_TIMING_CACHE): the first starts with it empty (every
choice timed), the second finds the first's choices. Models and inputs are bench/gpu_compare.py's.

    PYTHONPATH=build-gpu/python python3 bench/build_time.py --models resnet50,convnext_tiny --batches 32
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(name, batch):
    sys.path.insert(0, HERE)
    import torch
    import gpu_compare
    import kiln

    name = gpu_compare.canonical(name)
    model, make_inputs, _ = gpu_compare.build(name, device="cuda")
    model = model.to("cuda", torch.float16)
    inputs = [t.to("cuda") if not t.is_floating_point() else t.to("cuda", torch.float16) for t in make_inputs(batch)]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        compiled = kiln.compile(model, arg_inputs=inputs, precision="fp16", device="cuda", min_block_size=1)
        t1 = time.perf_counter()
        compiled(*inputs)
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    print(json.dumps({"compile_s": t1 - t0, "first_call_s": t2 - t1}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,convnext_tiny,efficientnet_b0,regnet_y_800mf,mobilenet_v3_large")
    ap.add_argument("--batches", default="32")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    print("| model | batch | cold: compile + first call s | warm: compile + first call s | choices cached |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                cache = os.path.join(tmp, "timing_cache.json")
                env = dict(os.environ, KILN_TIMING_CACHE=cache)
                runs = []
                for state in ("cold", "warm"):
                    try:
                        p = subprocess.run([sys.executable, __file__, "--worker", name, str(batch)], env=env,
                                           capture_output=True, text=True, timeout=args.timeout)
                    except subprocess.TimeoutExpired:
                        runs.append(None)
                        print(f"{name} b{batch} {state}: timed out", file=sys.stderr)
                        continue
                    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
                    if p.returncode != 0 or not lines:
                        print(f"{name} b{batch} {state}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
                        runs.append(None)
                        continue
                    runs.append(json.loads(lines[-1]))
                    print(f"{name} b{batch} {state}: {runs[-1]}", file=sys.stderr)
                entries = 0
                if os.path.exists(cache):
                    with open(cache) as f:
                        entries = sum(len(v) for v in json.load(f)["devices"].values())

                def cell(r):
                    return "failed" if r is None else \
                        f"{r['compile_s'] + r['first_call_s']:.1f} ({r['compile_s']:.1f} + {r['first_call_s']:.1f})"
                print(f"| {name} | {batch} | {cell(runs[0])} | {cell(runs[1])} | {entries} |", flush=True)


if __name__ == "__main__":
    main()
