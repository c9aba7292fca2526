#!/usr/bin/env python3
"""Which GPU kernels a model spends its time in, kiln beside eager (or torch.compile), from one
torch.profiler trace each: kiln's kernels show up because the Python path runs in this process.
CUDA graphs are turned off for kiln (KILN_CUDA_GRAPHS=0) so each kernel is seen on its own.

    PYTHONPATH=build-gpu/python python3 bench/kernel_trace.py --models resnet50 --batch 32
    KILN_CHANNELS_LAST=0 ... (the environment reaches kiln's builder as usual)
    --layers: kiln's own per-layer table too (KILN_PROFILE=1, printed on stderr when each compiled
    model goes away), to name the layer behind a kernel.
"""
import argparse
import os
import sys

os.environ.setdefault("KILN_CUDA_GRAPHS", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import kiln  # noqa: E402
from gpu_compare import MODELS  # noqa: E402


def kernel_table(fn, iters, rows):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.device_time_total for e in events) / iters / 1000
    print(f"  {total:.3f} ms of kernel time per call")
    print(f"  {'ms/call':>8} {'share':>6} {'calls':>6}  kernel")
    for e in events[:rows]:
        ms = e.device_time_total / iters / 1000
        print(f"  {ms:8.3f} {100 * ms / total:5.1f}% {e.count // iters:6d}  {e.key[:110]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--compare", default="eager", help="comma-separated: eager, tc (torch.compile default); '' for kiln alone")
    ap.add_argument("--layers", action="store_true", help="print kiln's per-layer profile (KILN_PROFILE=1) too")
    args = ap.parse_args()
    if args.layers:
        os.environ["KILN_PROFILE"] = "1"
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, make_inputs = MODELS[name]()
        model = model.eval().half().cuda()
        inputs = tuple(t.cuda() if not t.is_floating_point() else t.half().cuda() for t in make_inputs(args.batch))
        with torch.no_grad():
            compiled = kiln.compile(model, arg_inputs=inputs, precision="fp16", device="cuda", min_block_size=1)
            print(f"--- {name} batch {args.batch}: kiln")
            kernel_table(lambda: compiled(*inputs), args.iters, args.rows)
            del compiled
            sys.stderr.flush()
            for other in args.compare.split(","):
                if other == "eager":
                    print(f"--- {name} batch {args.batch}: eager")
                    kernel_table(lambda: model(*inputs), args.iters, args.rows)
                elif other == "tc":
                    fn = torch.compile(model)
                    print(f"--- {name} batch {args.batch}: torch.compile (default)")
                    kernel_table(lambda: fn(*inputs), args.iters, args.rows)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
