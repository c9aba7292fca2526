"""kiln.save(..., output_format="exported_program"): a .pt2 of torch.export whose graph calls the
program through torch.ops.kiln.execute_program. The round trips need torch.export and
torch.library.custom_op (PyTorch >= 2.4: the GPU machine); the op's own implementation, its fake
sizes and the errors are tested on any PyTorch."""
import json
import os

import numpy as np
import pytest
import torch

import kiln
from kiln import _export
from kiln._values import eval_sym

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_export = pytest.mark.skipif(not _export.available(), reason="needs torch.export and torch.library.custom_op "
                                  "(PyTorch >= 2.4)")


class TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU())
        self.a, self.b = torch.nn.Linear(16, 4), torch.nn.Linear(16, 2)

    def forward(self, x):
        h = self.body(x)
        return {"scores": self.a(h), "extra": (self.b(h).relu(), h.sum(-1))}


def dynamic_mlp():
    return kiln.load_pt2(os.path.join(ROOT, "examples", "mlp_dyn.pt2"), min_block_size=1)


def program_tensor(compiled):
    return torch.frombuffer(bytearray(compiled.program.serialize()), dtype=torch.uint8)


def test_unknown_formats_and_objects_are_refused(tmp_path):
    compiled = kiln.compile(torch.nn.Linear(4, 3), arg_inputs=(torch.randn(2, 4),), min_block_size=1)
    with pytest.raises(kiln.InputError, match="output_format='onnx' is not one of 'kiln', 'exported_program'"):
        kiln.save(compiled, tmp_path / "m.onnx", output_format="onnx")
    with pytest.raises(kiln.InputError, match="expected what kiln.compile or kiln.load returns, got Linear"):
        kiln.save(torch.nn.Linear(4, 3), tmp_path / "m.kiln")
    assert not os.listdir(tmp_path)


@pytest.mark.skipif(_export.available(), reason="this PyTorch has torch.export")
def test_without_torch_export_the_error_names_what_is_missing(tmp_path):
    compiled = kiln.compile(torch.nn.Linear(4, 3), arg_inputs=(torch.randn(2, 4),), min_block_size=1)
    with pytest.raises(kiln.InputError, match=r"needs torch.export .* \(PyTorch >= 2.4\); this is PyTorch"):
        kiln.save(compiled, tmp_path / "m.pt2", output_format="exported_program")
    assert not os.listdir(tmp_path)


def test_the_op_runs_the_program_from_its_bytes():
    compiled = dynamic_mlp()
    data = compiled.program.serialize()
    signature = json.dumps(_export.signature_of(compiled.program, data))
    for batch in (3, 40):
        x = torch.randn(batch, 64)
        (got,) = _export._execute(torch.frombuffer(bytearray(data), dtype=torch.uint8), [x], signature)
        torch.testing.assert_close(got, compiled(x))
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 1
    with pytest.raises(kiln.InputError, match="do not match its signature"):
        _export._execute(torch.frombuffer(damaged, dtype=torch.uint8), [torch.randn(2, 64)],
                         signature.replace(json.loads(signature)["id"], "0" * 64))


def test_outputs_never_alias_the_inputs():
    class PassThrough(torch.nn.Module):
        def forward(self, x):
            return x, x * 2

    x = torch.randn(5, 3)
    compiled = kiln.compile(PassThrough(), arg_inputs=(x,), min_block_size=1)
    data = compiled.program.serialize()
    signature = json.dumps(_export.signature_of(compiled.program, data))
    outs = _export._execute(torch.frombuffer(bytearray(data), dtype=torch.uint8), [x], signature)
    torch.testing.assert_close(outs[0], x)
    torch.testing.assert_close(outs[1], x * 2)
    assert outs[0].data_ptr() != x.data_ptr()


