"""A compiled module's common call (positional tensors in; a tensor or a tuple out; one segment)
skips the pytree walks and the fx module's call, with the same results, errors and hooks as the
general path."""
import pytest
import torch

import kiln


class Two(torch.nn.Module):
    def forward(self, x, y):
        return torch.relu(x + y), x * y


class Dict(torch.nn.Module):
    def forward(self, x):
        return {"double": x * 2, "neg": -x}


def test_the_direct_path_is_taken_and_agrees():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU()).eval()
    x = torch.randn(2, 4)
    c = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    assert c._direct is not None and c._positional == 1 and c._out_kind == "single"
    with torch.no_grad():
        assert torch.equal(c(x), c.module(x)[0])
        assert torch.allclose(c(x), m(x), atol=1e-5)
    # not a second registered copy of the segment
    assert [n for n, _ in c.named_modules()] == ["", "module", "module._run_on_acc_0"]


def test_tuples_dicts_and_fallback_take_their_paths():
    x, y = torch.randn(3, 5), torch.randn(3, 5)
    two = kiln.compile(Two(), arg_inputs=(x, y), min_block_size=1)
    assert two._out_kind == "tuple"
    got = two(x, y)
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, Two()(x, y)):
        assert torch.allclose(g, w)
    d = kiln.compile(Dict(), arg_inputs=(x,), min_block_size=1)
    assert d._out_kind is None  # a dict: the general path
    assert set(d(x)) == {"double", "neg"}
    split = kiln.compile(Two(), arg_inputs=(x, y), min_block_size=1, torch_executed_ops=["aten.mul.Tensor"])
    assert split._direct is None  # an op in PyTorch: the fx module runs
    assert torch.allclose(split(x, y)[1], x * y)


def test_errors_and_hooks_are_those_of_the_general_path():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    x = torch.randn(2, 4)
    c = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    with pytest.raises(kiln.InputError, match="float64"):
        c(x.double())
    with pytest.raises(kiln.InputError):
        c(x, x)
    seen = []
    handle = c.module.register_forward_hook(lambda mod, inputs, out: seen.append(len(inputs)))
    with torch.no_grad():
        c(x)
    handle.remove()
    assert seen == [1]  # a hook on the fx module still fires


def test_a_gpu_program_loads_and_runs_on_the_cpu(tmp_path):
    """kiln.load(..., device="cpu") runs any program `kiln run --device cpu` runs, a GPU-built one too."""
    import os
    import numpy as np
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    settings = kiln.CompilationSettings()
    settings.min_block_size = 1
    settings.device = kiln._kiln.DeviceKind.CUDA  # built for the GPU (kernels compile on its first GPU run)
    program = kiln._kiln.compile_program(kiln._kiln.load_pt2(os.path.join(root, "examples", "mlp_dyn.pt2")), settings)
    assert program.segments[0]["device"] == kiln._kiln.DeviceKind.CUDA
    program.save(str(tmp_path / "gpu.kiln"))
    loaded = kiln.load(tmp_path / "gpu.kiln", device="cpu")
    x = torch.from_numpy(np.load(os.path.join(root, "examples", "mlp_dyn.input_0.npy")))
    want = np.load(os.path.join(root, "examples", "mlp_dyn.output_0.npy"))
    assert np.abs(loaded(x).numpy() - want).max() < 1e-5


class ConvDict(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return {"y": self.conv(x)}


@pytest.mark.parametrize("path", ["direct", "general"])
def test_an_unknown_tactic_setting_is_an_input_error(monkeypatch, path):
    """A KILN_*_TACTIC value kiln does not know is the user's to fix: kiln.InputError naming it, on
    the direct call path and the general one (a dict output), not an internal error."""
    m = (torch.nn.Conv2d(8, 8, 3, padding=1) if path == "direct" else ConvDict()).eval()
    x = torch.randn(1, 8, 6, 6)
    c = kiln.compile(m, arg_inputs=(x,), min_block_size=1)  # the setting is read at a convolution's first run
    assert (c._out_kind == "single") == (path == "direct")
    monkeypatch.setenv("KILN_CPU_CONV_TACTIC", "fastest")
    with pytest.raises(kiln.InputError, match="KILN_CPU_CONV_TACTIC must be auto, direct or winograd, not 'fastest'"):
        c(x)
