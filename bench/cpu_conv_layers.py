#!/usr/bin/env python3
"""kiln's CPU 3x3 convolutions at resnet's four layer widths (64@56², 128@28², 256@14², 512@7²,
padding 1), batch 1 and 8, through kiln.compile: median latency, throughput in direct-convolution
GFLOP/s (so Winograd's saved multiplies show as more than the GEMM peak) and the largest
difference from PyTorch. Markdown on stdout.

    PYTHONPATH=build/python /usr/bin/python3 bench/cpu_conv_layers.py [--iters 15]
"""
import argparse

import torch

import kiln
from cpu_compare import median_ms
from table import print_markdown


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=15)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for channels, size in ((64, 56), (128, 28), (256, 14), (512, 7)):
        for batch in (1, 8):
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
            x = torch.randn(batch, channels, size, size)
            compiled = kiln.compile(conv, arg_inputs=(x,), min_block_size=1)
            with torch.no_grad():
                diff = (compiled(x) - conv(x)).abs().max().item()
                ms = median_ms(lambda: compiled(x), args.iters)
            rows.append({"model": f"{channels}ch {size}x{size}", "batch": batch, "ms": ms,
                         "gflops": 2 * batch * channels * channels * 9 * size * size / ms / 1e6, "diff": diff})
    print_markdown(["layer", "batch", "kiln", "GFLOP/s (direct-conv count)", "max |kiln - torch|"], rows,
                   lambda r: [r["model"], str(r["batch"]), f"{r['ms']:.2f} ms", f"{r['gflops']:.0f}", f"{r['diff']:.1e}"])


if __name__ == "__main__":
    main()
