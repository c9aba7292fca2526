"""Issue 14: real-model patterns convert whole, capture survives infinite symbol ranges, float64
programs run in float32 with a warning, and kiln.compile checks its options as the CLI does."""
import warnings

import pytest
import sympy
import torch

import kiln
from kiln import _capture


def _one_segment(compiled):
    program = compiled.program
    assert len(program.segments) == 1, str(program)
    assert program.fallback_ops() == [], program.fallback_ops()


# ---- (a) transformers' attention-mask construction -----------------------------------------------

class PackedCausalMask(torch.nn.Module):
    """masking_utils' pattern: packed-sequence ids from position-id diffs (integer cumsum), and the
    mask as and-ed bool masks read through several broadcast index tensors."""

    def forward(self, position_ids, attention_mask, scores):
        first = position_ids[:, :1] - 1
        step = torch.diff(position_ids, prepend=first, dim=-1)
        seq = (step != 1).cumsum(-1)
        b, l = attention_mask.shape
        bi = torch.arange(b).view(b, 1, 1, 1)
        qi = torch.arange(l).view(1, 1, l, 1)
        ki = torch.arange(l).view(1, 1, 1, l)
        causal = ki <= qi
        padding = attention_mask.bool()[bi, ki]
        same = seq[bi, qi] == seq[bi, ki]
        mask = causal & padding & same
        keep = mask | (qi == ki)
        return scores.masked_fill(~keep, -1e4), mask ^ causal