def test_views_of_inputs_from_pytorch_ops_are_copied():
    class Tail(torch.nn.Module):
        def forward(self, x):
            return x[1:], x * 2

    x = torch.randn(5, 3)
    # The slice left to PyTorch: the program returns a view of its input, at an offset.
    compiled = kiln.compile(Tail(), arg_inputs=(x,), min_block_size=1, torch_executed_ops=["aten.slice.Tensor"])
    assert compiled.program.fallback_ops() == ["aten.slice.Tensor"]
    assert _export._storage_of(compiled(x)[0]) == _export._storage_of(x)  # what PyTorch's slice returns
    data = compiled.program.serialize()
    signature = json.dumps(_export.signature_of(compiled.program, data))
    outs = _export._execute(torch.frombuffer(bytearray(data), dtype=torch.uint8), [x], signature)
    torch.testing.assert_close(outs[0], x[1:])
    assert _export._storage_of(outs[0]) != _export._storage_of(x)


def test_size_expressions_evaluate_without_python_max():
    sizes = {"s0": 7, "s1": 3}
    assert eval_sym(("Add", "s0", ("Mul", 2, "s1")), sizes) == 13
    assert eval_sym(("Max", "s1", 5), sizes) == 5 and eval_sym(("Min", "s0", 5), sizes) == 5
    assert eval_sym(("CeilDiv", "s0", 2), sizes) == 4 and eval_sym(("FloorDiv", "s0", 2), sizes) == 3
    assert eval_sym(("Mod", "s0", 4), sizes) == 3 and eval_sym(("Pow", "s1", 2), sizes) == 9


def test_fake_sizes_follow_the_inputs():
    compiled = dynamic_mlp()
    data = compiled.program.serialize()
    sig = _export.signature_of(compiled.program, data)
    assert sig["inputs"] == [{"name": "x", "dtype": "float32", "sizes": ["s77", 64]}]
    assert sig["ranges"] == {"s77": [1, 16, 256]}
    (out,) = _export._fake(torch.empty(0, dtype=torch.uint8), [torch.empty(7, 64)], json.dumps(sig))
    assert out.shape == (7, 32) and out.dtype == torch.float32


@needs_export
def test_a_static_module_round_trips_through_torch_export(tmp_path):
    model = TwoHeads().eval()
    x = torch.randn(3, 8)
    compiled = kiln.compile(model, arg_inputs=(x,), min_block_size=1)
    path = tmp_path / "two_heads.pt2"
    kiln.save(compiled, path, output_format="exported_program")
    loaded = torch.export.load(str(path))
    targets = [str(n.target) for n in loaded.graph.nodes if n.op == "call_function"]
    assert any("kiln.execute_program" in t for t in targets), targets
    got = loaded.module()(x)
    want = compiled(x)
    torch.testing.assert_close(got["scores"], want["scores"])
    torch.testing.assert_close(got["extra"][0], want["extra"][0])
    torch.testing.assert_close(got["extra"][1], want["extra"][1])


@needs_export
def test_dynamic_sizes_stay_dynamic(tmp_path):
    compiled = dynamic_mlp()
    path = tmp_path / "mlp_dyn_kiln.pt2"
    kiln.save(compiled, path, output_format="exported_program")
    module = torch.export.load(str(path)).module()
    for batch in (2, 5, 256):
        x = torch.randn(batch, 64)
        torch.testing.assert_close(module(x), compiled(x))
    x = torch.from_numpy(np.load(os.path.join(ROOT, "examples", "mlp_dyn.input_0.npy")))
    want = np.load(os.path.join(ROOT, "examples", "mlp_dyn.output_0.npy"))
    np.testing.assert_allclose(module(x).numpy(), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception):  # outside the compiled range: torch.export's input check refuses it
        module(torch.randn(300, 64))


@needs_export
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_gpu_program_round_trips(tmp_path):
    model = TwoHeads().eval().cuda()
    x = torch.randn(4, 8, device="cuda")
    compiled = kiln.compile(model, arg_inputs=(x,), min_block_size=1, device="cuda")
    path = tmp_path / "gpu.pt2"
    kiln.save(compiled, path, output_format="exported_program")
    got = torch.export.load(str(path)).module()(x)
    assert got["scores"].is_cuda
    torch.testing.assert_close(got["scores"], compiled(x)["scores"])
