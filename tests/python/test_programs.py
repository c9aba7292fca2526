"""Fallback ops in PyTorch, dynamic batch, torchvision models against eager, save/load, zero-copy."""
import os

import pytest
import torch

import kiln


class Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.nn.functional.gelu(y) * 2 + 1
        return self.b(y).softmax(-1)


def test_fallback_ops_run_in_torch():
    m = Mixed().eval()
    x = torch.randn(3, 8)
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1, torch_executed_ops={torch.ops.aten.relu.default})
    fallback = [n for n in compiled.graph.nodes if n.op == "call_function"]
    assert [n.target for n in fallback] == [torch.ops.aten.relu.default]
    assert "_run_on_acc_1" in str(compiled.graph)
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)  # torch runs normally
    handle.remove()
    with torch.no_grad():
        assert torch.allclose(compiled(x), m(x), atol=1e-6)
    # The fallback node calls the torch op itself: swap it for a spy to prove it.
    node = fallback[0]
    node.target = lambda t: calls.append(t.shape) or torch.relu(t)
    compiled.module.recompile()
    compiled(x)
    assert calls == [torch.Size([3, 16])]


def test_min_block_size_sends_small_segments_to_torch():
    m = Mixed().eval()
    compiled = kiln.compile(m, arg_inputs=(torch.randn(3, 8),), min_block_size=1000)
    assert "_run_on_acc" not in str(compiled.graph)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.allclose(compiled(x), m(x), atol=1e-6)


def test_dynamic_batch():
    m = Mixed().eval()
    spec = kiln.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(32, 8))
    compiled = kiln.compile(m, arg_inputs=(spec,), min_block_size=1)
    with torch.no_grad():
        for b in (1, 2, 7, 32):
            x = torch.randn(b, 8)
            assert torch.allclose(compiled(x), m(x), atol=1e-6), b
    with pytest.raises(RuntimeError):
        compiled(torch.randn(33, 8))  # outside the range


def _close(a, b, rtol=1e-4):
    return ((a - b).abs().max() / b.abs().max()).item() < rtol


@pytest.mark.parametrize("name", ["maxvit_t", "swin_t", "convnext_tiny", "efficientnet_b0"])
def test_torchvision_converts_whole(name):
    """Architectures with splits of which a trace records only the used pieces (maxvit), window
    attention (swin), layer norm over channels-last (convnext), squeeze-excite (efficientnet):
    nothing left to PyTorch, outputs as eager's."""
    torchvision = pytest.importorskip("torchvision")
    if not hasattr(torchvision.models, name):
        pytest.skip(f"torchvision {torchvision.__version__} has no {name}")
    torch.manual_seed(0)
    m = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, 224, 224)
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    fallback = sorted({str(n.target) for n in compiled.graph.nodes if n.op == "call_function"})
    assert fallback == [], fallback
    with torch.no_grad():
        assert _close(compiled(x), m(x))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_against_eager(name):
    torchvision = pytest.importorskip("torchvision")
    m = getattr(torchvision.models, name)().eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = kiln.compile(m, arg_inputs=(x,))
    assert "_run_on_acc_0" in str(compiled.graph)
    with torch.no_grad():
        assert _close(compiled(x), m(x))


def test_torchvision_dynamic_batch():
    torchvision = pytest.importorskip("torchvision")
    m = torchvision.models.resnet18().eval()
    spec = kiln.Input(min_shape=(1, 3, 64, 64), opt_shape=(2, 3, 64, 64), max_shape=(4, 3, 64, 64))
    compiled = kiln.compile(m, arg_inputs=(spec,), min_block_size=1)
    with torch.no_grad():
        for b in (1, 3):
            x = torch.randn(b, 3, 64, 64)
            assert _close(compiled(x), m(x))


def test_save_and_load(tmp_path):
    m = Mixed().eval()
    x = torch.randn(3, 8)
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1, torch_executed_ops={torch.ops.aten.relu.default})
    path = tmp_path / "mixed.kiln"
    kiln.save(compiled, path)
    assert os.path.getsize(path) > 0
    loaded = kiln.load(path)
    assert "_run_on_acc_0" in str(loaded.graph) and "aten.relu.default" in str(loaded.graph)
    with torch.no_grad():
        assert torch.allclose(loaded(x), m(x), atol=1e-6)


def test_load_rejects_garbage(tmp_path):
    path = tmp_path / "bad.kiln"
    path.write_bytes(b"not a kiln file at all")
    with pytest.raises(kiln.KilnError):
        kiln.load(path)