@pytest.mark.parametrize("b,l", [(1, 5), (2, 9), (3, 16)])
def test_packed_sequence_mask_converts_whole(b, l):
    pos = torch.cat([torch.arange(l // 2), torch.arange(l - l // 2)]).repeat(b, 1)
    am = (torch.rand(b, l) > 0.2).long()
    scores = torch.randn(b, 1, l, l)
    model = PackedCausalMask()
    compiled = kiln.compile(model, arg_inputs=(pos, am, scores), min_block_size=1)
    _one_segment(compiled)
    got, want = compiled(pos, am, scores), model(pos, am, scores)
    assert torch.equal(got[1], want[1])
    assert torch.allclose(got[0], want[0])


class MultiIndex(torch.nn.Module):
    def forward(self, x, i, j):
        return x[i, :, j] * 2, x[:, i.view(-1, 1), j.view(1, -1)] + 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_several_index_tensors_apart_and_adjacent(dtype):
    x = (torch.randn(5, 4, 6) * 10).to(dtype)
    i = torch.randint(-4, 4, (3,))
    j = torch.randint(-6, 6, (3,))
    compiled = kiln.compile(MultiIndex(), arg_inputs=(x, i, j), min_block_size=1)
    _one_segment(compiled)
    for g, w in zip(compiled(x, i, j), MultiIndex()(x, i, j)):
        assert torch.equal(g, w)


def test_integer_and_bool_cumsum_and_bitwise_convert():
    class M(torch.nn.Module):
        def forward(self, a, m):
            return a.cumsum(0), m.cumsum(-1), (a & 6) | (a ^ a.flip(0)), ~m, m & (a > 0)

    a = torch.randint(-9, 9, (4, 7))
    m = torch.rand(4, 7) > 0.5
    compiled = kiln.compile(M(), arg_inputs=(a, m), min_block_size=1)
    _one_segment(compiled)
    for g, w in zip(compiled(a, m), M()(a, m)):
        assert g.dtype == w.dtype and torch.equal(g, w)


# ---- (c) symbol ranges with infinite ends -----------------------------------------------------------

class _TorchIntInfinity:
    """Stands in for torch.utils._sympy.numbers.int_oo (PyTorch >= 2.4; absent in 1.13): not a
    sympy number, and int() of it fails as the real crash did."""

    def __init__(self, negative=False):
        self.negative = negative

    def __str__(self):
        return "-int_oo" if self.negative else "int_oo"

    def __int__(self):
        raise AttributeError("'Infinity' object has no attribute '_mpf_'")

    __float__ = __int__


class _Range:
    def __init__(self, lower, upper):
        self.lower, self.upper = lower, upper


@pytest.mark.parametrize("lower,upper,want", [
    (-sympy.oo, sympy.oo, (-(2 ** 63), None)),
    (_TorchIntInfinity(True), _TorchIntInfinity(), (-(2 ** 63), None)),
    (sympy.Integer(2), _TorchIntInfinity(), (2, None)),
    (0, sympy.Integer(4096), (0, 4096)),
    (sympy.Rational(3, 2), sympy.Rational(19, 2), (2, 9)),  # non-integers rounded inward
    (float("-inf"), float("inf"), (-(2 ** 63), None)),
    (None, None, (-(2 ** 63), None)),
    (sympy.Integer(1), sympy.Integer(2 ** 70), (1, None)),  # beyond int64: unbounded
    (True, 5, (1, 5)),
])
def test_infinite_and_odd_range_ends(lower, upper, want):
    keep = {}
    s = sympy.Symbol("s7", integer=True, positive=True)
    _capture._add_derived_ranges(keep, {s: _Range(lower, upper)})
    assert keep[s] == want


def test_declared_ranges_are_kept_and_non_symbols_skipped():
    s, t = sympy.Symbol("s0"), sympy.Symbol("s1")
    keep = {s: (1, 8)}
    _capture._add_derived_ranges(keep, {s: _Range(-sympy.oo, sympy.oo), t: _Range(-sympy.oo, 3),
                                        s * 2: _Range(0, 4)})
    assert keep == {s: (1, 8), t: (-(2 ** 63), 3)}


# ---- (d) float64 programs -----------------------------------------------------------------------

def test_float64_module_runs_in_float32_with_a_warning():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    with pytest.warns(UserWarning, match="float64.*float32"):
        compiled = kiln.compile(model, arg_inputs=(x,), min_block_size=1)
    assert len(compiled.program.segments) == 1
    got = compiled(x)
    assert got.dtype == torch.float64
    assert torch.allclose(got, model(x), atol=1e-4, rtol=1e-4)


def test_float64_refused_without_truncate_double():
    model = torch.nn.Linear(4, 4).double()
    with pytest.raises(ValueError, match="float64.*truncate_double"):
        kiln.compile(model, arg_inputs=(torch.randn(2, 4, dtype=torch.float64),), truncate_double=False)


# ---- (e) a strict API ------------------------------------------------------------------------------

def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)), torch.randn(2, 4)


@pytest.mark.parametrize("options,error,match", [
    (dict(enabled_precisions={torch.int8}), ValueError, r"enabled_precisions holds torch.int8.*allowed: torch.float32"),
    (dict(enabled_precisions={torch.float64}), ValueError, r"enabled_precisions holds torch.float64"),
    (dict(enabled_precisions={torch.float32, "fp8"}), ValueError, r"'fp8'"),
    (dict(precision="int4"), ValueError, r"precision='int4'.*allowed"),
    (dict(min_block_size=-3), ValueError, r"min_block_size must be an int >= 0, got -3"),
    (dict(min_block_size=2.5), TypeError, r"min_block_size must be an int"),
    (dict(torch_executed_ops=["aten.not_an_op.default"]), ValueError, r"torch_executed_ops: unknown op"),
    (dict(torch_executed_ops="aten.relu"), ValueError, r"unknown op 'aten.relu'"),
    (dict(require_full_compilation="yes"), TypeError, r"require_full_compilation must be True or False"),
    (dict(workspace_size=-1), ValueError, r"workspace_size"),
    (dict(device="tpu"), ValueError, r"device"),
    (dict(not_an_option=1), TypeError, r"unknown option\(s\) not_an_option"),
])
def test_bad_options_are_errors_naming_them(options, error, match):
    model, x = _mlp()
    with pytest.raises(error, match=match):
        kiln.compile(model, arg_inputs=(x,), **options)


def test_good_options_still_compile():
    model, x = _mlp()
    compiled = kiln.compile(model, arg_inputs=(x,), min_block_size=1, enabled_precisions={torch.float32},
                            torch_executed_ops=[torch.ops.aten.relu.default])
    assert "aten.relu.default" in compiled.program.fallback_ops()
    assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_inputs_and_arg_inputs_together_is_an_error():
    model, x = _mlp()
    with pytest.raises(ValueError, match="inputs=.*arg_inputs="):
        kiln.compile(model, arg_inputs=(x,), inputs=(x,))
    compiled = kiln.compile(model, inputs=(x,), min_block_size=1)  # the older keyword alone still works
    assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_converter_for_an_unknown_op_is_refused():
    with pytest.raises(ValueError, match="unknown op 'aten.not_a_real_op.default'"):
        @kiln.conversion.converter("aten.not_a_real_op.default")
        def conv(ctx, target, args, kwargs, name):  # noqa: ARG001
            return args[0]


def test_a_validator_that_raises_propagates():
    def broken(node, settings):
        raise ZeroDivisionError("validator bug")

    @kiln.conversion.converter(torch.ops.aten.relu.default, capability_validator=broken,
                               priority=kiln.conversion.ConverterPriority.HIGH)
    def conv(ctx, target, args, kwargs, name):  # noqa: ARG001
        return args[0]

    model, x = _mlp()
    with pytest.raises(kiln.ConversionError, match=r"relu.*validator .*broken raised ZeroDivisionError: validator bug"):
        kiln.compile(model, arg_inputs=(x,), min_block_size=1)


@pytest.mark.parametrize("result,kind", [("oops", "str"), (None, "NoneType"), (3, "int")])
def test_a_converter_returning_the_wrong_type_is_blamed(result, kind):
    @kiln.conversion.converter(torch.ops.aten.relu.default, priority=kiln.conversion.ConverterPriority.HIGH)
    def wrong_relu(ctx, target, args, kwargs, name):  # noqa: ARG001
        return result

    model, x = _mlp()
    with pytest.raises(kiln.ConversionError, match=rf"converter python:.*wrong_relu returned {kind}"):
        kiln.compile(model, arg_inputs=(x,), min_block_size=1)


@pytest.mark.skipif(torch.cuda.is_available() and kiln._kiln.cuda_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_fails_at_compile_time():
    model, x = _mlp()
    with pytest.raises(kiln.InputError, match="device='cuda'"):
        kiln.compile(model, arg_inputs=(x,), device="cuda")


def test_error_family_is_exported():
    for name in ("KilnError", "ConversionError", "InputError", "PartitionError", "FormatError", "ShapeError",
                 "NetworkError", "VerifyError"):
        err = getattr(kiln, name)
        assert issubclass(err, Exception) and name in kiln.__all__
    assert issubclass(kiln.ShapeError, kiln.KilnError)


def test_a_compile_that_accelerates_nothing_warns_why():
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False).eval()
    x = torch.randn(2, 6, 32)
    with pytest.warns(UserWarning, match=r"accelerated (nothing|little).*min_block_size=500") as record:
        compiled = kiln.compile(model, arg_inputs=(x,), min_block_size=500)
    ours = [str(r.message) for r in record if "min_block_size=500" in str(r.message)]
    assert ours and "lower min_block_size" in ours[0]
    assert torch.allclose(compiled(x), model(x), atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough accelerated: no warning
        kiln.compile(model, arg_inputs=(x,), min_block_size=1)


def test_a_compile_with_unconvertible_ops_names_them():
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x) + torch.det(x).view(-1, 1, 1)

    x = torch.randn(2, 3, 3) + 3 * torch.eye(3)
    with pytest.warns(UserWarning, match=r"accelerated (nothing|little).*no converter"):
        kiln.compile(M(), arg_inputs=(x,), min_block_size=1)
