"""pytest setup for kiln's Python tests: run with PYTHONPATH=build/python (CTest sets it)."""
import pytest
import torch

import kiln

# References in true fp32: PyTorch runs cuDNN's fp32 convolutions in TF32 by default (10-bit
# mantissa), and through a deep, thin network (MobileNet, EfficientNet) that alone moves outputs by
# a few percent, while kiln's fp32 plans compute in fp32.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


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
