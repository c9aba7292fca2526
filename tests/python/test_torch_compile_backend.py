"""torch.compile(model, backend="kiln"): the backend function on an fx graph as dynamo hands one
over (runs everywhere), and through torch.compile itself, which needs TorchDynamo (PyTorch >= 2.1)."""
import pytest
import torch

import kiln
from kiln import _dynamo

try:
    import torch._dynamo as dynamo
except ImportError:
    dynamo = None
needs_dynamo = pytest.mark.skipif(dynamo is None, reason="TorchDynamo needs PyTorch >= 2.1")


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


def test_the_backend_compiles_a_graph_and_each_new_input_signature():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 8)
    run = _dynamo.kiln_backend(gm, [x], {"min_block_size": 1})
    with torch.no_grad():
        assert torch.allclose(run(x), model(x), atol=1e-5)
        y = torch.randn(5, 8)  # another batch: the graph compiled again for it
        assert torch.allclose(run(y), model(y), atol=1e-5)
    assert len(run._kiln_compiled) == 2 and all(isinstance(m, kiln.CompiledModule) for m in run._kiln_compiled.values())
    with pytest.raises(TypeError, match="not_an_option"):
        _dynamo.kiln_backend(gm, [x], {"not_an_option": 1})


@needs_dynamo
def test_registered():
    assert "kiln" in dynamo.list_backends(exclude_tags=())


@needs_dynamo
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


@needs_dynamo
def test_bad_options_are_named():
    dynamo.reset()
    fn = torch.compile(Net().eval(), backend="kiln", options={"not_an_option": 1})
    with pytest.raises(Exception, match="not_an_option"):
        fn(torch.randn(2, 16))
