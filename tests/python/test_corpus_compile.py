"""kiln.compile (the Python entry path) of every model in the fixture corpus (tests/data, built by
scripts/make_fixtures.py's factories): one segment with nothing left to PyTorch at min_block_size=1,
and the module's own output on the fixture's stored input. On the GPU machine (PyTorch 2.x with
transformers) this covers every fixture on CUDA; here, those this PyTorch and torchvision can build."""
import importlib.util
import os

import numpy as np
import pytest
import torch

import kiln

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")


def _fixtures_module():
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(ROOT, "scripts", "make_fixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIXTURES = _fixtures_module()
NAMES = sorted(n for n in FIXTURES.MODELS if os.path.exists(os.path.join(DATA, n, "input_0.npy")))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("name", NAMES)
def test_fixture_model_compiles_whole_and_agrees(name):
    factory, _, _ = FIXTURES.MODELS[name]
    torch.manual_seed(0)
    try:
        model = factory().eval()
    except (ImportError, AttributeError, TypeError) as e:  # transformers absent, an older torchvision
        pytest.skip(f"this PyTorch cannot build {name}: {e}")
    inputs = [torch.from_numpy(np.load(os.path.join(DATA, name, f)))
              for f in sorted(os.listdir(os.path.join(DATA, name))) if f.startswith("input_")]
    FIXTURES.calibrate_batch_norms(model, lambda: tuple(inputs))
    with torch.no_grad():
        try:  # the reference on the CPU, in true fp32 whatever the GPU's TF32 settings
            want = model(*inputs)
        except AttributeError as e:  # an op this PyTorch lacks (F.scaled_dot_product_attention before 2.0)
            pytest.skip(f"this PyTorch cannot run {name}: {e}")
        model = model.to(DEVICE)
        inputs = [t.to(DEVICE) for t in inputs]
        compiled = kiln.compile(model, arg_inputs=tuple(inputs), min_block_size=1)
        got = compiled(*inputs)
    assert compiled.program.fallback_ops() == [], f"{name}: ops left to PyTorch"
    assert len(compiled.program.segments) == 1, f"{name}: {len(compiled.program.segments)} segments"
    want = want[0] if isinstance(want, (tuple, list)) else want
    got = (got[0] if isinstance(got, (tuple, list)) else got).cpu()
    scale = want.abs().max().clamp_min(1e-6)
    assert ((got - want).abs().max() / scale).item() < 1e-3, f"{name}: disagrees with PyTorch"
