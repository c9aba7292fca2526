"""Where kiln's device memory goes for one suite model: the device's free memory before and after
each stage (kiln.compile, the first call, which chooses tactics, and later calls), beside the plan's
own weights and activations and the CUDA scratch the backend keeps. The suite's "MiB kiln" column
is the plan's figure; this shows what else a process pays (library handles, loaded kernels,
scratch) and which stage pays it.

    PYTHONPATH=build-gpu/python python3 bench/memory_probe.py --models regnet-y-800mf,mobilenet-v3-large --batch 32
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_compare  # noqa: E402  (the suite's models and their inputs)
import kiln  # noqa: E402

MiB = 2**20


def free_mib():
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0] / MiB


def probe(name, batch, precision):
    model, make_inputs, _ = gpu_compare.build(name, "cuda")
    model = model.to("cuda").to(torch.float16 if precision == "fp16" else torch.float32)
    inputs = tuple(t.to("cuda") for t in make_inputs(batch))
    inputs = tuple(t.half() if t.is_floating_point() and precision == "fp16" else t for t in inputs)
    torch.cuda.empty_cache()
    stages = [("start", free_mib())]
    with torch.no_grad():
        compiled = kiln.compile(model, arg_inputs=inputs, precision=precision, device="cuda", min_block_size=1)
        stages.append(("kiln.compile", free_mib()))
        compiled(*inputs)
        stages.append(("first call (tactics)", free_mib()))
        for _ in range(3):
            compiled(*inputs)
        stages.append(("calls 2-4 (graph recorded, replayed)", free_mib()))
    summary = compiled.program.summary()
    print(f"{name} batch {batch} {precision}: torch holds {torch.cuda.memory_allocated() / MiB:.1f} MiB "
          f"(model weights and inputs)")
    for (_, before), (stage, after) in zip(stages, stages[1:]):
        print(f"  {stage:<40} {before - after:8.1f} MiB of device memory")
    print(f"  {'total':<40} {stages[0][1] - stages[-1][1]:8.1f} MiB")
    for line in summary.splitlines():
        if "weights" in line or "activations" in line or "scratch" in line:
            print("  plan: " + line.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="comma-separated suite model names (gpu_compare.py --list)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("memory_probe: needs a CUDA device")
    for name in args.models.split(","):
        probe(gpu_compare.canonical(name.strip()), args.batch, args.precision)


if __name__ == "__main__":
    main()
