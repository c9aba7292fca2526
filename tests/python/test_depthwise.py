"""Depthwise convolutions (MobileNet's and EfficientNet's 3x3/5x5, ConvNeXt's 7x7) with their fused
bias, residual and activation, against PyTorch. With a GPU, each of kiln's own CUDA kernels runs
(KILN_CONV_TACTIC picks it, so the timed choice cannot hide one) in fp16 and bf16; on the CPU the
backend's own path runs in fp32."""
import pytest
import torch

import kiln

CUDA_KERNELS = ["kiln", "kiln-generic", "kiln-tiled", "kiln-tiled-short", "kiln-tiled-pair", "kiln-tiled-pixel"]
TILED = {"kiln-tiled", "kiln-tiled-short", "kiln-tiled-pair", "kiln-tiled-pixel"}


class Depthwise(torch.nn.Module):
    def __init__(self, channels, k, stride):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, k, stride, k // 2, groups=channels)
        self.stride = stride

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(y + x) if self.stride == 1 else torch.nn.functional.hardswish(y)


def cases(device):
    kernels = CUDA_KERNELS if device == "cuda" else ["auto"]
    # On CUDA only fp16/bf16 convolutions take channels-last, where kiln's kernels run; fp32 ones stay
    # NCHW on cuDNN (tests/engine/cuda_compute_test.cpp runs the fp32 kernels on NHWC layers).
    dtypes = [torch.float16, torch.bfloat16] if device == "cuda" else [torch.float32]
    for kernel in kernels:
        for dtype in dtypes:
            for channels in (32, 12, 6):  # 8-channel vectors, 4-channel tiles, neither
                if kernel in TILED and channels % 4:
                    continue
                for k in (3, 5, 7):
                    for stride in (1, 2):
                        yield kernel, dtype, channels, k, stride


def test_depthwise_kernels_match_pytorch(device, monkeypatch):
    torch.manual_seed(0)
    if device == "cpu":
        monkeypatch.delenv("KILN_CONV_TACTIC", raising=False)
    checked = 0
    for kernel, dtype, channels, k, stride in cases(device):
        if device == "cuda":
            monkeypatch.setenv("KILN_CONV_TACTIC", kernel)
        model = Depthwise(channels, k, stride).eval()
        x = torch.randn(2, channels, 15, 13)
        want = model(x)  # fp32 on the CPU: the reference for every dtype
        model = model.to(device, dtype).to(memory_format=torch.channels_last)
        xd = x.to(device, dtype).contiguous(memory_format=torch.channels_last)
        precision = {torch.float32: None, torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
        compiled = kiln.compile(model, arg_inputs=(xd,), min_block_size=1, precision=precision)
        assert compiled.program.fallback_ops() == []
        with torch.no_grad():
            got = compiled(xd).float().cpu()
        tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}[dtype]
        err = (got - want).abs().max().item() / want.abs().max().item()
        assert err < tol, f"{kernel} {dtype} C={channels} {k}x{k} stride {stride}: error {err:.3g} of the largest"
        checked += 1
    assert checked == (18 if device == "cpu" else 168)
