"""torchvision.ops.roi_align converts whole (the pooling of Faster/Mask R-CNN heads): every region
of interest against torchvision on random inputs and boxes (inside, across and outside the image,
degenerate ones), both alignment conventions, a dynamic number of regions, and half precision;
an adaptive sampling ratio (a data-dependent point count) runs in PyTorch, still correct."""
import pytest
import torch

import kiln

torchvision = pytest.importorskip("torchvision")
from torchvision.ops import roi_align  # noqa: E402


class RoIAlign(torch.nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, x, boxes):
        return roi_align(x, boxes, **self.options)


def random_boxes(n, batch, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(n, generator=g) * (w + 10) - 8      # some start outside the image
    y1 = torch.rand(n, generator=g) * (h + 10) - 8
    x2 = x1 + torch.rand(n, generator=g) * w * 0.8       # some tiny, some past the far edge
    y2 = y1 + torch.rand(n, generator=g) * h * 0.8
    b = torch.randint(0, batch, (n,), generator=g).float()
    return torch.stack([b, x1, y1, x2, y2], dim=1)


@pytest.mark.parametrize("options", [
    dict(output_size=(7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=True),
    dict(output_size=(3, 5), spatial_scale=1.0, sampling_ratio=1, aligned=False),
    dict(output_size=(14, 14), spatial_scale=0.125, sampling_ratio=3, aligned=False),
])
def test_matches_torchvision_and_converts(options):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 24, 40)
    boxes = random_boxes(12, 2, 24 / options["spatial_scale"], 40 / options["spatial_scale"], seed=1)
    model = RoIAlign(**options)
    compiled = kiln.compile(model, arg_inputs=(x, boxes), min_block_size=1)
    assert compiled.program.fallback_ops() == []  # converted, not left to PyTorch
    with torch.no_grad():
        for seed in (1, 2, 3):  # other boxes and images than the traced ones
            xs = torch.randn(2, 6, 24, 40)
            bs = random_boxes(12, 2, 24 / options["spatial_scale"], 40 / options["spatial_scale"], seed)
            torch.testing.assert_close(compiled(xs, bs), model(xs, bs), atol=2e-5, rtol=1e-5)


@pytest.mark.skipif(not hasattr(torch, "export"), reason="PyTorch 1.13's tracer cannot run torchvision's kernel "
                    "on symbolic sizes; torch.export (>= 2.1) traces its fake kernel")
def test_a_dynamic_number_of_regions():
    x = torch.randn(1, 4, 16, 16)
    model = RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    compiled = kiln.compile(model, arg_inputs=(x, kiln.Input(min_shape=(1, 5), opt_shape=(8, 5), max_shape=(64, 5))),
                            min_block_size=1)
    assert compiled.program.fallback_ops() == []
    with torch.no_grad():
        for n in (1, 5, 64):
            boxes = random_boxes(n, 1, 16, 16, seed=n)
            torch.testing.assert_close(compiled(x, boxes), model(x, boxes), atol=2e-5, rtol=1e-5)


def test_bf16():
    x = torch.randn(1, 8, 20, 20)
    boxes = random_boxes(6, 1, 20, 20, seed=4)
    model = RoIAlign(output_size=(4, 4), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    compiled = kiln.compile(model, arg_inputs=(x, boxes), precision="bf16", min_block_size=1)
    with torch.no_grad():
        got, want = compiled(x, boxes).float(), model(x, boxes)
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999


def test_adaptive_sampling_runs_in_pytorch():
    x = torch.randn(1, 4, 16, 16)
    boxes = random_boxes(5, 1, 16, 16, seed=7)
    model = RoIAlign(output_size=(3, 3), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    with pytest.warns(UserWarning, match="accelerated"):
        compiled = kiln.compile(model, arg_inputs=(x, boxes), min_block_size=1)
    assert compiled.program.fallback_ops() == ["torchvision.roi_align.default"]
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, boxes), model(x, boxes))
