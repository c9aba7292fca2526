"""torch.compile(model, backend="kiln"): needs TorchDynamo (PyTorch >= 2.1); skipped on older
PyTorch, where kiln must still import and the backend must stay unregistered."""
import pytest
import torch

import kiln
from kiln import _dynamo

dynamo = pytest.importorskip("torch._dynamo", reason="TorchDynamo needs PyTorch >= 2.1")


def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 32)
        self.b = torch.nn.Linear(32, 8)

    def forward(self, x):
        y = torch.relu(self.a(x))
        if y.sum() > 0:  # data-dependent Python branch: a graph break
            y = y * 2
        return torch.sigmoid(self.b(y))


def test_registered():
    assert "kiln" in dynamo.list_backends(exclude_tags=())


def test_graphs_run_on_kiln_with_graph_breaks_and_new_shapes():
    dynamo.reset()
    built = []
    original = _dynamo.kiln_backend

    def spy(gm, example_inputs, options=None):
        run = original(gm, example_inputs, options)
        built.append(run._kiln_compiled)
        return run

    dynamo.register_backend(spy, name="kiln_spy")
    torch.manual_seed(0)
    model = Net().eval().to(device())
    fn = torch.compile(model, backend="kiln_spy", options={"min_block_size": 1})
    with torch.no_grad():
        for batch in (4, 4, 9):
            x = torch.randn(batch, 16, device=device())
            assert torch.allclose(fn(x), model(x), atol=1e-4)
    assert built, "the kiln backend never ran"
    assert all(isinstance(m, kiln.CompiledModule) for c in built for m in c.values())
    assert sum(len(c) for c in built) >= 2  # graphs on both sides of the break


def test_bad_options_are_named():
    dynamo.reset()
    fn = torch.compile(Net().eval(), backend="kiln", options={"not_an_option": 1})
    with pytest.raises(Exception, match="not_an_option"):
        fn(torch.randn(2, 16))
