"""kiln.refit: a compiled module takes new weights without a rebuild and then computes what the
module with those weights computes; bad weights are refused with nothing changed."""
import copy
import pickle

import pytest
import torch

import kiln


class Net(torch.nn.Module):
    """conv + batch norm (folded into the convolution by the builder), a linear layer, and a
    parameter read by an op left to PyTorch when asked (torch_executed_ops)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 6 * 6, 10)
        self.offset = torch.nn.Parameter(torch.randn(10))

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return torch.sigmoid(self.fc(y.flatten(1))) + self.offset


def make(seed):
    torch.manual_seed(seed)
    m = Net().eval()
    with torch.no_grad():  # batch norm statistics that are not the identity, so folding matters
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.5, 0.5)
    return m


X = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(7))


def compiled_of(model, **options):
    return kiln.compile(model, arg_inputs=(X,), min_block_size=1, **options)


@pytest.mark.parametrize("as_state_dict", [False, True])
def test_refit_gives_the_new_weights_results(as_state_dict):
    old, new = make(1), make(2)
    compiled = compiled_of(old)
    program_before = compiled.program
    with torch.no_grad():
        assert not torch.allclose(old(X), new(X), atol=1e-3)
        assert torch.allclose(compiled(X), old(X), atol=1e-5)
        out = kiln.refit(compiled, new.state_dict() if as_state_dict else new)
        assert out is compiled and compiled.program is program_before  # in place, nothing rebuilt
        assert torch.allclose(compiled(X), new(X), atol=1e-5)
        # the old module is untouched
        assert torch.allclose(old(X), make(1)(X))


def test_refit_reaches_ops_left_to_pytorch():
    old, new = make(1), make(2)
    compiled = compiled_of(old, torch_executed_ops=["aten.add.Tensor"])
    assert compiled.program.fallback_ops() == ["aten.add.Tensor"]
    assert "offset" in compiled.program.weights()
    with torch.no_grad():
        kiln.refit(compiled, new)
        assert torch.allclose(compiled(X), new(X), atol=1e-5)


def test_refit_bf16():
    old, new = make(1), make(2)
    compiled = compiled_of(old, precision="bf16")
    with torch.no_grad():
        kiln.refit(compiled, new)
        got, want = compiled(X).float(), new(X)
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999


def test_refit_repeatedly_and_through_deepcopy():
    models = [make(s) for s in (1, 2, 3)]
    compiled = compiled_of(models[0])
    with torch.no_grad():
        for m in models[1:] + models[:1]:
            kiln.refit(compiled, m)
            assert torch.allclose(compiled(X), m(X), atol=1e-5)
        twin = copy.deepcopy(compiled)
        kiln.refit(twin, models[2])
        assert torch.allclose(twin(X), models[2](X), atol=1e-5)
        assert torch.allclose(compiled(X), models[0](X), atol=1e-5)  # the copy is its own


def _refused(compiled, weights, **kw):
    with torch.no_grad():
        before = compiled(X)
        with pytest.raises(kiln.InputError) as e:
            kiln.refit(compiled, weights, **kw)
        assert torch.equal(compiled(X), before)  # nothing changed
    return str(e.value)


def test_bad_weights_are_refused_naming_them():
    compiled = compiled_of(make(1))
    good = make(2).state_dict()

    wrong_shape = dict(good, **{"fc.weight": torch.randn(10, 7)})
    msg = _refused(compiled, wrong_shape)
    assert "fc.weight" in msg and "[10, 7]" in msg and "[10, 288]" in msg

    wrong_dtype = dict(good, **{"conv.bias": good["conv.bias"].double()})
    assert "conv.bias" in _refused(compiled, wrong_dtype)

    missing = {k: v for k, v in good.items() if k != "bn.running_var"}
    assert "missing" in _refused(compiled, missing) and "bn.running_var" in _refused(compiled, missing)

    unknown = dict(good, extra=torch.zeros(1))
    assert "extra" in _refused(compiled, unknown)
    with torch.no_grad():
        kiln.refit(compiled, unknown, strict=False)
        assert torch.allclose(compiled(X), make(2)(X), atol=1e-5)


def test_refit_needs_a_trace():
    frozen = compiled_of(make(1), immutable_weights=True)
    assert "immutable_weights" in _refused(frozen, make(2))
    loaded = pickle.loads(pickle.dumps(compiled_of(make(1))))
    assert "immutable_weights=False" in _refused(loaded, make(2))
    with pytest.raises(TypeError, match="immutable_weights"):
        compiled_of(make(1), immutable_weights="no")
    with pytest.raises(TypeError, match="state dict"):
        kiln.refit(compiled_of(make(1)), [1, 2])


def test_a_weight_whose_value_shaped_the_program_is_refused():
    """A weight of one element is an immediate inside the fused kernel it feeds: a new value would
    need new code, so refit refuses rather than leave the old value there."""

    class Scaled(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.register_buffer("scale", torch.tensor(scale))
            self.lin = torch.nn.Linear(6, 6)

        def forward(self, x):
            return torch.tanh(self.lin(x) * self.scale + 1.0)

    torch.manual_seed(0)
    a = Scaled(2.0).eval()
    b = copy.deepcopy(a)
    b.scale.fill_(3.0)
    x = torch.randn(4, 6)
    compiled = kiln.compile(a, arg_inputs=(x,), min_block_size=1)
    msg = _refused_for(compiled, b, x)
    assert "fused_tanh" in msg and "compile again" in msg
    with torch.no_grad():  # compiling again takes the new value
        assert torch.allclose(kiln.compile(b, arg_inputs=(x,), min_block_size=1)(x), b(x), atol=1e-5)


def _refused_for(compiled, weights, x):
    with torch.no_grad():
        before = compiled(x)
        with pytest.raises(kiln.InputError) as e:
            kiln.refit(compiled, weights)
        assert torch.equal(compiled(x), before)
    return str(e.value)
