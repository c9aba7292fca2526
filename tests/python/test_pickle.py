"""A compiled module survives torch.save / torch.load, pickle and copy.deepcopy: the copy runs the
same plans and fallback ops, takes the same (nested) inputs and gives the same outputs, without
the original module or a rebuild."""
import copy
import io
import pickle

import torch

import kiln


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(6, 8)
        self.b = torch.nn.Linear(8, 3)

    def forward(self, batch):
        h = torch.relu(self.a(batch["x"])) * batch["scale"]
        return {"logits": self.b(torch.sigmoid(h)), "hidden": h}


def compiled_net():
    torch.manual_seed(0)
    m = Net().eval()
    batch = {"x": torch.randn(4, 6), "scale": torch.rand(4, 1)}
    # sigmoid left to PyTorch: the copy must carry fallback ops and their weights too
    compiled = kiln.compile(m, arg_inputs=(batch,), min_block_size=1, torch_executed_ops={"torch.ops.aten.sigmoid.default"})
    return m, compiled, batch


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_torch_save_and_load():
    m, compiled, batch = compiled_net()
    buf = io.BytesIO()
    torch.save(compiled, buf)
    buf.seek(0)
    # A whole module, not a state dict: PyTorch >= 2.6 loads only tensors unless told otherwise
    # (1.13 has the argument too, with this default).
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded) is type(compiled)
    with torch.no_grad():
        assert_same(loaded(batch), m(batch))
        other = {"x": torch.randn(4, 6), "scale": torch.rand(4, 1)}
        assert_same(loaded(other), compiled(other))


def test_pickle_and_deepcopy():
    m, compiled, batch = compiled_net()
    for copied in (pickle.loads(pickle.dumps(compiled)), copy.deepcopy(compiled)):
        assert copied is not compiled
        with torch.no_grad():
            assert_same(copied(batch), m(batch))
    assert len([n for n in compiled.graph.nodes if n.op == "call_function" and "sigmoid" in str(n.target)]) == 1
