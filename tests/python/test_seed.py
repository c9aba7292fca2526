"""The seed tutorial, ported (examples/converter_overloading.py), and its scenario step by step."""
import os
import subprocess
import sys

import torch

import kiln
from kiln import SourceIR
from kiln.conversion import impl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class GeLU(torch.nn.Module):
    def __init__(self, mode="tanh"):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return torch.nn.functional.gelu(x, approximate=self.mode)


def test_tutorial_port_runs_and_agrees():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "converter_overloading.py")],
                         capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "tanh approximations are close: True" in out.stdout
    # The custom converter ran for the tanh module only (not for the erf one).
    assert out.stdout.count("Using custom GeLU converter") == 1
    assert out.stdout.count("_run_on_acc_0") >= 3


def test_graph_shows_accelerated_segment(device):
    x = torch.randn(2, 5, device=device)
    compiled = kiln.compile(GeLU("tanh").to(device), arg_inputs=(x,), min_block_size=1)
    text = str(compiled.graph)
    assert "call_module[target=_run_on_acc_0]" in text
    assert "placeholder[target=x]" in text
    assert torch.allclose(compiled(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-5)


def test_custom_converter_called_once_per_node_and_compile(device):
    calls = []

    @kiln.conversion.converter(torch.ops.aten.gelu.default,
                               capability_validator=lambda node, settings: node.kwargs.get("approximate") == "tanh",
                               supports_dynamic_shapes=True, priority=kiln.conversion.ConverterPriority.HIGH)
    def gelu_tanh(ctx, target, args, kwargs, name):
        calls.append((target, name, kwargs))
        assert isinstance(args[0], kiln.ITensor)
        x = args[0]
        inner = impl.elementwise.mul(ctx, target, name=f"{name}_a", source_ir=SourceIR.ATEN, lhs_val=x, rhs_val=x)
        inner = impl.elementwise.mul(ctx, target, name=f"{name}_b", source_ir=SourceIR.ATEN, lhs_val=inner,
                                     rhs_val=x)
        inner = impl.elementwise.mul(ctx, target, name=f"{name}_c", source_ir=SourceIR.ATEN, lhs_val=inner,
                                     rhs_val=0.044715)
        inner = impl.elementwise.add(ctx, target, name=f"{name}_d", source_ir=SourceIR.ATEN, lhs_val=inner, rhs_val=x)
        inner = impl.elementwise.mul(ctx, target, name=f"{name}_e", source_ir=SourceIR.ATEN, lhs_val=inner,
                                     rhs_val=0.7978845608)
        t = impl.activation.tanh(ctx, target, name=f"{name}_f", source_ir=SourceIR.ATEN, input_val=inner)
        t = impl.elementwise.add(ctx, target, name=f"{name}_g", source_ir=SourceIR.ATEN, lhs_val=t, rhs_val=1.0)
        half = impl.elementwise.mul(ctx, target, name=f"{name}_h", source_ir=SourceIR.ATEN, lhs_val=x, rhs_val=0.5)
        return impl.elementwise.mul(ctx, target, name=f"{name}_i", source_ir=SourceIR.ATEN, lhs_val=half, rhs_val=t)

    x = torch.randn(4, 7, device=device)
    compiled = kiln.compile(GeLU("tanh").to(device), arg_inputs=(x,), min_block_size=1)
    assert len(calls) == 1
    target, name, kwargs = calls[0]
    assert target is torch.ops.aten.gelu.default
    assert kwargs.get("approximate") == "tanh"
    assert torch.allclose(compiled(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-5)
    compiled(x)
    assert len(calls) == 1  # running does not convert again
