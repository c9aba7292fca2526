#!/usr/bin/env python3
"""Exports kiln's own test programs with PyTorch >= 2.8 (run on the GPU machine, which has 2.11).

For each model: tests/data/<name>/export.pt2 (torch.export.export, TRAINING verifier),
core_aten.pt2 (after run_decompositions(), ATEN verifier), input_<i>.npy and PyTorch's
output_<i>.npy (fp32, CPU, eval mode, seeded random weights). Models are kept small so the
repository stays light; the big benchmark models are exported by bench/gpu_compare.py instead.

    python3 scripts/make_fixtures.py [--out tests/data] [--only name,name] [--reduced-precision-only]

Each fixture also gets reduced_precision.json: PyTorch's own bf16 / fp16 accuracy on it (see
reduced_precision_reference).
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
    """Random affine parameters on every batch norm, and the model marked for export_one to
    calibrate their statistics (calibrate_batch_norms)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.calibrate = True
    return model


def measured_batch_norms(model):
    """Marks every batch norm for calibration (calibrate_batch_norms), affine parameters as initialised."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.calibrate = True
    return model


def calibrate_batch_norms(model, make_inputs):
    """Running statistics measured on random inputs: fresh ones (mean 0, var 1) make every batch
    norm an identity, and made-up ones let activations fade or explode through a deep network
    (below fp16's range, or to 1e18); measured ones keep them near unit scale, as trained ones do."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and getattr(m, "calibrate", False)]
    if not norms:
        return  # models that keep their batch norms as initialised (convnet_small) stay so
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            batches = [make_inputs() for _ in range(4)]
            model(*(torch.cat(parts) for parts in zip(*batches)))
    model.eval()


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


# --- The corpus of real architectures in small configurations: torchvision's own classes and
# transformers' from configs, a few hundred thousand parameters each so the repository stays light.

def mobilenet_v3_small():
    from torchvision.models import mobilenet_v3_small
    return realistic_batch_norms(mobilenet_v3_small(width_mult=0.25, num_classes=10))


def mobilenet_v3_large():
    from torchvision.models import mobilenet_v3_large
    return realistic_batch_norms(mobilenet_v3_large(width_mult=0.25, num_classes=10))


def efficientnet_b0():
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return realistic_batch_norms(EfficientNet(setting, dropout=0.0, last_channel=last, num_classes=10))


def efficientnet_v2():
    from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig
    setting = [FusedMBConvConfig(1, 3, 1, 8, 8, 1), FusedMBConvConfig(4, 3, 2, 8, 16, 1),
               MBConvConfig(4, 3, 2, 16, 24, 1), MBConvConfig(6, 3, 1, 24, 32, 1)]
    return realistic_batch_norms(EfficientNet(setting, dropout=0.0, last_channel=64, num_classes=10))


def convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    model = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)],
                     num_classes=10)
    for m in model.modules():  # layer scales of 1e-6 would make every block an identity
        if hasattr(m, "layer_scale"):
            nn.init.uniform_(m.layer_scale, 0.1, 0.5)
    return model


def swin(v2=False):
    from torchvision.models import swin_transformer as st
    extra = dict(block=st.SwinTransformerBlockV2, downsample_layer=st.PatchMergingV2) if v2 else {}
    return st.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=[4, 4],
                              num_classes=10, **extra)


def shufflenet():
    from torchvision.models.shufflenetv2 import ShuffleNetV2
    return realistic_batch_norms(ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 128], num_classes=10))


def densenet():
    from torchvision.models.densenet import DenseNet
    return realistic_batch_norms(DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                                          num_classes=10))


def regnet():
    from torchvision.models.regnet import BlockParams, RegNet
    params = BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return realistic_batch_norms(RegNet(params, stem_width=16, num_classes=10))


def maxvit():
    from torchvision.models.maxvit import MaxVit
    return measured_batch_norms(MaxVit(input_size=(64, 64), stem_channels=8, partition_size=4, block_channels=[16, 32],
                                       block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10))


