"""nn.EmbeddingBag / F.embedding_bag converted whole (no op left to PyTorch) and equal to PyTorch:
sum, mean and max bags cut by offsets (empty bags among them), the last offset included, fixed-size
2-d bags, and per-sample weights."""
import pytest
import torch

import kiln


class Bags(torch.nn.Module):
    def __init__(self, mode, include_last_offset=False, weighted=False):
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(20, 6, mode=mode, include_last_offset=include_last_offset)
        self.weighted = weighted

    def forward(self, indices, offsets, weights):
        return self.bag(indices, offsets, per_sample_weights=weights if self.weighted else None) * 2


def converted_whole(compiled):
    left = [n.target for n in compiled.graph.nodes if n.op == "call_function"]
    return not left, left


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("include_last_offset", [False, True])
def test_bags_cut_by_offsets(mode, include_last_offset):
    torch.manual_seed(0)
    m = Bags(mode, include_last_offset).eval()
    indices = torch.tensor([3, 7, 7, 1, 19, 0, 4, 4, 12])
    # an empty bag (offsets 2, 2), then bags of 3 and 4 (the last cut only with include_last_offset)
    offsets = torch.tensor([0, 2, 2, 5, 9] if include_last_offset else [0, 2, 2, 5])
    weights = torch.rand(9)
    compiled = kiln.compile(m, arg_inputs=(indices, offsets, weights), min_block_size=1)
    whole, left = converted_whole(compiled)
    assert whole, f"left to PyTorch: {left}"
    with torch.no_grad():
        torch.testing.assert_close(compiled(indices, offsets, weights), m(indices, offsets, weights))
        other = torch.tensor([5, 5, 5, 18, 2, 9, 11, 0, 3])  # new indices, same offsets: not baked in
        torch.testing.assert_close(compiled(other, offsets, weights), m(other, offsets, weights))


def test_per_sample_weights_sum():
    torch.manual_seed(1)
    m = Bags("sum", weighted=True).eval()
    indices, offsets, weights = torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([0, 1, 4]), torch.rand(6)
    compiled = kiln.compile(m, arg_inputs=(indices, offsets, weights), min_block_size=1)
    whole, left = converted_whole(compiled)
    assert whole, f"left to PyTorch: {left}"
    with torch.no_grad():
        torch.testing.assert_close(compiled(indices, offsets, weights), m(indices, offsets, weights))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_fixed_size_bags(mode):
    torch.manual_seed(2)
    bag = torch.nn.EmbeddingBag(20, 6, mode=mode).eval()
    indices = torch.randint(0, 20, (4, 3))
    compiled = kiln.compile(bag, arg_inputs=(indices,), min_block_size=1)
    whole, left = converted_whole(compiled)
    assert whole, f"left to PyTorch: {left}"
    with torch.no_grad():
        torch.testing.assert_close(compiled(indices), bag(indices))
