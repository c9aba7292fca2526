"""Sampling ops keep their pixel coordinates in fp32 under fp16/bf16 builds (the converters' index
math runs in a precision-constrained scope): on images past 256 pixels bf16 cannot hold a pixel
position, and before, grid_sample in bf16 gathered out of range or from the wrong pixel."""
import pytest
import torch

import kiln


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).item()


@pytest.mark.parametrize("mode,padding,align", [("bilinear", "zeros", False), ("nearest", "border", True),
                                                ("bilinear", "reflection", True)])
def test_grid_sample_on_a_large_image_in_bf16(mode, padding, align):
    class Warp(torch.nn.Module):
        def forward(self, x, grid):
            return torch.nn.functional.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align)

    torch.manual_seed(0)
    x = torch.randn(1, 4, 300, 320)
    grid = torch.rand(1, 40, 40, 2) * 2.2 - 1.1
    compiled = kiln.compile(Warp(), arg_inputs=(x, grid), precision="bf16", min_block_size=1)
    assert compiled.program.fallback_ops() == []
    with torch.no_grad():
        assert cosine(compiled(x, grid), Warp()(x, grid)) > 0.9999


def test_roi_align_on_a_large_image_in_bf16():
    torchvision = pytest.importorskip("torchvision")

    class Pool(torch.nn.Module):
        def forward(self, x, boxes):
            return torchvision.ops.roi_align(x, boxes, output_size=(7, 7), spatial_scale=1.0, sampling_ratio=2,
                                             aligned=True)

    torch.manual_seed(1)
    x = torch.randn(1, 8, 400, 600)
    boxes = torch.tensor([[0, 300.3, 250.7, 590.2, 390.9], [0, 10.0, 5.0, 400.0, 380.0], [0, 511.5, 100.25, 520.5, 108.0]])
    compiled = kiln.compile(Pool(), arg_inputs=(x, boxes), precision="bf16", min_block_size=1)
    with torch.no_grad():
        assert cosine(compiled(x, boxes), Pool()(x, boxes)) > 0.999