class SpatialTransformer(nn.Module):
    """A spatial transformer: a small localisation net predicts an affine warp of the image, applied
    with affine_grid and grid_sample (bilinear, zeros padding), then a classifier."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(8, 6))
        with torch.no_grad():  # start near the identity warp, as trained ones do
            self.loc[-1].weight.mul_(0.1)
            self.loc[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, 10))

    def forward(self, x):
        theta = self.loc(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return self.head(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


class LRASPPSegmentation(nn.Module):
    """torchvision's LR-ASPP segmentation head on a narrow MobileNetV3-small trunk, upsampled to the input."""

    def __init__(self):
        super().__init__()
        from torchvision.models import mobilenet_v3_small
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.models.segmentation.lraspp import LRASPPHead
        trunk = realistic_batch_norms(mobilenet_v3_small(width_mult=0.25)).features
        self.body = IntermediateLayerGetter(trunk, return_layers={"3": "low", "12": "high"})
        with torch.no_grad():
            f = self.body(torch.zeros(1, 3, 64, 64))
        self.head = LRASPPHead(f["low"].shape[1], f["high"].shape[1], num_classes=4, inter_channels=16)

    def forward(self, x):
        y = self.head(self.body(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class FPNBackbone(nn.Module):
    """A detector's backbone: torchvision's BackboneWithFPN (feature pyramid with its max-pool
    level) on a narrow MobileNetV2 trunk; every pyramid level is an output."""

    def __init__(self):
        super().__init__()
        from torchvision.models import mobilenet_v2
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.models.detection.backbone_utils import BackboneWithFPN
        trunk = realistic_batch_norms(mobilenet_v2(width_mult=0.25)).features
        layers = {"3": "0", "6": "1", "13": "2"}
        with torch.no_grad():
            f = IntermediateLayerGetter(trunk, return_layers=layers)(torch.zeros(1, 3, 64, 64))
        self.fpn = BackboneWithFPN(trunk, layers, [t.shape[1] for t in f.values()], out_channels=16)

    def forward(self, x):
        return tuple(self.fpn(x).values())


def _transformer(config_name, model_name, wrap=None, model_kwargs=None, **cfg):
    import transformers
    config = getattr(transformers, config_name)(**cfg)
    model = getattr(transformers, model_name)(config, **(model_kwargs or {}))
    return (wrap or _hidden_state)(model)


_TINY_DECODER = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def _whisper_encoder():
    """Whisper's audio encoder (two 1-d convolutions over mel frames, then a transformer)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    cfg = WhisperConfig(num_mel_bins=16, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                        max_source_positions=16)
    return _features(WhisperEncoder(cfg), "input_features")


class _features(nn.Module):
    """A transformers model taking a float tensor under `key` (pixel_values, input_features)."""

    def __init__(self, model, key):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x):
        return self.model(**{self.key: x}).last_hidden_state


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
    # torchvision
    "mobilenet_v3_small": (mobilenet_v3_small, lambda: (torch.randn(1, 3, 64, 64),), None),
    "mobilenet_v3_large": (mobilenet_v3_large, lambda: (torch.randn(1, 3, 64, 64),), None),
    "efficientnet_b0": (efficientnet_b0, lambda: (torch.randn(1, 3, 64, 64),), None),
    "efficientnet_v2": (efficientnet_v2, lambda: (torch.randn(1, 3, 64, 64),), None),
    "convnext": (convnext, lambda: (torch.randn(2, 3, 64, 64),), None),
    "swin": (swin, lambda: (torch.randn(2, 3, 32, 32),), None),
    "swin_v2": (lambda: swin(v2=True), lambda: (torch.randn(2, 3, 32, 32),), None),
    "shufflenet_v2": (shufflenet, lambda: (torch.randn(2, 3, 64, 64),), None),
    "densenet": (densenet, lambda: (torch.randn(2, 3, 64, 64),), None),
    "regnet": (regnet, lambda: (torch.randn(2, 3, 64, 64),), None),
    "maxvit": (maxvit, lambda: (torch.randn(1, 3, 64, 64),), None),
    "lraspp_segmentation": (LRASPPSegmentation, lambda: (torch.randn(1, 3, 64, 64),), None),
    "fpn_backbone": (FPNBackbone, lambda: (torch.randn(1, 3, 64, 64),), None),
    "spatial_transformer": (SpatialTransformer, lambda: (torch.randn(2, 3, 32, 32),), None),
    # transformers, random weights from small configs
    "roberta_tiny": (lambda: _transformer("RobertaConfig", "RobertaModel", vocab_size=512, hidden_size=64,
                                          num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                          max_position_embeddings=64, model_kwargs=dict(add_pooling_layer=False)),
                     lambda: (tokens(2, 16),), None),
    "distilbert_tiny": (lambda: _transformer("DistilBertConfig", "DistilBertModel", vocab_size=512, dim=64, n_layers=2,
                                             n_heads=4, hidden_dim=128, max_position_embeddings=64),
                        lambda: (tokens(2, 16),), None),
    "albert_tiny": (lambda: _transformer("AlbertConfig", "AlbertModel", vocab_size=512, embedding_size=32,
                                         hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=128, max_position_embeddings=64),
                    lambda: (tokens(2, 16),), None),
    "llama_tiny": (lambda: _transformer("LlamaConfig", "LlamaModel", **_TINY_DECODER), lambda: (tokens(2, 16),), None),
    "mistral_tiny": (lambda: _transformer("MistralConfig", "MistralModel", sliding_window=8, **_TINY_DECODER),
                     lambda: (tokens(2, 16),), None),
    "qwen2_tiny": (lambda: _transformer("Qwen2Config", "Qwen2Model", **_TINY_DECODER), lambda: (tokens(2, 16),), None),
    "gemma_tiny": (lambda: _transformer("GemmaConfig", "GemmaModel", head_dim=16, **_TINY_DECODER),
                   lambda: (tokens(2, 16),), None),
    "gpt_neox_tiny": (lambda: _transformer("GPTNeoXConfig", "GPTNeoXModel", vocab_size=512, hidden_size=64,
                                           intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                           rotary_pct=0.5, max_position_embeddings=64),
                      lambda: (tokens(2, 16),), None),
    "bart_tiny": (lambda: _transformer("BartConfig", "BartModel", vocab_size=512, d_model=64, encoder_layers=2,
                                       decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                                       encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64),
                  lambda: (tokens(2, 16),), None),
    "whisper_encoder_tiny": (lambda: _whisper_encoder(), lambda: (torch.randn(2, 16, 32),), None),
    "clip_text_tiny": (lambda: _transformer("CLIPTextConfig", "CLIPTextModel", vocab_size=512, hidden_size=64,
                                            intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                            max_position_embeddings=32),
                       lambda: (tokens(2, 16),), None),
    "clip_vision_tiny": (lambda: _transformer("CLIPVisionConfig", "CLIPVisionModel",
                                              wrap=lambda m: _features(m, "pixel_values"), hidden_size=64,
                                              intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                              image_size=32, patch_size=8),
                         lambda: (torch.randn(2, 3, 32, 32),), None),
}


def reduced_precision_reference(model, inputs, expected, path):
    """PyTorch's own accuracy in bf16 and fp16 on these weights and inputs, as the cosine of each
    output to the fp32 one, into `path` (reduced_precision.json). tests/cli/npy_cosine.py holds kiln's
    reduced-precision runs to it where the architecture itself loses more than the usual bound
    allows (deep depthwise networks in bf16). Run on the GPU where there is one (kiln's fp16 and
    bf16 plans run there; PyTorch's CPU kernels round differently or, before 2.x, lack fp16
    convolutions), else on the CPU; a format PyTorch cannot run is left out."""
    import copy
    import json
    want = expected if isinstance(expected, (tuple, list)) else (expected,)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = {"torch": torch.__version__, "device": device}
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        try:
            low = copy.deepcopy(model).to(device=device, dtype=dtype)
            with torch.no_grad():
                got = low(*(t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
                            for t in inputs))
        except (RuntimeError, TypeError, NotImplementedError):
            continue
        got = got if isinstance(got, (tuple, list)) else (got,)
        cos = {}
        for i, (w, g) in enumerate(zip(want, got)):
            w, g = w.detach().double().flatten().cpu(), g.detach().double().flatten().cpu()
            if w.is_floating_point() and w.norm() > 0 and g.norm() > 0 and torch.isfinite(g).all():
                cos[f"output_{i}.npy"] = round(float(w @ g / (w.norm() * g.norm())), 6)
        table[precision] = cos
    with open(path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")


def reduced_precision_only(name, out_dir):
    """reduced_precision.json for a stored fixture, from its model factory and stored input
    (works on PyTorch versions that cannot export, as long as they build the same model)."""
    factory, make_inputs, _ = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    calibrate_batch_norms(model, make_inputs)
    d = os.path.join(out_dir, name)
    inputs = [torch.from_numpy(np.load(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.startswith("input_")]
    with torch.no_grad():
        expected = model(*inputs)
    stored = np.load(os.path.join(d, "output_0.npy"))
    first = expected[0] if isinstance(expected, (tuple, list)) else expected
    if np.abs(first.numpy() - stored).max() > 1e-4 * max(1.0, float(np.abs(stored).max())):
        raise RuntimeError("this PyTorch builds a different model than the stored fixture's")
    reduced_precision_reference(model, inputs, expected, os.path.join(d, "reduced_precision.json"))


def export_one(name, out_dir):
    factory, make_inputs, dynamic = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    calibrate_batch_norms(model, make_inputs)
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
    reduced_precision_reference(model, inputs, expected, os.path.join(out_dir, name, "reduced_precision.json"))
    ops = sorted({str(n.target) for n in core.graph.nodes if n.op == "call_function"})
    size = sum(os.path.getsize(os.path.join(out_dir, name, f)) for f in os.listdir(os.path.join(out_dir, name)))
    print(f"{name}: {size / 1e6:.2f} MB, {len(ops)} core ops", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data")
    ap.add_argument("--only", default="")
    ap.add_argument("--reduced-precision-only", action="store_true",
                    help="only (re)write reduced_precision.json of fixtures already under --out")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(MODELS)
    failed = []
    for name in names:
        try:
            if args.reduced_precision_only:
                reduced_precision_only(name, args.out)
            else:
                export_one(name, args.out)
        except Exception as e:  # keep going: one model's export problem must not hide the others
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
