#!/usr/bin/env python3
"""Soak test: many compiles and many runs in one process, with the process's memory watched.

    PYTHONPATH=build/python python3 bench/soak.py [--cycles 1000] [--runs 100000] [--device cpu]

Phase 1 (cycles): each cycle builds a fresh small model (a 3-layer MLP with GELU; every 10th cycle
a small conv net), compiles it with kiln.compile (every 4th cycle with a dynamic batch dimension),
runs it once and compares with PyTorch; every 5th cycle also saves the compiled module to a .kiln
file and runs what kiln.load gives back. Nothing is kept from one cycle to the next.
Phase 2 (runs): one compiled module (dynamic batch 1..16) is called `--runs` times with inputs of
four shapes (batch 1, 3, 8, 16), every 1000th result compared with PyTorch.

The resident set size (RSS, /proc/self/statm) is sampled through both phases (after gc.collect()).
Each phase reports RSS at its start, after its warm-up (the first `--warmup` fraction of its
iterations) and at its end, plus the least-squares slope of RSS after warm-up in KiB per 1,000
iterations. The exit code is 1 when, in either phase, RSS at the end exceeds RSS after warm-up by
more than --max-growth-mib or by more than --max-growth-pct percent; 2 when a result is wrong.
Not part of ctest (a full run takes several minutes).
"""
import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings

import torch

import kiln

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


def sample():
    gc.collect()
    return rss_kib()


def mlp(width=64):
    return torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.GELU(), torch.nn.Linear(width, width),
                               torch.nn.GELU(), torch.nn.Linear(width, 10)).eval()


def convnet():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()


def check(got, want, what):
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
        print(f"soak: WRONG RESULT in {what}: max diff "
              f"{(got - want).abs().max().item() if got.shape == want.shape else 'shape ' + str(got.shape)}",
              file=sys.stderr)
        sys.exit(2)


def slope_kib_per_1000(points):
    """Least-squares slope of (iteration, rss KiB) points, per 1,000 iterations."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    return 1000.0 * sxy / sxx if sxx else 0.0


class Watch:
    def __init__(self, name, total, warmup_frac, samples):
        self.name, self.total = name, total
        self.warm_at = max(1, int(total * warmup_frac))
        self.every = max(1, total // samples)
        self.points = [(0, sample())]
        self.start = self.points[0][1]
        self.warm = None
        self.t0 = time.time()

    def tick(self, i):
        """Call after iteration i (1-based)."""
        if i == self.warm_at:
            self.warm = sample()
            self.points.append((i, self.warm))
        elif i % self.every == 0 or i == self.total:
            self.points.append((i, sample()))

    def result(self):
        end = self.points[-1][1]
        after = [p for p in self.points if p[0] >= self.warm_at]
        return {"phase": self.name, "iterations": self.total, "seconds": round(time.time() - self.t0, 1),
                "warmup_iterations": self.warm_at, "rss_start_kib": self.start, "rss_warm_kib": self.warm,
                "rss_end_kib": end, "rss_max_after_warm_kib": max(p[1] for p in after),
                "growth_after_warm_kib": end - self.warm,
                "slope_kib_per_1000": round(slope_kib_per_1000(after), 1), "samples": len(self.points)}


def cycles(n, device, args, tmpdir):
    w = Watch("compile+run cycles", n, args.warmup, args.samples)
    dyn = kiln.Input(min_shape=(1, 32), opt_shape=(4, 32), max_shape=(16, 32))
    for i in range(1, n + 1):
        torch.manual_seed(i)
        if i % 10 == 0:
            model, x, example = convnet(), torch.randn(2, 3, 16, 16), None
        else:
            model, x = mlp(), torch.randn(4, 32)
            example = dyn if i % 4 == 0 else None
        with torch.no_grad():
            want = model(x)
            compiled = kiln.compile(model, (example if example is not None else x,), min_block_size=1, device=device)
            check(compiled(x), want, f"cycle {i}")
            if i % 5 == 0:
                path = os.path.join(tmpdir, "soak.kiln")
                kiln.save(compiled, path)
                loaded = kiln.load(path)
                check(loaded(x), want, f"cycle {i} (kiln.load)")
                del loaded
        del model, compiled
        w.tick(i)
        if args.progress and i % max(1, n // 10) == 0:
            print(f"  cycles {i}/{n}: rss {rss_kib() / 1024:.1f} MiB, {time.time() - w.t0:.0f} s", flush=True)
    return w.result()


def runs(n, device, args):
    torch.manual_seed(0)
    model = mlp()
    compiled = kiln.compile(model, (kiln.Input(min_shape=(1, 32), opt_shape=(8, 32), max_shape=(16, 32)),),
                            min_block_size=1, device=device)
    xs = [torch.randn(b, 32, device=device) for b in (1, 3, 8, 16)]
    with torch.no_grad():
        wants = [model.to(device)(x) for x in xs]
    w = Watch("runs of one module", n, args.warmup, args.samples)
    with torch.no_grad():
        for i in range(1, n + 1):
            k = i % len(xs)
            y = compiled(xs[k])
            if i % 1000 == 0:
                check(y, wants[k], f"run {i}")
            del y
            w.tick(i)
            if args.progress and i % max(1, n // 10) == 0:
                print(f"  runs {i}/{n}: rss {rss_kib() / 1024:.1f} MiB, {time.time() - w.t0:.0f} s", flush=True)
    return w.result()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=100000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of each phase counted as warm-up (0.1)")
    ap.add_argument("--samples", type=int, default=100, help="RSS samples per phase (about; 100)")
    ap.add_argument("--max-growth-mib", type=float, default=50.0)
    ap.add_argument("--max-growth-pct", type=float, default=10.0)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--quiet", dest="progress", action="store_false")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # the acceleration report of each compile

    print(f"soak: kiln {kiln.__version__}, torch {torch.__version__}, device {args.device}, pid {os.getpid()}, "
          f"rss at start {rss_kib() / 1024:.1f} MiB", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="kiln-soak-") as tmpdir:
        if args.cycles:
            results.append(cycles(args.cycles, args.device, args, tmpdir))
        if args.runs:
            results.append(runs(args.runs, args.device, args))

    failed = False
    for r in results:
        limit = min(args.max_growth_mib * 1024, r["rss_warm_kib"] * args.max_growth_pct / 100)
        r["limit_kib"] = int(limit)
        r["ok"] = r["growth_after_warm_kib"] <= limit
        failed |= not r["ok"]
        print(f"{r['phase']}: {r['iterations']} in {r['seconds']} s; RSS start {r['rss_start_kib'] / 1024:.1f} MiB, "
              f"after {r['warmup_iterations']} warm-up {r['rss_warm_kib'] / 1024:.1f} MiB, "
              f"end {r['rss_end_kib'] / 1024:.1f} MiB (max after warm-up {r['rss_max_after_warm_kib'] / 1024:.1f}); "
              f"growth after warm-up {r['growth_after_warm_kib']} KiB (limit {r['limit_kib']}), "
              f"slope {r['slope_kib_per_1000']} KiB per 1,000 -> {'ok' if r['ok'] else 'GROWS'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