def test_multiple_outputs_and_structure():
    class Two(torch.nn.Module):
        def forward(self, x, y):
            return {"sum": x + y, "prod": (x * y).relu()}

    x, y = torch.randn(2, 3), torch.randn(2, 3)
    compiled = kiln.compile(Two(), arg_inputs=(x, y), min_block_size=1)
    out = compiled(x, y)
    assert set(out) == {"sum", "prod"}
    assert torch.allclose(out["sum"], x + y) and torch.allclose(out["prod"], (x * y).relu())


def test_non_contiguous_input():
    class Scale(torch.nn.Module):
        def forward(self, x):
            return x * 2 + 1

    x = torch.randn(4, 6)
    compiled = kiln.compile(Scale(), arg_inputs=(x,), min_block_size=1)
    xt = torch.randn(6, 4).t()
    assert torch.allclose(compiled(xt), xt * 2 + 1)


def test_dryrun_reports_coverage(capsys):
    m = Mixed().eval()
    out = kiln.compile(m, arg_inputs=(torch.randn(3, 8),), dryrun=True, torch_executed_ops={"aten.relu.default"})
    assert out is m
    assert "coverage:" in capsys.readouterr().out


DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


@pytest.mark.parametrize("fixture", ["gelu_tanh", "mlp_dyn", "convnet_small"])
@pytest.mark.parametrize("form", ["export", "core_aten"])
def test_load_pt2_matches_stored_output(fixture, form):
    np = pytest.importorskip("numpy")
    compiled = kiln.load_pt2(os.path.join(DATA, fixture, f"{form}.pt2"), min_block_size=1)
    x = torch.from_numpy(np.load(os.path.join(DATA, fixture, "input_0.npy")))
    want = torch.from_numpy(np.load(os.path.join(DATA, fixture, "output_0.npy")))
    got = compiled(x)
    got = got[0] if isinstance(got, (tuple, list)) else got
    assert _close(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_segments_and_fallback_stay_on_the_gpu_in_stream_order():
    """On CUDA: inputs and outputs are CUDA tensors (no host copies), a fallback op between two
    segments runs on the GPU, and work queued on a non-default torch stream is ordered with kiln's."""
    m = Mixed().eval().cuda()
    x = torch.randn(64, 8, device="cuda")
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1, device="cuda",
                            torch_executed_ops={torch.ops.aten.relu.default})
    stream = torch.cuda.Stream()
    with torch.no_grad(), torch.cuda.stream(stream):
        x2 = x * 3  # queued on `stream`; kiln must see its result
        got = compiled(x2)
        want = m(x2)
    stream.synchronize()
    out = got[0] if isinstance(got, (tuple, list)) else got
    assert out.is_cuda
    assert torch.allclose(out, want, atol=1e-5)


class Attention(torch.nn.Module):
    """nn.MultiheadAttention, batch first (its packed projection reads a transposed activation),
    then scaled_dot_product_attention with a float mask where PyTorch has it (>= 2.0)."""

    def __init__(self):
        super().__init__()
        self.mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
        self.proj = torch.nn.Linear(32, 32)

    def forward(self, x, mask):
        y, _ = self.mha(x, x, x, need_weights=False)
        if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
            b, t, _ = y.shape
            q = self.proj(y).view(b, t, 4, 8).transpose(1, 2)
            y = y + torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask).transpose(1, 2).reshape(b, t, 32)
        return y


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_attention_converts_whole(device):
    """Attention leaves nothing to PyTorch, on the CPU and (fp16) on CUDA, where exporting used to
    turn sdpa into a cuDNN kernel call kiln ran as fallback."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    m = Attention().eval().to(device=device, dtype=dtype)
    x = torch.randn(2, 10, 32, device=device, dtype=dtype)
    mask = torch.randn(2, 1, 10, 10, device=device, dtype=dtype)
    compiled = kiln.compile(m, arg_inputs=(x, mask), min_block_size=1, device=device,
                            precision="fp16" if device == "cuda" else None)
    fallback = [n.target for n in compiled.graph.nodes if n.op == "call_function"]
    assert fallback == [], fallback
    with torch.no_grad():
        got, want = compiled(x, mask), m(x, mask)
    got = got[0] if isinstance(got, (tuple, list)) else got
    tol = 2e-2 if device == "cuda" else 1e-5
    assert torch.allclose(got.float(), want.float(), atol=tol, rtol=tol), (got - want).abs().max()


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_transformer_encoder_converts_whole(norm_first, activation):
    """nn.TransformerEncoderLayer (whose inference fast path is one fused op on some PyTorch
    versions) leaves nothing to PyTorch and agrees with eager."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=norm_first, activation=activation)
    m = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 10, 32)
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    fallback = [n.target for n in compiled.graph.nodes if n.op == "call_function"]
    assert fallback == [], fallback
    with torch.no_grad():
        got, want = compiled(x), m(x)
    got = got[0] if isinstance(got, (tuple, list)) else got
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()


