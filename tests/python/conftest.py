"""pytest setup for kiln's Python tests: run with PYTHONPATH=build/python (CTest sets it)."""
import pytest
import torch

import kiln


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test starts from the built-in converters: Python converters it registers go away."""
    kiln.conversion.remove_python_converters()
    torch.manual_seed(0)
    yield
    kiln.conversion.remove_python_converters()


@pytest.fixture
def device():
    return "cuda" if torch.cuda.is_available() else "cpu"
