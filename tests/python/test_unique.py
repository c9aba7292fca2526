"""torch.unique (sorted) and torch.unique_consecutive converted whole (their count of distinct
values is a data-dependent size, kiln's output allocator) and equal to PyTorch with every output:
values, inverse indices and counts, on new inputs whose count differs from the traced one."""
import pytest
import torch

import kiln


class Unique(torch.nn.Module):
    def __init__(self, consecutive, return_inverse, return_counts):
        super().__init__()
        self.consecutive, self.inverse, self.counts = consecutive, return_inverse, return_counts

    def forward(self, x):
        fn = torch.unique_consecutive if self.consecutive else torch.unique
        out = fn(x * 1, return_inverse=self.inverse, return_counts=self.counts)
        return out if isinstance(out, tuple) else (out,)


def left_to_pytorch(compiled):
    return [n.target for n in compiled.graph.nodes if n.op == "call_function" and "getitem" not in str(n.target)]


@pytest.mark.parametrize("consecutive", [False, True])
@pytest.mark.parametrize("return_inverse", [False, True])
@pytest.mark.parametrize("return_counts", [False, True])
def test_unique_matches_pytorch(consecutive, return_inverse, return_counts):
    m = Unique(consecutive, return_inverse, return_counts).eval()
    x = torch.tensor([[3, 1, 1, 7], [7, 7, 0, 3], [2, 2, 2, 9]])
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    left = left_to_pytorch(compiled)
    assert not left, f"left to PyTorch: {left}"
    for inputs in (x, torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5], [1, 5, 5, 5]]), torch.randint(-4, 4, (3, 4))):
        got, want = compiled(inputs), m(inputs)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_float_values():
    m = Unique(False, True, True).eval()
    x = torch.tensor([0.5, -1.0, 0.5, 2.25, -1.0, 3.0])
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    assert not left_to_pytorch(compiled)
    for g, w in zip(compiled(x), m(x)):
        torch.testing.assert_close(g, w)
