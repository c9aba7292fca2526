#!/usr/bin/env python3
"""kiln beside PyTorch eager and torch.compile on the GPU, in one process, fp16, random weights.

For each model and batch: export with torch.export, compile with kiln, and time kiln, eager,
torch.compile (default) and torch.compile (mode="reduce-overhead") with CUDA events; report each
one's compile time, kiln's device memory, and kiln's agreement with eager (cosine similarity).
Prints one markdown table with ratios (speed-up of kiln over each baseline).

    PYTHONPATH=build/python python3 bench/gpu_compare.py [--models resnet50,bert] [--batches 1,32]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from table import print_markdown

try:
    import kiln
except ImportError:  # --cli needs only the kiln binary
    kiln = None


def resnet50():
    import torchvision
    return torchvision.models.resnet50(), lambda b: (torch.randn(b, 3, 224, 224),)


def vit_b16():
    import torchvision
    model = torchvision.models.vit_b_16()
    # torchvision zero-initializes the classifier head: every output would be 0 and agreement
    # with eager would say nothing.
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model, lambda b: (torch.randn(b, 3, 224, 224),)


class HiddenState(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state


def bert_base():
    from transformers import BertConfig, BertModel
    model = HiddenState(BertModel(BertConfig(), add_pooling_layer=False))
    return model, lambda b: (torch.randint(0, 30522, (b, 128)),)


def gpt2():
    from transformers import GPT2Config, GPT2Model
    model = HiddenState(GPT2Model(GPT2Config()))
    return model, lambda b: (torch.randint(0, 50257, (b, 512)),)


MODELS = {"resnet50": resnet50, "bert-base": bert_base, "vit-b16": vit_b16, "gpt2": gpt2}


def cuda_time_ms(fn, iters, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def timed_first_call(make, inputs):
    """Compile time of a lazily compiling callable: its first call."""
    t0 = time.perf_counter()
    fn = make()
    with torch.no_grad():
        fn(*inputs)
    torch.cuda.synchronize()
    return fn, time.perf_counter() - t0


def time_torch_compile(row, model, inputs, iters, modes):
    """Each torch.compile mode's latency and compile time (its first call) into `row`."""
    for mode in modes:
        torch._dynamo.reset()
        kwargs = {} if mode == "default" else {"mode": mode}
        fn, secs = timed_first_call(lambda: torch.compile(model, **kwargs), inputs)
        row[f"tc_{mode}"] = cuda_time_ms(lambda: fn(*inputs), iters)
        row[f"tc_{mode}_compile_s"] = secs
        del fn


def cosine(a, b):
    a, b = a.float().flatten(), b.float().flatten()
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def bench_one(name, batch, iters, modes):
    torch.manual_seed(0)
    model, make_inputs = MODELS[name]()
    model = model.eval().half().cuda()
    inputs = tuple(t.cuda() if not t.is_floating_point() else t.half().cuda() for t in make_inputs(batch))
    row = {"model": name, "batch": batch}
    with torch.no_grad():
        reference = model(*inputs)
        row["eager"] = cuda_time_ms(lambda: model(*inputs), iters)

        free_before = torch.cuda.mem_get_info()[0]
        t0 = time.perf_counter()
        compiled = kiln.compile(model, arg_inputs=inputs, precision="fp16", device="cuda", min_block_size=1)
        row["kiln_compile_s"] = time.perf_counter() - t0
        out = compiled(*inputs)
        torch.cuda.synchronize()
        row["kiln_mem_mb"] = (free_before - torch.cuda.mem_get_info()[0]) / 2**20
        row["cosine"] = cosine(out, reference)
        row["kiln"] = cuda_time_ms(lambda: compiled(*inputs), iters)
        del compiled

        time_torch_compile(row, model, inputs, iters, modes)
    return row


