"""Compiled modules called from many threads at once (issue 17, item 2): no deadlock, and every
result equal to a serial run's.

The calls run in a child process (tests/python/thread_stress.py): the deadlock this guards against
held the GIL, which stops every thread of the interpreter, so only another process can time it out.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _stress(threads, calls, timeout):
    cmd = [sys.executable, os.path.join(HERE, "thread_stress.py"), "--threads", str(threads), "--calls", str(calls),
           "--timeout", str(timeout)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{threads} threads x {calls} calls did not finish within {timeout + 60} s "
                             "(deadlock: a lock taken while holding the GIL?)") from None
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr[-4000:]}"
    assert r.stdout.startswith("ok "), r.stdout


def test_four_threads_one_module_no_deadlock():
    _stress(threads=4, calls=25, timeout=60)


def test_eight_threads_mixed_shapes_and_fallback_match_serial():
    _stress(threads=8, calls=1000, timeout=300)