class _Recurrent(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        rnn = {"lstm": torch.nn.LSTM(8, 16, num_layers=2, batch_first=True),
               "gru": torch.nn.GRU(8, 16, batch_first=True, bidirectional=True)}[kind]
        self.rnn, self.head = rnn, torch.nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_layers_convert_whole(kind, device):
    """nn.LSTM and nn.GRU (their gates split with unsafe_split, which kiln reads as split) leave
    nothing to PyTorch and agree with eager on another sequence of the traced length."""
    torch.manual_seed(0)
    m = _Recurrent(kind).eval().to(device)
    compiled = kiln.compile(m, arg_inputs=(torch.randn(2, 5, 8, device=device),), min_block_size=1)
    assert compiled.program.fallback_ops() == [] and len(compiled.program.segments) == 1
    x = torch.randn(2, 5, 8, device=device)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


def test_arithmetic_on_bools_converts(device):
    """x * y and x + y of two bool tensors (what isfinite's decomposition multiplies) are and / or."""
    class Finite(torch.nn.Module):
        def forward(self, a, b):
            both, either = (a > 0) * (b > 0), (a > 0) + (b > 0)
            return both.float() + 2 * either.float() + torch.isfinite(a / b).float()

    a, b = torch.randn(6, device=device), torch.tensor([1.0, 0.0, -2.0, 0.0, 3.0, 1.0], device=device)
    compiled = kiln.compile(Finite(), arg_inputs=(a, b), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    torch.testing.assert_close(compiled(a, b), Finite()(a, b))


@pytest.mark.parametrize("make", [lambda: torch.nn.PReLU(4), lambda: torch.nn.PReLU(), lambda: torch.nn.SELU(),
                                  lambda: torch.nn.CELU(0.7), lambda: torch.nn.ELU(0.5), lambda: torch.nn.LogSigmoid()],
                         ids=["prelu_channels", "prelu_one", "selu", "celu", "elu", "logsigmoid"])
def test_parametric_activations_convert(make, device):
    """PReLU, SELU, CELU, ELU and LogSigmoid leave nothing to PyTorch, large inputs included."""
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), make()).eval().to(device)
    x = torch.randn(2, 3, 5, 5, device=device) * 30
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), atol=1e-4, rtol=1e-5)


