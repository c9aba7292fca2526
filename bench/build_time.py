#!/usr/bin/env python3
"""How long kiln takes to build a model, with and without its timing cache and its engine cache,
and how long a refit (new weights into the built model) takes beside that.

Build time here is what a user waits for: kiln.compile plus the first call (the first call is when
each convolution and GEMM shape times its candidate kernels). For each model and batch, three fresh
processes share one new timing-cache file (KILN_TIMING_CACHE) and one new engine-cache folder: the
first starts with both empty (every choice timed); the second finds the first's choices and stores
the compiled program (cache_built_engines); the third loads it (reuse_cached_engines). The second
also times kiln.refit with other weights of the same model, and the call after it. The capture
(kiln.compile's trace of the module, reported with verbose=True) is also shown taken out, as
Torch-TensorRT measures its engine cache from an exported program. Models and
inputs are bench/gpu_compare.py's (fp16 on the GPU; --device cpu: fp32 on the CPU).

    PYTHONPATH=build-gpu/python python3 bench/build_time.py --models resnet50,convnext_tiny --batches 32
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(name, batch, state, cache_dir, device):
    sys.path.insert(0, HERE)
    import torch
    import gpu_compare
    import kiln

    name = gpu_compare.canonical(name)
    dtype = torch.float16 if device == "cuda" else torch.float32
    model, make_inputs, _ = gpu_compare.build(name, device=device)
    model = model.to(device, dtype)
    inputs = [t.to(device) if not t.is_floating_point() else t.to(device, dtype) for t in make_inputs(batch)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    options = dict(precision="fp16" if device == "cuda" else "fp32", device=device, min_block_size=1,
                   engine_cache_dir=cache_dir, cache_built_engines=state == "warm",
                   reuse_cached_engines=state == "cached", verbose=True)
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        compiled = kiln.compile(model, arg_inputs=inputs, **options)
        t1 = time.perf_counter()
        compiled(*inputs)
        sync()
    t2 = time.perf_counter()
    result = {"compile_s": t1 - t0, "first_call_s": t2 - t1}
    if state == "warm":  # refit with other weights of the same architecture
        import copy
        other = copy.deepcopy(model)
        with torch.no_grad():
            for p in other.parameters():
                p.mul_(1.01)
            sync()
            t3 = time.perf_counter()
            kiln.refit(compiled, other)
            t4 = time.perf_counter()
            compiled(*inputs)
            sync()
        result.update(refit_s=t4 - t3, call_after_refit_s=time.perf_counter() - t4)
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,convnext_tiny,efficientnet_b0,regnet_y_800mf,mobilenet_v3_large")
    ap.add_argument("--batches", default="32")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--worker", nargs=5, metavar=("MODEL", "BATCH", "STATE", "CACHE_DIR", "DEVICE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.worker[2], args.worker[3], args.worker[4])
        return
    print("| model | batch | cold: compile + first call s | warm timing cache | engine cache hit | "
          "hit speed-up | after capture: cold / hit s (speed-up) | refit s (+ next call) | choices cached |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                cache = os.path.join(tmp, "timing_cache.json")
                env = dict(os.environ, KILN_TIMING_CACHE=cache)
                runs = []
                for state in ("cold", "warm", "cached"):
                    try:
                        p = subprocess.run([sys.executable, __file__, "--worker", name, str(batch), state,
                                            os.path.join(tmp, "engines"), args.device], env=env,
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
                    # kiln.compile's verbose account of its capture (the trace, which every compile
                    # pays, a cache hit too: the key is computed from it).
                    m = re.search(r"kiln.compile: captured in ([0-9.]+) s", p.stderr)
                    runs[-1]["capture_s"] = float(m.group(1)) if m else None
                    print(f"{name} b{batch} {state}: {runs[-1]}", file=sys.stderr)
                entries = 0
                if os.path.exists(cache):
                    with open(cache) as f:
                        entries = sum(len(v) for v in json.load(f)["devices"].values())

                def total(r):
                    return r["compile_s"] + r["first_call_s"]

                def cell(r):
                    return "failed" if r is None else f"{total(r):.2f} ({r['compile_s']:.2f} + {r['first_call_s']:.2f})"
                cold, warm, hit = runs
                speedup = f"{total(cold) / total(hit):.1f}×" if cold and hit else "-"
                refit = f"{warm['refit_s']:.2f} (+ {warm['call_after_refit_s']:.2f})" if warm else "-"
                # What the engine cache itself saves: Torch-TensorRT's measure, which starts from an
                # exported program (the capture left out on both sides).
                after = "-"
                if cold and hit and cold.get("capture_s") is not None and hit.get("capture_s") is not None:
                    c, h = total(cold) - cold["capture_s"], total(hit) - hit["capture_s"]
                    after = f"{c:.2f} / {h:.2f} ({c / h:.1f}×)"
                print(f"| {name} | {batch} | {cell(cold)} | {cell(warm)} | {cell(hit)} | {speedup} | {after} | "
                      f"{refit} | {entries} |", flush=True)


if __name__ == "__main__":
    main()
