"""kiln.compile on a model it cannot trace raises kiln.CaptureError naming the model, the line of the
model's code where tracing stopped, and what to do instead; the tracer's exception is its cause."""
import inspect

import pytest
import torch

import kiln


class Branchy(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        if y.sum() > 0:  # a branch on a tensor's value
            return y
        return -y


class ReadsAValue(torch.nn.Module):
    def forward(self, x):
        steps = int(x.max().item())  # a Python int from a tensor
        return x * steps


@pytest.mark.parametrize("model, marker", [(Branchy(), "if y.sum() > 0"), (ReadsAValue(), "int(x.max().item())")])
def test_data_dependent_python_is_named_with_its_line(model, marker):
    line = next(i for i, text in enumerate(inspect.getsource(type(model)).splitlines()) if marker in text)
    lineno = inspect.getsourcelines(type(model))[1] + line
    with pytest.raises(kiln.CaptureError) as info:
        kiln.compile(model, arg_inputs=(torch.randn(4, 3),), min_block_size=1)
    message = str(info.value)
    assert message.startswith(f"kiln.compile: tracing {type(model).__name__} failed at ")
    assert f"test_capture_errors.py:{lineno} in forward" in message, message
    assert "torch.export" in message and "kiln.load_pt2" in message
    assert isinstance(info.value, kiln.KilnError)
    assert info.value.__cause__ is not None



def test_third_party_model_code_counts_as_the_model():
    import os
    import sysconfig

    from kiln import _capture
    stdlib = sysconfig.get_paths()["stdlib"]
    assert _capture._is_library(os.path.join(stdlib, "json", "decoder.py"))
    assert _capture._is_library(os.path.join(os.path.dirname(torch.__file__), "nn", "modules", "module.py"))
    # torchvision, timm or transformers, installed inside the standard library's folder (conda, pyenv)
    assert not _capture._is_library(os.path.join(stdlib, "site-packages", "torchvision", "models", "resnet.py"))
    assert not _capture._is_library("/home/user/project/model.py")
