"""Where KILN_CUDA_IN_PLACE_RESIDUALS=1 changes a network's result: compiles growing prefixes of a
torchvision model's `features` (random weights, batch norms calibrated) with the residual in-place
rule off and on, and prints, per prefix, how far the two outputs are apart. The two plans run the
same kernels on different buffers, so a correct in-place plan gives the same bits; the first
prefix that differs names the block to look at.

    PYTHONPATH=build-gpu/python python3 bench/inplace_bisect.py --model mobilenet_v2 --dtype bf16
"""
import argparse
import os

import torch
import torchvision

import kiln


def calibrate(model, x):
    """Running statistics from random inputs, so bf16 activations keep a meaningful range."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    model.eval()


def compiled_output(module, x, in_place, precision):
    os.environ["KILN_CUDA_IN_PLACE_RESIDUALS"] = "1" if in_place else "0"
    try:
        c = kiln.compile(module, arg_inputs=(x,), min_block_size=1, precision=precision)
        with torch.no_grad():
            return c(x).float(), c.program.fallback_ops()
    finally:
        os.environ.pop("KILN_CUDA_IN_PLACE_RESIDUALS", None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--dtype", default="bf16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cuda", help="cpu only checks the script: the rule is CUDA's")
    args = ap.parse_args()
    torch.manual_seed(0)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    model = torchvision.models.__dict__[args.model]()
    x32 = torch.randn(2, 3, args.size, args.size)
    calibrate(model, x32)
    features = model.features.to(args.device, dtype).to(memory_format=torch.channels_last)
    x = x32.to(args.device, dtype).contiguous(memory_format=torch.channels_last)
    precision = None if args.dtype == "fp32" else args.dtype
    print(f"{args.model} features, {args.dtype}, input {tuple(x.shape)}: in-place rule off vs on, per prefix")
    for k in range(1, len(features) + 1):
        prefix = features[:k]
        off, fb_off = compiled_output(prefix, x, False, precision)
        on, fb_on = compiled_output(prefix, x, True, precision)
        with torch.no_grad():
            want = prefix(x).float()
        scale = want.abs().max().item() or 1.0
        apart = (on - off).abs().max().item() / scale
        print(f"  features[:{k:2d}] {type(features[k - 1]).__name__:18s} on vs off {apart:.3e}  "
              f"off vs torch {(off - want).abs().max().item() / scale:.3e}  "
              f"on vs torch {(on - want).abs().max().item() / scale:.3e}"
              + (f"  fallback {fb_off} / {fb_on}" if fb_off or fb_on else ""), flush=True)


if __name__ == "__main__":
    main()
