"""x[mask] (a boolean mask index) converts whole: its data-dependent row count flows into the ops
after it inside the segment, so every call gives PyTorch's result, whatever the count (no segment
built for the traced count, no ShapeError on the next input)."""
import pytest
import torch

import kiln


class KeepBoxes(torch.nn.Module):
    """A detector's post-processing step: boxes and scores above a threshold, the boxes rescaled."""

    def forward(self, boxes, scores):
        keep = scores > 0.5
        x1, y1, x2, y2 = boxes[keep].unbind(-1)
        return torch.stack([x1 * 2, y1, x2 - x1, y2 + 1], dim=-1), scores[keep]


class MaskInner(torch.nn.Module):
    """x[:, mask] over two dims after a whole one."""

    def forward(self, x, m):
        return x[:, m > 0].relu() + 1


def test_boxes_above_a_threshold_convert_whole_and_follow_the_count(device):
    boxes, scores = torch.randn(20, 4, device=device), torch.rand(20, device=device)
    compiled = kiln.compile(KeepBoxes().eval(), arg_inputs=(boxes, scores), min_block_size=1)
    assert compiled.program.fallback_ops() == [] and len(compiled.program.segments) == 1
    counts = set()
    for low, high in ((0.0, 0.4), (0.3, 0.7), (0.0, 1.0), (0.4, 1.2), (0.6, 1.0)):  # none kept, ..., all
        s = low + torch.rand(20, device=device) * (high - low)
        want, got = KeepBoxes()(boxes, s), compiled(boxes, s)
        counts.add(want[0].shape[0])
        for w, g in zip(want, got):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w)
    assert 0 in counts and 20 in counts and len(counts) >= 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_a_mask_over_inner_dims(device, dtype):
    x = (torch.randn(2, 5, 3, 4, device=device) * 5).to(dtype)
    m = torch.randn(5, 3, device=device)
    compiled = kiln.compile(MaskInner().eval(), arg_inputs=(x, m), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    for _ in range(3):
        m = torch.randn(5, 3, device=device)
        torch.testing.assert_close(compiled(x, m), MaskInner()(x, m))
