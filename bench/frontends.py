#!/usr/bin/env python3
"""Model front ends that convert through kiln's composite conversions, beside PyTorch eager on one
machine in one run: a log-mel spectrogram (torch.stft: reflect padding, frames cut by as_strided,
a window, the real FFT as a multiply by its DFT matrix, magnitudes, a mel filter bank, a log) over
5 and 30 seconds of 16 kHz audio, and an image preprocessing pipeline (an antialiased bicubic
resize, a crop, a normalization). Per case: the median latency of each method over interleaved
timing rounds (each round times both in turn, the order rotated; a round's value is the median of
its calls), the min-max of the round medians, kiln's largest difference from eager, and whether
kiln ran everything (fallback ops). One markdown table on stdout.

    PYTHONPATH=build/python /usr/bin/python3 bench/frontends.py [--device cpu|cuda] [--rounds 5] [--iters 20]
"""
import argparse
import statistics
import sys
import time
import warnings

import torch

import kiln


class LogMel(torch.nn.Module):
    """Whisper's front end: 400-point frames every 160 samples, 80 mel bands, log10."""

    def __init__(self, n_fft=400, hop=160, mels=80):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", torch.rand(mels, n_fft // 2 + 1, generator=torch.Generator().manual_seed(0)),
                             persistent=False)

    def forward(self, audio):
        stft = torch.stft(audio, self.n_fft, self.hop, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        return torch.clamp(self.filters @ power, min=1e-10).log10()


class Preprocess(torch.nn.Module):
    """Resize(256, bicubic, antialias) -> CenterCrop(224) -> normalize, on a batch of images."""

    def __init__(self):
        super().__init__()
        from torchvision import transforms
        self.resize = transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True)
        self.crop = transforms.CenterCrop(224)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1))

    def forward(self, images):
        return (self.crop(self.resize(images)) - self.mean) / self.std


def cases(device):
    g = torch.Generator().manual_seed(1)
    return [("log-mel, 5 s", LogMel(), torch.randn(1, 16000 * 5, generator=g)),
            ("log-mel, 30 s", LogMel(), torch.randn(1, 16000 * 30, generator=g)),
            ("resize+crop+normalize, 8x480x640", Preprocess(), torch.rand(8, 3, 480, 640, generator=g))]


def timed(fn, x, iters, device):
    times = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(x)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(f"| front end | eager ms | kiln ms | eager / kiln | fallback ops | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name, model, x in cases(args.device):
        model, x = model.to(args.device).eval(), x.to(args.device)
        compiled = kiln.compile(model, arg_inputs=(x,), min_block_size=1)
        with torch.no_grad():
            diff = (compiled(x) - model(x)).abs().max().item()
            methods = {"eager": model, "kiln": compiled}
            for fn in methods.values():  # warm up
                timed(fn, x, 3, args.device)
            rounds = {m: [] for m in methods}
            for r in range(args.rounds):
                order = list(methods)[r % 2:] + list(methods)[:r % 2]
                for m in order:
                    rounds[m].append(timed(methods[m], x, args.iters, args.device))
        med = {m: statistics.median(v) for m, v in rounds.items()}
        spread = {m: f"{min(v):.2f}-{max(v):.2f}" for m, v in rounds.items()}
        print(f"| {name} | {med['eager']:.2f} ({spread['eager']}) | {med['kiln']:.2f} ({spread['kiln']}) | "
              f"{med['eager'] / med['kiln']:.2f}x | {', '.join(compiled.program.fallback_ops()) or 'none'} | {diff:.1e} |",
              flush=True)
        print(f"[frontends] {name} done", file=sys.stderr)


if __name__ == "__main__":
    main()