def bench_one_cli(name, batch, iters, modes, kiln_bin, profile=False, keep=""):
    """kiln through its CLI: export (fp32) to .pt2, `kiln compile --precision fp16 --device cuda`,
    `kiln bench`, which (since 2026-11-27's measurements) keeps inputs and outputs on the GPU as
    eager's tensors are (`--with-copies` gives the old numbers, host copies included)."""
    torch.manual_seed(0)
    model, make_inputs = MODELS[name]()
    model = model.eval()
    host_inputs = make_inputs(batch)
    row = {"model": name, "batch": batch}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        if keep:  # the exported program, inputs and .kiln stay for a closer look
            tmp = os.path.join(keep, f"{name}_b{batch}")
            os.makedirs(tmp, exist_ok=True)
        ep = torch.export.export(model, host_inputs)
        pt2 = os.path.join(tmp, "model.pt2")
        torch.export.save(ep, pt2)
        del ep
        paths = []
        for i, t in enumerate(host_inputs):
            paths.append(os.path.join(tmp, f"input_{i}.npy"))
            np.save(paths[-1], t.numpy())
        args = [a for p in paths for a in ("--input", p)]
        t0 = time.perf_counter()
        built = subprocess.run([kiln_bin, "compile", pt2, "-o", os.path.join(tmp, "m.kiln"), "--precision", "fp16",
                                "--device", "cuda", "--min-block-size", "1"], check=True, capture_output=True, text=True)
        row["kiln_compile_s"] = time.perf_counter() - t0
        summary = [l for l in built.stdout.splitlines() + built.stderr.splitlines()
                   if l.startswith(("segments:", "  run by PyTorch", "  _run_on_acc"))]
        print(f"--- {name} batch {batch} partition:\n" + "\n".join(summary), file=sys.stderr)
        subprocess.run([kiln_bin, "run", os.path.join(tmp, "m.kiln"), *args, "--output-dir", tmp],
                       check=True, capture_output=True, text=True)
        kiln_out = torch.from_numpy(np.load(os.path.join(tmp, "output_0.npy")))
        bench = subprocess.run([kiln_bin, "bench", os.path.join(tmp, "m.kiln"), *args, "--iters", str(iters)],
                               check=True, capture_output=True, text=True).stdout
        row["kiln"] = float(re.search(r"median ([0-9.]+) ms", bench).group(1))
        if profile:  # where kiln's time goes, layer by layer (KILN_PROFILE; kernels synchronized)
            prof = subprocess.run([kiln_bin, "bench", os.path.join(tmp, "m.kiln"), *args, "--iters", "5",
                                   "--warmup", "1"], capture_output=True, text=True,
                                  env={**os.environ, "KILN_PROFILE": "1"}).stderr
            print(f"--- {name} batch {batch}\n" + "\n".join(
                l for l in prof.splitlines() if not l.startswith("kiln: ")), file=sys.stderr)
        # device memory the plan holds: weights plus its planned activation arena
        planned = [int(w) + int(a) for w, a in re.findall(r"weights (\d+) B, activations (\d+) B", "\n".join(summary))]
        row["kiln_mem_mb"] = sum(planned) / 2**20 if planned else float("nan")
        model = model.half().cuda()
        inputs = tuple(t.cuda() if not t.is_floating_point() else t.half().cuda() for t in host_inputs)
        reference = model(*inputs)
        row["cosine"] = cosine(kiln_out, reference.cpu())
        row["eager"] = cuda_time_ms(lambda: model(*inputs), iters)
        time_torch_compile(row, model, inputs, iters, modes)
    return row


def print_table(rows, modes):
    cols = ["model", "batch", "eager", *[f"tc_{m}" for m in modes], "kiln", "kiln/eager",
            *[f"kiln/tc_{m}" for m in modes], "kiln compile s", *[f"tc_{m} compile s" for m in modes],
            "kiln mem MB", "cosine"]
    print_markdown(cols, rows, lambda r: [
        r["model"], str(r["batch"]), f"{r['eager']:.2f} ms", *[f"{r[f'tc_{m}']:.2f} ms" for m in modes],
        f"{r['kiln']:.2f} ms", f"{r['eager'] / r['kiln']:.2f}x", *[f"{r[f'tc_{m}'] / r['kiln']:.2f}x" for m in modes],
        f"{r['kiln_compile_s']:.1f}", *[f"{r[f'tc_{m}_compile_s']:.1f}" for m in modes],
        f"{r['kiln_mem_mb']:.0f}", f"{r['cosine']:.5f}"])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--modes", default="default,reduce-overhead",
                    help="torch.compile modes to compare against ('' for none)")
    ap.add_argument("--cli", default="", help="path of the kiln binary: measure kiln through its CLI")
    ap.add_argument("--profile", action="store_true", help="with --cli: print kiln's per-layer profile too")
    ap.add_argument("--keep", default="", help="with --cli: keep each model's .pt2, inputs and .kiln under this folder")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"date {time.strftime('%Y-%m-%d')}", file=sys.stderr)
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            try:
                if args.cli:
                    rows.append(bench_one_cli(name, batch, args.iters, modes, args.cli, args.profile, args.keep))
                else:
                    rows.append(bench_one(name, batch, args.iters, modes))
            except Exception as e:  # one model's failure must not hide the others' numbers
                rows.append({"model": name, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            print(rows[-1], file=sys.stderr)
            torch.cuda.empty_cache()
    print_table(rows, modes)


if __name__ == "__main__":
    main()