def test_atan2_and_nan_to_num_on_special_values(device):
    """atan2 in every quadrant, on both axes, at signed zeros and infinities; nan_to_num of NaN and
    both infinities, with the defaults and with values given."""
    class Special(torch.nn.Module):
        def forward(self, y, x):
            r = x / y  # NaN, +-inf among the ratios
            return torch.atan2(y, x), torch.nan_to_num(r), torch.nan_to_num(r, nan=2.0, posinf=9.0, neginf=-9.0)

    y = torch.tensor([0., 0., 1., -1., 2., -2., 0., -0., 3., -3., -0., 0., -0., 1., -1.])
    x = torch.tensor([0., -1., 0., 0., 1., 1., 2., -2., -4., -4., 0., -0., -0., float("-inf"), float("-inf")])
    y, x = y.to(device), x.to(device)
    compiled = kiln.compile(Special(), arg_inputs=(y, x), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    for got, want in zip(compiled(y, x), Special()(y, x)):  # (atan within an ulp of the GPU's own)
        torch.testing.assert_close(got, want, equal_nan=True)
        assert torch.equal(torch.signbit(got), torch.signbit(want)), (got, want)


@pytest.mark.parametrize("make", [lambda: torch.nn.InstanceNorm2d(4, affine=True), lambda: torch.nn.InstanceNorm2d(4),
                                  lambda: torch.nn.BatchNorm2d(4, track_running_stats=False)],
                         ids=["instance_affine", "instance", "batch_stats"])
def test_norms_over_the_batch_statistics_convert(make, device):
    """InstanceNorm and a BatchNorm without running statistics normalize with the input's own
    statistics in eval mode: converted, nothing left to PyTorch."""
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), make()).eval().to(device)
    if m[1].affine:
        with torch.no_grad():
            m[1].weight.uniform_(0.5, 2)
            m[1].bias.uniform_(-1, 1)
    compiled = kiln.compile(m, arg_inputs=(torch.randn(2, 3, 9, 9, device=device),), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    x = torch.randn(2, 3, 9, 9, device=device) * 5
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


def test_reshape_of_an_expanded_tensor():
    """x[:, :, None].expand(...).reshape(...) (Llama's repeat_kv) traces as clone + _unsafe_view on
    PyTorch 1.13; with the clone gone the view reads an expanded tensor, so it becomes a reshape, in
    a segment and where it runs in PyTorch (a movement-only program, which kiln says it leaves)."""
    class RepeatKV(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, k):
            b, h, s, d = k.shape
            out = k[:, :, None].expand(b, h, 3, s, d).reshape(b, h * 3, s, d)
            return out * 2 if self.scale else out

    k = torch.randn(2, 2, 5, 4)
    compiled = kiln.compile(RepeatKV(True), arg_inputs=(k,), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    assert torch.equal(compiled(k), RepeatKV(True)(k))
    with pytest.warns(UserWarning, match="data movement alone"):
        moved = kiln.compile(RepeatKV(False), arg_inputs=(k,), min_block_size=1)
    assert torch.equal(moved(k), RepeatKV(False)(k))


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_aggregates_convert(reduce, include_self, device):
    """A graph network's neighbour aggregation (scatter_reduce sum / mean into node rows, some
    nodes receiving nothing) converts and agrees."""
    class Aggregate(torch.nn.Module):
        def forward(self, nodes, messages, target):
            index = target[:, None].expand(-1, messages.shape[1])
            return nodes.scatter_reduce(0, index, messages, reduce, include_self=include_self)

    nodes, messages = torch.randn(6, 4, device=device), torch.randn(9, 4, device=device)
    target = torch.tensor([0, 2, 2, 5, 0, 2, 3, 3, 0], device=device)  # node 1 and 4 get nothing
    compiled = kiln.compile(Aggregate(), arg_inputs=(nodes, messages, target), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    torch.testing.assert_close(compiled(nodes, messages, target), Aggregate()(nodes, messages, target))


def test_bicubic_upsampling_converts(device):
    """F.interpolate(mode="bicubic"): a ViT's position embeddings resized to another grid (a weight)
    and an image upsampled (an input), both converted and agreeing with PyTorch."""
    class Resize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = torch.nn.Parameter(torch.randn(1, 8, 7, 7))

        def forward(self, x):
            pos = torch.nn.functional.interpolate(self.pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
            up = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=True)
            return x + pos, up

    m = Resize().eval().to(device)
    x = torch.randn(2, 8, 10, 12, device=device)
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    with torch.no_grad():
        for got, want in zip(compiled(x), m(x)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_repeat_interleave_by_a_constant_converts(device):
    """x.repeat_interleave(n, dim) (some GQA implementations repeat key/value heads so), which
    PyTorch 1.13 writes as repeat_interleave of a constant repeats tensor plus index_select."""
    class Repeat(torch.nn.Module):
        def forward(self, a, kv):
            return a.repeat_interleave(2, dim=0) * 3, kv.repeat_interleave(3, dim=1)

    a, kv = torch.randn(3, 2, device=device), torch.randn(2, 2, 4, 5, device=device)
    compiled = kiln.compile(Repeat(), arg_inputs=(a, kv), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    for got, want in zip(compiled(a, kv), Repeat()(a, kv)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("right", [False, True])
def test_bucketize_and_searchsorted_convert(right, device):
    """Values placed among sorted boundaries (bucketize, searchsorted with side or right), ties
    included: the count of boundaries below (or at or below) each value."""
    class Buckets(torch.nn.Module):
        def forward(self, x, boundaries):
            return (torch.bucketize(x, boundaries, right=right),
                    torch.searchsorted(boundaries, x, right=right, out_int32=True))

    boundaries = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], device=device)
    x = torch.tensor([[-3.0, -2.0, -0.7, 0.0], [0.3, 0.5, 2.0, 9.0]], device=device)
    compiled = kiln.compile(Buckets(), arg_inputs=(x, boundaries), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    x = torch.randn(2, 4, device=device) * 2
    x[0] = boundaries[:4]  # ties
    for got, want in zip(compiled(x, boundaries), Buckets()(x, boundaries)):
        assert got.dtype == want.dtype and torch.equal(got, want)
