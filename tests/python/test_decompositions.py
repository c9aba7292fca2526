"""Which ops reach kiln whole. On PyTorch >= 2.6 kiln.compile decomposes the export to core ATen
except for the ops its registry converts: silu stays a silu (which fuses into a convolution's
epilogue), not a sigmoid and a multiply; a converter registered from Python for such an op is
called; an op whose converter refuses it is decomposed after all, so that its parts convert; an op
in torch_executed_ops stays whole, in PyTorch. On 1.13 (make_fx) these ops stay whole anyway."""
import pytest
import torch

import kiln
from kiln import SourceIR
from kiln.conversion import ConverterPriority, impl

HAS_TABLE = hasattr(torch, "export") and hasattr(torch.export, "default_decompositions")
# PyTorch 2.1-2.5: torch.export, but no editable table, so every op is decomposed (silu too).
whole_ops = pytest.mark.skipif(hasattr(torch, "export") and not HAS_TABLE,
                               reason="this PyTorch decomposes every op of an export")


class _Activations(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = torch.nn.functional.silu(self.conv(x))
        return torch.nn.functional.hardswish(y) + torch.nn.functional.gelu(y)


def _ops(compiled):
    return {op for s in compiled.program.segments for op in s["ops"]}


def _inputs(device):
    return (torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(0)).to(device),)


@pytest.fixture
def clean_registry():
    yield
    kiln.conversion.remove_python_converters()


@whole_ops
def test_converted_ops_stay_whole(device):
    m = _Activations().to(device)
    x = _inputs(device)
    compiled = kiln.compile(m, arg_inputs=x, min_block_size=1)
    assert compiled.program.fallback_ops() == []
    ops = _ops(compiled)
    assert {"aten.silu.default", "aten.hardswish.default"} <= ops, ops
    assert "aten.sigmoid.default" not in ops  # silu was not written out
    torch.testing.assert_close(compiled(*x), m(*x), rtol=1e-4, atol=1e-4)


@whole_ops
def test_python_converter_for_a_decomposable_op_is_called(device, clean_registry):
    calls = []

    @kiln.conversion.converter(torch.ops.aten.hardswish.default, priority=ConverterPriority.HIGH)
    def hardswish_written_out(ctx, target, args, kwargs, name):
        calls.append(name)
        x = args[0]
        gate = impl.activation.clamp(ctx, target, name=name + "_gate", source_ir=SourceIR.ATEN,
                                     input_val=impl.elementwise.add(ctx, target, name=name + "_shift",
                                                                    source_ir=SourceIR.ATEN, lhs_val=x, rhs_val=3.0),
                                     min_val=0.0, max_val=6.0)
        prod = impl.elementwise.mul(ctx, target, name=name + "_mul", source_ir=SourceIR.ATEN, lhs_val=x, rhs_val=gate)
        return impl.elementwise.div(ctx, target, name=name + "_div", source_ir=SourceIR.ATEN, lhs_val=prod,
                                    rhs_val=6.0)

    m = _Activations().to(device)
    x = _inputs(device)
    compiled = kiln.compile(m, arg_inputs=x, min_block_size=1)
    assert calls, "the Python converter for hardswish was not called"
    assert compiled.program.fallback_ops() == []
    torch.testing.assert_close(compiled(*x), m(*x), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not HAS_TABLE, reason="PyTorch without an editable decomposition table decomposes everything")
def test_refused_op_is_decomposed_instead(device):
    from kiln._capture import capture
    m = _Activations().to(device)
    x = _inputs(device)
    whole = {n.target for n in capture(m, x, None, torch.device(device), lambda node: True).program.nodes()}
    assert "aten.silu.default" in whole and "aten.sigmoid.default" not in whole
    refused = capture(m, x, None, torch.device(device), lambda node: node.target != "aten.silu.default")
    parts = {n.target for n in refused.program.nodes()}
    assert "aten.silu.default" not in parts and "aten.sigmoid.default" in parts, parts
    assert "aten.hardswish.default" in parts  # only the refused op is decomposed


@whole_ops
def test_torch_executed_op_stays_whole_in_pytorch(device):
    m = _Activations().to(device)
    x = _inputs(device)
    compiled = kiln.compile(m, arg_inputs=x, min_block_size=1, torch_executed_ops={"aten.silu.default"})
    assert "aten.silu.default" in compiled.program.fallback_ops()
    assert "aten.sigmoid.default" not in _ops(compiled)  # not written out and converted against the wish
    torch.testing.assert_close(compiled(*x), m(*x), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not HAS_TABLE, reason="PyTorch without an editable decomposition table decomposes everything")
def test_torch_executed_op_inside_a_kept_op_is_reached(device):
    """torch_executed_ops naming a piece of an op kiln keeps whole (sigmoid, which silu decomposes
    into): the program is decomposed so that the piece exists and runs in PyTorch."""
    m = _Activations().to(device)
    x = _inputs(device)
    compiled = kiln.compile(m, arg_inputs=x, min_block_size=1, torch_executed_ops={"aten.sigmoid.default"})
    assert "aten.sigmoid.default" in compiled.program.fallback_ops()
    torch.testing.assert_close(compiled(*x), m(*x), rtol=1e-4, atol=1e-4)


def test_table_keeps_converted_pure_ops_only(monkeypatch):
    """The table's filtering, on any PyTorch (a stand-in for torch.export's table): ops with a
    converter are left out (kept whole) unless asked to decompose; in-place and out= overloads and
    ops without a converter stay in; decompose=None keeps attention and linear only."""
    import types
    from kiln import _capture
    ops = [torch.ops.aten.silu.default, torch.ops.aten.silu_.default, torch.ops.aten.silu.out,
           torch.ops.aten.hardswish.default, torch.ops.aten.linear.default, torch.ops.aten.addcmul.default]
    fake_export = types.SimpleNamespace(default_decompositions=lambda: {op: (lambda *a: None) for op in ops})
    monkeypatch.setattr(torch, "export", fake_export, raising=False)
    has = lambda name: bool(kiln.conversion.converters(name))  # noqa: E731
    table, kept = _capture._decomposition_table()
    assert "aten.silu.default" in kept and "aten.hardswish.default" in kept and "aten.linear.default" in kept
    assert torch.ops.aten.silu_.default in table and torch.ops.aten.silu.out in table
    assert (torch.ops.aten.addcmul.default in table) == (not has("aten.addcmul.default"))
    table, kept = _capture._decomposition_table(frozenset({"aten.silu.default"}))
    assert "aten.silu.default" not in kept and torch.ops.aten.silu.default in table
    table, kept = _capture._decomposition_table(None)
    assert kept == {"aten.linear.default"} and torch.ops.aten.silu.default in table
