#!/usr/bin/env python3
"""Conversion coverage on real models (run where PyTorch >= 2.8, torchvision and transformers exist:
the GPU machine). Exports each model in both forms (torch.export.export, and run_decompositions()),
then asks `kiln compile --dryrun --min-block-size 1` for its coverage line and unsupported ops, and,
when every op converts, compares `kiln run` (CPU) with PyTorch.

    python3 tests/conversion/real_models_coverage.py KILN_BINARY OUT_DIR [--only a,b] [--no-run]
"""
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class UNet(nn.Module):
    """A small diffusion-style UNet: conv, group norm, SiLU, down/up sampling, skip concatenation."""

    def __init__(self, c=32):
        super().__init__()
        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU())
        self.e1, self.e2, self.mid = block(3, c), block(c, 2 * c), block(2 * c, 2 * c)
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.d1 = block(2 * c, c)
        self.out = nn.Conv2d(c, 3, 1)

    def forward(self, x):
        a = self.e1(x)
        b = self.e2(F.avg_pool2d(a, 2))
        m = self.mid(b) + F.interpolate(b, scale_factor=1.0, mode="bilinear", align_corners=False)
        u = self.up(m)
        return self.out(self.d1(torch.cat([u, a], 1)))


class HiddenState(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state


class Backbone(nn.Module):
    """A detector backbone (ResNet-50 + FPN) returning its finest feature map."""

    def __init__(self):
        super().__init__()
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        self.b = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=0)

    def forward(self, x):
        return self.b(x)["0"]


def tokens(b, s, vocab):
    return torch.randint(0, vocab, (b, s), dtype=torch.int64)


def models():
    import torchvision.models as tv
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, T5Config, T5EncoderModel
    img = lambda n=224: (torch.randn(1, 3, n, n),)
    return {
        "resnet50": (lambda: tv.resnet50(), lambda: (torch.randn(2, 3, 224, 224),),
                     lambda: ({0: torch.export.Dim("batch", min=1, max=64)},)),
        "mobilenet_v3": (lambda: tv.mobilenet_v3_large(), img, None),
        "efficientnet_b0": (lambda: tv.efficientnet_b0(), img, None),
        "convnext_tiny": (lambda: tv.convnext_tiny(), img, None),
        "vit_b16": (lambda: tv.vit_b_16(), img, None),
        "swin_t": (lambda: tv.swin_t(), img, None),
        "fpn_backbone": (Backbone, lambda: img(256), None),
        "unet": (UNet, lambda: img(64), None),
        "bert_base": (lambda: HiddenState(BertModel(BertConfig(), add_pooling_layer=False)),
                      lambda: (tokens(1, 128, 30522),), None),
        "gpt2": (lambda: HiddenState(GPT2Model(GPT2Config())), lambda: (tokens(1, 128, 50257),), None),
        "t5_small": (lambda: HiddenState(T5EncoderModel(T5Config(d_model=512, d_ff=2048, num_layers=6, num_heads=8))),
                     lambda: (tokens(1, 64, 32128),), None),
    }


def main():
    kiln, out = sys.argv[1], sys.argv[2]
    only = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), "")
    run = "--no-run" not in sys.argv
    table = models()
    names = only.split(",") if only else list(table)
    for name in names:
        factory, make_inputs, dyn = table[name]
        try:
            torch.manual_seed(0)
            model = factory().eval()
            inputs = make_inputs()
            with torch.no_grad():
                expected = model(*inputs)
            ep = torch.export.export(model, inputs, dynamic_shapes=dyn() if dyn else None)
            d = os.path.join(out, name)
            os.makedirs(d, exist_ok=True)
            torch.export.save(ep, os.path.join(d, "export.pt2"))
            torch.export.save(ep.run_decompositions(), os.path.join(d, "core_aten.pt2"))
            for i, t in enumerate(inputs):
                np.save(os.path.join(d, f"input_{i}.npy"), t.numpy())
        except Exception as e:
            print(f"{name}: export FAILED: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        for form in ("export", "core_aten"):
            pt2 = os.path.join(d, form + ".pt2")
            r = subprocess.run([kiln, "compile", pt2, "-o", os.path.join(d, form + ".kiln"), "--min-block-size", "1",
                                "--dryrun"], capture_output=True, text=True, timeout=300)
            lines = (r.stdout + r.stderr).splitlines()
            cov = [l for l in lines if l.startswith("coverage:")]
            bad = [l.strip() for l in lines if l.strip().startswith("%") or "error" in l]
            print(f"{name}/{form}: {cov[0] if cov else 'NO COVERAGE LINE rc=%d' % r.returncode}", flush=True)
            for l in bad[:12]:
                print("    " + l[:240], flush=True)
            full = cov and "(100.0%)" in cov[0]
            if run and full:
                od = os.path.join(d, form + "_out")
                os.makedirs(od, exist_ok=True)
                args = [kiln, "run", pt2, "--output-dir", od]
                for i in range(len(inputs)):
                    args += ["--input", os.path.join(d, f"input_{i}.npy")]
                try:
                    r = subprocess.run(args, capture_output=True, text=True, timeout=240)
                    got = np.load(os.path.join(od, "output_0.npy"))
                    want = expected.detach().numpy()
                    err = float(np.abs(got - want).max())
                    print(f"    run: max|err| {err:.3g} (max|ref| {float(np.abs(want).max()):.3g})", flush=True)
                except Exception as e:
                    print(f"    run FAILED: {type(e).__name__}: {str(e)[:200]} {r.stderr[-300:] if r else ''}", flush=True)


if __name__ == "__main__":
    main()
