"""Compiling in a long-lived process does not keep each compile's traces alive (issue 17, soak).

PyTorch 1.13's make_fx hangs every traced tensor's proxy (which holds the tracer and its graph)
off the tensor, its symbolic ShapeEnv memoizes with class-level caches keyed by `self`, and FX
keeps every GraphModule's source: without kiln's countermeasures each compile of the same module
with the same inputs left one more tracer, graph and source behind.
"""
import gc

import pytest
import torch

import kiln
from kiln._module import fx_sources


def _alive(type_name):
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == type_name)


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_repeated_compiles_keep_no_trace(dynamic):
    model, x = _mlp(), torch.randn(3, 8)  # the same module and input tensor every time, as a user would
    spec = [kiln.Input(min_shape=(1, 8), opt_shape=(3, 8), max_shape=(6, 8))] if dynamic else [x]

    def compile_and_run():
        compiled = kiln.compile(model, spec, min_block_size=1)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)

    compile_and_run()
    tracers, graphs, sources = _alive("PythonKeyTracer"), _alive("Graph"), len(fx_sources())
    for _ in range(6):
        compile_and_run()
    gc.collect()
    assert len(fx_sources()) <= sources
    if not dynamic:  # (1.13's symbolic tracing keeps its tracers through C++ references kiln cannot reach)
        assert _alive("PythonKeyTracer") <= tracers
        assert _alive("Graph") <= graphs


def test_a_live_compiled_module_keeps_its_source():
    compiled = kiln.compile(_mlp(), [torch.randn(2, 8)], min_block_size=1)
    key = type(compiled.module).forward.__code__.co_filename
    assert key in fx_sources()  # tracebacks through a live module show its code ...
    assert compiled(torch.randn(2, 8)).shape == (2, 4)
    before = len(fx_sources())
    del compiled
    gc.collect()
    assert len(fx_sources()) < before  # ... and its generated source goes with it
