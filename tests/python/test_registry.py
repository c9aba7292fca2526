"""Registry semantics from Python: priority, validator fall-through, dynamic shapes, errors."""
import pytest
import torch

import kiln
from kiln import SourceIR
from kiln.conversion import ConverterPriority, impl


class ReluAdd(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x) + 1.0


def relu_by_max(tag, log):
    """A relu converter built from impl.elementwise.maximum that records when it runs."""
    def fn(ctx, target, args, kwargs, name):
        log.append(tag)
        return impl.elementwise.maximum(ctx, target, name=name, source_ir=SourceIR.ATEN, lhs_val=args[0],
                                        rhs_val=0.0)
    return fn


def test_high_priority_overrides_builtin_and_newest_high_wins():
    log = []
    kiln.conversion.converter(torch.ops.aten.relu.default, priority=ConverterPriority.HIGH)(relu_by_max("first", log))
    kiln.conversion.converter(torch.ops.aten.relu.default, priority=ConverterPriority.HIGH)(relu_by_max("second", log))
    origins = [c["origin"] for c in kiln.conversion.converters(torch.ops.aten.relu.default)]
    assert origins[0].startswith("python:") and origins[-1] == "builtin"
    x = torch.randn(3, 4)
    compiled = kiln.compile(ReluAdd(), arg_inputs=(x,), min_block_size=1)
    assert log == ["second"]
    assert torch.allclose(compiled(x), torch.relu(x) + 1)


def test_standard_priority_goes_after_builtin():
    log = []
    kiln.conversion.converter(torch.ops.aten.relu.default)(relu_by_max("standard", log))
    kiln.compile(ReluAdd(), arg_inputs=(torch.randn(2, 2),), min_block_size=1)
    assert log == []  # the built-in converter comes first and takes the node


def test_validator_fall_through_sees_node():
    seen = []

    def validator(node, settings):
        seen.append(node)
        return False

    log = []
    kiln.conversion.converter(torch.ops.aten.relu.default, capability_validator=validator,
                              priority=ConverterPriority.HIGH)(relu_by_max("rejected", log))
    x = torch.randn(3, 4)
    compiled = kiln.compile(ReluAdd(), arg_inputs=(x,), min_block_size=1)
    assert log == []
    assert seen, "the validator ran"
    node = seen[0]
    assert node.target is torch.ops.aten.relu.default
    assert node.meta["val"].shape == (3, 4) and node.meta["val"].dtype == torch.float32
    assert len(node.args) == 1 and node.args[0].meta["val"].shape == (3, 4)
    assert isinstance(seen[0], kiln.conversion.NodeView)
    assert "_run_on_acc_0" in str(compiled.graph)  # the built-in converter took over
    assert torch.allclose(compiled(x), torch.relu(x) + 1)


def test_validator_receives_settings():
    got = []
    kiln.conversion.converter(torch.ops.aten.relu.default, priority=ConverterPriority.HIGH,
                              capability_validator=lambda node, settings: got.append(settings) or False)(
        relu_by_max("x", []))
    kiln.compile(ReluAdd(), arg_inputs=(torch.randn(2, 2),), min_block_size=3)
    assert got and got[0].min_block_size == 3
    assert isinstance(got[0], kiln.CompilationSettings)


def test_high_converter_without_dynamic_support_passed_over_for_dynamic_inputs():
    log = []
    kiln.conversion.converter(torch.ops.aten.relu.default, priority=ConverterPriority.HIGH,
                              supports_dynamic_shapes=False)(relu_by_max("static-only", log))
    spec = kiln.Input(min_shape=(1, 4), opt_shape=(3, 4), max_shape=(8, 4))
    compiled = kiln.compile(ReluAdd(), arg_inputs=(spec,), min_block_size=1)
    assert log == []  # passed over: the built-in (dynamic-capable) converter took the node
    for b in (1, 5, 8):
        x = torch.randn(b, 4)
        assert torch.allclose(compiled(x), torch.relu(x) + 1)
    # With static inputs the same converter is used.
    kiln.compile(ReluAdd(), arg_inputs=(torch.randn(3, 4),), min_block_size=1)
    assert log == ["static-only"]
    # assume_dynamic_shape_support lifts the restriction.
    log.clear()
    kiln.compile(ReluAdd(), arg_inputs=(spec,), min_block_size=1, assume_dynamic_shape_support=True)
    assert log == ["static-only"]


def test_converter_that_raises_names_itself_and_the_node():
    @kiln.conversion.converter(torch.ops.aten.relu.default, priority=ConverterPriority.HIGH)
    def broken_relu(ctx, target, args, kwargs, name):
        raise ValueError("deliberately broken")

    with pytest.raises(kiln.KilnError) as err:
        kiln.compile(ReluAdd(), arg_inputs=(torch.randn(2, 2),), min_block_size=1)
    msg = str(err.value)
    assert "broken_relu" in msg and "deliberately broken" in msg and "ValueError" in msg
    assert "%relu" in msg and "aten.relu.default" in msg


def test_cpp_errors_surface_with_their_message():
    class Sort(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x).cumprod(0) + 1

    with pytest.raises(kiln.PartitionError) as err:
        kiln.compile(Sort(), arg_inputs=(torch.randn(3),), min_block_size=1, require_full_compilation=True,
                     torch_executed_ops={torch.ops.aten.relu.default})
    assert "aten.relu.default" in str(err.value)
    assert isinstance(err.value, RuntimeError)


def test_wrong_input_shape_is_refused_with_a_message():
    compiled = kiln.compile(ReluAdd(), arg_inputs=(torch.randn(3, 4),), min_block_size=1)
    with pytest.raises(RuntimeError) as err:
        compiled(torch.randn(5, 4))
    assert "x" in str(err.value) or "input" in str(err.value)
