#!/usr/bin/env python3
"""Exports kiln's own test programs with PyTorch >= 2.8 (run on the GPU machine, which has 2.11).

For each model: tests/data/<name>/export.pt2 (torch.export.export, TRAINING verifier),
core_aten.pt2 (after run_decompositions(), ATEN verifier), input_<i>.npy and PyTorch's
output_<i>.npy (fp32, CPU, eval mode, seeded random weights). Models are kept small so the
repository stays light; the big benchmark models are exported by bench/gpu_compare.py instead.

    python3 scripts/make_fixtures.py [--out tests/data] [--only name,name]
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class GeLU(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return F.gelu(x, approximate=self.mode)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 256)
        self.b = nn.Linear(256, 32)
        self.n = nn.LayerNorm(32)

    def forward(self, x):
        return torch.softmax(self.n(self.b(F.gelu(self.a(x), approximate="tanh"))), dim=-1)


class ConvNet(nn.Module):
    """Conv, batch norm, pooling, upsampling, slicing, concatenation, a classifier head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.MaxPool2d(2)
        self.b2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.Hardswish())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = self.b2(self.down(self.b1(self.stem(x))))
        y = torch.cat([self.up(y)[:, :16], self.b1(self.stem(x))], dim=1)
        return F.hardswish(self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)))


class CausalAttention(nn.Module):
    """A decoder's self-attention as transformers' sdpa path writes it: the causal mask built
    from aranges (where(k_pos <= q_pos, 0, lowest)) and passed to scaled_dot_product_attention as
    data; kiln's builder recognises it as the causal flag. (transformers' GPT-2 itself cannot be
    fixtured: PyTorch 2.11 fails to rerun or decompose its sdpa export on the CPU.)"""

    def __init__(self, width=64, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x):
        b, n, e = x.shape
        q, k, v = self.qkv(x).split(e, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, e // self.heads).transpose(1, 2) for t in (q, k, v))
        pos = torch.arange(n, device=x.device)
        keep = (pos[None, :] <= pos[:, None]).expand(b, 1, n, n)
        mask = torch.where(keep, 0.0, torch.finfo(x.dtype).min)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, e))


class Ops(nn.Module):
    """A grab bag of ops real models use that the classifiers above do not."""

    def forward(self, x):
        a = torch.cumsum(x, dim=-1) * 0.1
        b = torch.where(x > 0, x.exp(), torch.sigmoid(x))
        c = torch.clamp(a - b, -2.0, 2.0).mean(dim=1, keepdim=True)
        d = F.pad(x, (1, 1)).narrow(-1, 1, x.shape[-1])
        e = torch.stack([d, c.expand_as(d)], dim=0).sum(0)
        return torch.tanh(e) + F.silu(x).amax(-1, keepdim=True)


def vit_small():
    from torchvision.models.vision_transformer import VisionTransformer
    model = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4,
                              hidden_dim=64, mlp_dim=128, num_classes=10)
    # torchvision zero-initializes the head, which would make every expected output 0.
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


def realistic_batch_norms(model):
    """Random-init batch norms are identities and activations fade to ~1e-7 through mobilenet's
    blocks (below fp16's normal range); trained-like statistics keep them in a realistic range."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.05 + 0.01)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def mobilenet():
    from torchvision.models import mobilenet_v2
    return realistic_batch_norms(mobilenet_v2(width_mult=0.25, num_classes=10))


def bert_tiny():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64)
    return _hidden_state(BertModel(cfg, add_pooling_layer=False))


def gpt2_tiny():
    from transformers import GPT2Config, GPT2Model
    cfg = GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return _hidden_state(GPT2Model(cfg))


def t5_tiny():
    from transformers import T5Config, T5EncoderModel
    cfg = T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    return _hidden_state(T5EncoderModel(cfg))


class _hidden_state(nn.Module):
    """Returns last_hidden_state only, so the program has one tensor output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state


def tokens(batch, seq):
    return torch.randint(0, 512, (batch, seq), dtype=torch.int64)


# name -> (model factory, example inputs, dynamic shapes or None)
MODELS = {
    "gelu_tanh": (lambda: GeLU("tanh"), lambda: (torch.randn(2, 5),), None),
    "gelu_erf": (lambda: GeLU("none"), lambda: (torch.randn(2, 5),), None),
    "mlp_dyn": (MLP, lambda: (torch.randn(8, 64),),
                lambda: ({0: torch.export.Dim("batch", min=1, max=256)},)),
    "convnet_small": (ConvNet, lambda: (torch.randn(2, 3, 32, 32),), None),
    "ops_mix": (Ops, lambda: (torch.randn(3, 4, 8),), None),
    "vit_small": (vit_small, lambda: (torch.randn(2, 3, 64, 64),), None),
    "mobilenet_v2": (mobilenet, lambda: (torch.randn(1, 3, 64, 64),), None),
    "bert_tiny": (bert_tiny, lambda: (tokens(2, 16),), None),
    "gpt2_tiny": (gpt2_tiny, lambda: (tokens(2, 16),), None),
    "causal_sdpa": (CausalAttention, lambda: (torch.randn(2, 16, 64),), None),
    "t5_tiny": (t5_tiny, lambda: (tokens(2, 16),), None),
}


def export_one(name, out_dir):
    factory, make_inputs, dynamic = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    inputs = make_inputs()
    with torch.no_grad():
        # Running once in train-free eval mode also settles batch-norm statistics to their init.
        expected = model(*inputs)
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    ep = torch.export.export(model, inputs, dynamic_shapes=dynamic() if dynamic else None)
    torch.export.save(ep, os.path.join(out_dir, name, "export.pt2"))
    # The archive must reproduce the eager result it is stored with: reload it and run it.
    reloaded = torch.export.load(os.path.join(out_dir, name, "export.pt2")).module()
    try:
        with torch.no_grad():
            again = reloaded(*inputs)
    except (RuntimeError, ValueError) as e:
        # PyTorch 2.11 cannot run some of its own reloaded archives on the CPU (GPT-2's sdpa
        # output viewed with the strides it had at export): nothing to compare, eager's output stands.
        print(f"{name}: note: PyTorch cannot rerun the reloaded archive ({str(e).splitlines()[0]})", file=sys.stderr)
        again = expected
    for want, got in zip(*(o if isinstance(o, (tuple, list)) else (o,) for o in (expected, again))):
        err = ((want - got).abs().max() / want.abs().max().clamp_min(1e-30)).item()
        if err > 1e-4:
            raise RuntimeError(f"reloaded export.pt2 disagrees with eager: relative error {err:.3g}")
    core = ep.run_decompositions()
    torch.export.save(core, os.path.join(out_dir, name, "core_aten.pt2"))
    for i, t in enumerate(inputs):
        np.save(os.path.join(out_dir, name, f"input_{i}.npy"), t.numpy())
    outs = expected if isinstance(expected, (tuple, list)) else (expected,)
    for i, t in enumerate(outs):
        np.save(os.path.join(out_dir, name, f"output_{i}.npy"), t.detach().numpy())
    ops = sorted({str(n.target) for n in core.graph.nodes if n.op == "call_function"})
    size = sum(os.path.getsize(os.path.join(out_dir, name, f)) for f in os.listdir(os.path.join(out_dir, name)))
    print(f"{name}: {size / 1e6:.2f} MB, {len(ops)} core ops", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(MODELS)
    failed = []
    for name in names:
        try:
            export_one(name, args.out)
        except Exception as e:  # keep going: one model's export problem must not hide the others
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
