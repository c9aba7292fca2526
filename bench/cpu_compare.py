#!/usr/bin/env python3
"""kiln's CPU backend beside ONNX Runtime and PyTorch eager (and torch.compile where this PyTorch
has it), fp32, on one machine in one run: per model and batch, the median latency of each in
interleaved timing rounds (each round times every method in turn, the order rotated; a round's
value is the median of its calls), with the min-max of the round medians; build / session times;
every result's largest difference from eager. One markdown table on stdout, progress on stderr.

    PYTHONPATH=build/python /usr/bin/python3 bench/cpu_compare.py [--models resnet18,encoder] \\
        [--batches 1,8] [--rounds 3] [--iters 10] [--threads N] [--no-ort]

--models takes the names below or any torchvision classification model's (regnet_y_800mf, ...).

ONNX Runtime is npm's onnxruntime-node (CPU provider, all graph optimizations), installed on first
use into bench/ort/node_modules with --ignore-scripts (its install script only fetches a GPU
provider); it runs the model as PyTorch exports it to ONNX (opset 17), in a node process
(bench/ort/runner.js) timing session.run itself. Every method gets the same thread count
(--threads, default every core): torch.set_num_threads, KILN_NUM_THREADS / OPENBLAS_NUM_THREADS,
and ONNX Runtime's intra-op threads. Random weights; the numbers say nothing about accuracy.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ORT_DIR = os.path.join(HERE, "ort")


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,resnet18,mobilenet_v2,mobilenet_v3_large,efficientnet_b0,resnet50,convnext_tiny,"
                                        "googlenet,vit_s16,encoder")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10, help="timed calls per method per round")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-ort", action="store_true", help="leave ONNX Runtime out")
    return ap.parse_args()


ARGS = parse_args()
# Before torch and kiln load their thread pools.
os.environ["KILN_NUM_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import kiln  # noqa: E402
from table import print_markdown  # noqa: E402


def mlp():
    """4 Linear layers of width 1024 with GELU between them."""
    layers = []
    for i in range(4):
        layers += [torch.nn.Linear(1024, 1024)] + ([torch.nn.GELU()] if i < 3 else [])
    return torch.nn.Sequential(*layers), lambda b: (torch.randn(b, 1024),)


def torchvision_model(name, kaiming=False):
    """`kaiming`: convolution weights re-drawn with He initialisation, for a model whose own random
    initialisation makes the activations vanish (googlenet's: its output is then the classifier's
    bias alone, and the agreement column compares nothing)."""
    def make():
        import torchvision
        model = getattr(torchvision.models, name)()
        if kaiming:
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        return model, lambda b: (torch.randn(b, 3, 224, 224),)
    return make


def vit_s16():
    """A ViT-S/16-sized vision transformer (12 layers, width 384, 6 heads) at 224x224."""
    from torchvision.models.vision_transformer import VisionTransformer
    model = VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises it: all-zero logits
    return model, lambda b: (torch.randn(b, 3, 224, 224),)


def encoder():
    """A BERT-base-sized encoder slice: 4 post-norm layers, width 768, 12 heads, sequence 128."""
    layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, batch_first=True, activation="gelu")
    return torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False), lambda b: (torch.randn(b, 128, 768),)


MODELS = {"mlp": mlp, "resnet18": torchvision_model("resnet18"), "mobilenet_v2": torchvision_model("mobilenet_v2"),
          "efficientnet_b0": torchvision_model("efficientnet_b0"), "resnet50": torchvision_model("resnet50"),
          "convnext_tiny": torchvision_model("convnext_tiny"), "vit_s16": vit_s16, "encoder": encoder,
          "mobilenet_v3_large": torchvision_model("mobilenet_v3_large"),
          "googlenet": torchvision_model("googlenet", kaiming=True)}  # inception blocks: concatenations between convolutions


def model_factory(name):
    """A model of the list above, or any torchvision classification model by its name (a model the
    benchmark does not hold, at 224x224)."""
    if name in MODELS:
        return MODELS[name]
    import torchvision
    if callable(getattr(torchvision.models, name, None)) and not name.startswith("_"):
        return torchvision_model(name)
    sys.exit(f"cpu_compare: unknown model {name!r}: one of {', '.join(MODELS)} or a torchvision.models name")


class OnnxRuntime:
    """A node process running bench/ort/runner.js; installs onnxruntime-node on first use."""

    def __init__(self, threads):
        if not os.path.isdir(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
            if not shutil.which("npm"):
                raise RuntimeError("ONNX Runtime needs node and npm (apt-get install nodejs npm)")
            print("installing onnxruntime-node from npm into bench/ort ...", file=sys.stderr)
            subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=ORT_DIR, check=True,
                           stdout=sys.stderr)
        self.threads = threads
        self.proc = subprocess.Popen(["node", os.path.join(ORT_DIR, "runner.js")], cwd=ORT_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline() or '{"error": "the ONNX Runtime process ended"}')
        if "error" in answer:
            raise RuntimeError(f"ONNX Runtime: {answer['error']}")
        return answer

    def load(self, path):
        return self.ask({"cmd": "load", "model": path, "threads": self.threads})

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def median_ms(fn, iters, warmup=2):
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


def relative_diff(got, want):
    got, want = np.asarray(got, dtype=np.float64), want.detach().double().numpy()
    return float(np.abs(got.reshape(want.shape) - want).max() / max(np.abs(want).max(), 1e-30))


def bench(name, batch, ort, work):
    torch.manual_seed(0)
    model, make_inputs = model_factory(name)()
    model = model.eval()
    inputs = make_inputs(batch)
    row = {"model": name, "batch": batch}
    methods = {}
    with torch.no_grad():
        want = first(model(*inputs))
        methods["eager"] = lambda: model(*inputs)
        t0 = time.perf_counter()
        compiled = kiln.compile(model, arg_inputs=inputs, min_block_size=1)
        row["kiln_build_s"] = time.perf_counter() - t0
        row["fallback_ops"] = sum(n.op == "call_function" for n in compiled.graph.nodes)
        row["kiln_diff"] = relative_diff(first(compiled(*inputs)).numpy(), want)
        methods["kiln"] = lambda: compiled(*inputs)
        if ort:
            path = os.path.join(work, f"{name}_{batch}.onnx")
            t0 = time.perf_counter()
            with torch.enable_grad():  # else PyTorch exports its fused attention fast path, which ONNX lacks
                torch.onnx.export(model, inputs, path, opset_version=17, do_constant_folding=True)
            loaded = ort.load(path)
            row["ort_build_s"] = time.perf_counter() - t0
            specs = []
            for i, t in enumerate(inputs):
                p = os.path.join(work, f"{name}_{batch}_in{i}.bin")
                t.numpy().astype(np.float32).tofile(p)
                specs.append({"path": p, "dims": list(t.shape)})
            out = os.path.join(work, f"{name}_{batch}_out.bin")
            ort.ask({"cmd": "run", "inputs": specs, "iters": 1, "warmup": 1, "out": out})
            row["ort_diff"] = relative_diff(np.fromfile(out, dtype=np.float32), want)
            row["ort_session_ms"] = loaded["load_ms"]
            # ONNX Runtime times its own calls; this method runs a whole round's calls in one request.
            methods["ort"] = lambda: statistics.median(
                ort.ask({"cmd": "run", "inputs": specs, "iters": ARGS.iters, "warmup": 2})["times_ms"])
        if hasattr(torch, "compile"):
            tc = torch.compile(model)
            t0 = time.perf_counter()
            tc(*inputs)
            row["tc_compile_s"] = time.perf_counter() - t0
            methods["tc"] = lambda: tc(*inputs)
        per_round = {m: [] for m in methods}
        names = list(methods)
        for r in range(ARGS.rounds):
            for m in names[r % len(names):] + names[:r % len(names)]:
                per_round[m].append(methods[m]() if m == "ort" else median_ms(methods[m], ARGS.iters))
    for m, values in per_round.items():
        row[m] = statistics.median(values)
        row[m + "_spread"] = (min(values), max(values))
    return row


def fmt(r, m):
    lo, hi = r[m + "_spread"]
    return f"{r[m]:.2f} ({lo:.2f}–{hi:.2f})"


def main():
    for name in ARGS.models.split(","):
        model_factory(name)  # an unknown name stops the run before anything is timed
    torch.set_num_threads(ARGS.threads)
    ort = None if ARGS.no_ort else OnnxRuntime(ARGS.threads)
    with_tc = hasattr(torch, "compile")
    print(f"torch {torch.__version__}, {ARGS.threads} threads of {os.cpu_count()} cores, "
          f"{ARGS.rounds} rounds of {ARGS.iters} calls, date {time.strftime('%Y-%m-%d')}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in ARGS.models.split(","):
            for batch in (int(b) for b in ARGS.batches.split(",")):
                try:
                    rows.append(bench(name, batch, ort, work))
                except Exception as e:  # one model's failure must not hide the others' numbers
                    rows.append({"model": name, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:200]}"})
                print(rows[-1], file=sys.stderr)
    if ort:
        ort.close()
    cols = ["model", "batch", "eager ms", "kiln ms", "kiln vs eager"]
    cols += ["ONNX Runtime ms", "kiln vs ORT"] if ort else []
    cols += ["tc ms", "kiln vs tc"] if with_tc else []
    cols += ["kiln build s"] + (["ORT export+session s"] if ort else []) + ["fallback ops", "max rel. diff kiln / ORT"]
    print_markdown(cols, rows, lambda r: [
        r["model"], str(r["batch"]), fmt(r, "eager"), fmt(r, "kiln"), f"{r['eager'] / r['kiln']:.2f}×",
        *([fmt(r, "ort"), f"{r['ort'] / r['kiln']:.2f}×"] if ort else []),
        *([fmt(r, "tc"), f"{r['tc'] / r['kiln']:.2f}×"] if with_tc else []),
        f"{r['kiln_build_s']:.1f}", *([f"{r['ort_build_s']:.1f}"] if ort else []), str(r["fallback_ops"]),
        f"{r['kiln_diff']:.1e} / {r['ort_diff']:.1e}" if ort else f"{r['kiln_diff']:.1e}"])


if __name__ == "__main__":
    main()
