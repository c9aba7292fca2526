"""Calls compiled kiln modules from many Python threads at once and compares every result with a
serial run of the same inputs (issue 17: one module called from 4 threads deadlocked every time).

Run as a script, in a process of its own: a deadlock that holds the GIL stops every thread of the
interpreter, the one that would notice it included, so only a parent with a timeout can tell.

    PYTHONPATH=build/python python3 tests/python/thread_stress.py --threads 8 --calls 1000

Prints one line "ok <calls> calls ... in <seconds> s" and exits 0 when every result matches;
exits 1 naming the first mismatch or error.
"""
import argparse
import sys
import threading
import time

import torch

import kiln


class Block(torch.nn.Module):
    """Linear -> GELU -> Linear -> LayerNorm -> ReLU: one accelerated segment, or two around a
    PyTorch fallback op when GELU is left to torch."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 32)
        self.b = torch.nn.Linear(32, 16)
        self.n = torch.nn.LayerNorm(16)

    def forward(self, x):
        return torch.relu(self.n(self.b(torch.nn.functional.gelu(self.a(x)))))


def build_modules():
    """(name, compiled module, input row width): a dynamic-batch module all in kiln, the same with a
    fallback op between two segments, and a static-shape one."""
    torch.manual_seed(0)
    m = Block().eval()
    spec = kiln.Input(min_shape=(1, 16), opt_shape=(4, 16), max_shape=(64, 16))
    whole = kiln.compile(m, arg_inputs=(spec,), min_block_size=1)
    mixed = kiln.compile(m, arg_inputs=(spec,), min_block_size=1, torch_executed_ops={torch.ops.aten.gelu.default})
    static = kiln.compile(m, arg_inputs=(torch.randn(5, 16),), min_block_size=1)
    assert "aten.gelu.default" in str(mixed.graph) and "_run_on_acc_1" in str(mixed.graph), mixed.graph
    return [("whole", whole, None), ("fallback", mixed, None), ("static", static, 5)]


def make_calls(modules, count, seed):
    """`count` (module index, input) pairs with mixed batch sizes."""
    g = torch.Generator().manual_seed(seed)
    calls = []
    for i in range(count):
        k = i % len(modules)
        batch = modules[k][2] or int(torch.randint(1, 65, (1,), generator=g))
        calls.append((k, torch.randn(batch, 16, generator=g)))
    return calls


def run(threads, calls_per_thread, timeout):
    modules = build_modules()
    work = [make_calls(modules, calls_per_thread, seed=t) for t in range(threads)]
    with torch.no_grad():
        want = [[modules[k][1](x) for k, x in calls] for calls in work]  # the serial run
    got = [[None] * calls_per_thread for _ in range(threads)]
    errors = []
    start = threading.Barrier(threads)

    def worker(t):
        try:
            start.wait()  # all threads call at once
            with torch.no_grad():
                for i, (k, x) in enumerate(work[t]):
                    got[t][i] = modules[k][1](x)
        except BaseException as e:  # reported by the main thread
            errors.append(f"thread {t}: {type(e).__name__}: {e}")

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout)
        if th.is_alive():
            print(f"FAIL: thread still running after {timeout} s (a deadlock?)", flush=True)
            return 1
    elapsed = time.perf_counter() - t0
    if errors:
        print("FAIL: " + errors[0], flush=True)
        return 1
    for t in range(threads):
        for i, (k, x) in enumerate(work[t]):
            a, b = got[t][i], want[t][i]
            # The same plan on the same inputs; only the split of work over the CPU worker threads
            # may differ between a serial and a concurrent call, so allow float rounding, no more.
            if a is None or a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-5):
                print(f"FAIL: thread {t} call {i} ({modules[k][0]}, input {tuple(x.shape)}) differs from the "
                      f"serial run: max |diff| {(a - b).abs().max().item() if a is not None else 'none'}", flush=True)
                return 1
    print(f"ok {threads * calls_per_thread} calls from {threads} threads over {len(modules)} modules "
          f"in {elapsed:.2f} s", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--calls", type=int, default=1000, help="calls per thread")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a thread may take")
    args = ap.parse_args()
    sys.exit(run(args.threads, args.calls, args.timeout))


if __name__ == "__main__":
    main()
