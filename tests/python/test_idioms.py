"""Idioms real models trace to that kiln converts whole, each checked on the machine's device
against eager with nothing left to PyTorch: masks and losses, windows and spectrograms, complex
numbers, order statistics, scatter reductions, resampling; and where kiln leaves something to
PyTorch on purpose (uncovered complex values, long FFTs), that the answer is still right and the
warning says why."""
import pytest
import torch

import kiln


class _Idioms(torch.nn.Module):
    """Real models' smaller idioms, each of which ran in PyTorch before: MoE routing masks
    (one_hot), signal framing (Tensor.unfold), im2col / col2im (F.unfold / F.fold), a loss returned
    beside the logits (cross_entropy with class weights and an ignored label), diagonals, scans and
    pairwise distances."""

    def forward(self, x, labels, routes, signal, points):
        logits = x.flatten(1)[:, :5]
        loss = torch.nn.functional.cross_entropy(logits, labels, weight=torch.arange(1.0, 6.0, device=x.device),
                                                 ignore_index=2)
        mask = torch.nn.functional.one_hot(routes, num_classes=4).permute(1, 0)
        frames = signal.unfold(-1, 8, 4) * torch.hann_window(8, device=x.device)
        cols = torch.nn.functional.unfold(x, 3, padding=1, stride=2)
        back = torch.nn.functional.fold(cols, x.shape[-2:], 3, padding=1, stride=2)
        square = x[0, 0, :4, :4]
        diag = torch.diag_embed(square.diagonal(1)) + torch.trace(square)
        scans = torch.cumprod(1 + x[:, 0, 0] / 8, -1) + torch.logcumsumexp(x[:, 0, 0], -1)
        return loss, mask, frames, back, diag, scans, torch.cdist(points, points * 2)


def test_idioms_convert_whole(device):
    m = _Idioms()
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, 3, 7, 6, generator=g), torch.tensor([0, 2]), torch.tensor([3, 0, 1, 1, 2]),
              torch.randn(2, 30, generator=g), torch.randn(2, 6, 3, generator=g))
    inputs = tuple(t.to(device) for t in inputs)
    compiled = kiln.compile(m, arg_inputs=inputs, min_block_size=1)
    assert compiled.program.fallback_ops() == []
    inputs = (torch.randn(2, 3, 7, 6, generator=g), torch.tensor([4, 1]), torch.tensor([0, 0, 3, 2, 1]),
              torch.randn(2, 30, generator=g), torch.randn(2, 6, 3, generator=g))
    inputs = tuple(t.to(device) for t in inputs)
    for got, want in zip(compiled(*inputs), m(*inputs)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got, want)


class _Orders(torch.nn.Module):
    """Order statistics with their indices (NaN included), running extremes, and the layers that
    reduce to small ops: nn.Bilinear, a weight-normalized convolution, integer shifts, isin."""

    def __init__(self):
        super().__init__()
        self.bilinear = torch.nn.Bilinear(6, 5, 3)
        self.conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(6, 6, 3, padding=1, groups=2))

    def forward(self, x, y, ids):
        med = torch.median(x, -1)
        nanmed = torch.nanmedian(x, 0)
        kth = torch.kthvalue(x, 2, -1, keepdim=True)
        run = torch.cummax(x, -1)
        low = torch.cummin(ids, 0)
        return (med.values, med.indices, nanmed.values, nanmed.indices, kth.values, kth.indices, run.values,
                run.indices, low.values, low.indices, torch.nanmean(x, -1), torch.count_nonzero(ids, 0),
                self.bilinear(x[:, :6], y), self.conv(x[None, :, :6].transpose(1, 2)),
                (ids << 2) + (ids >> 1), torch.isin(ids, torch.tensor([1, -2], device=ids.device)))


def test_order_statistics_and_small_layers_convert(device):
    m = _Orders().to(device)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 7, generator=g), torch.randn(4, 5, generator=g)
    ids = torch.randint(-3, 3, (6, 4), generator=g)
    compiled = kiln.compile(m, arg_inputs=(x.to(device), y.to(device), ids.to(device)), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    x[1, 3] = float("nan")  # median and cummax carry it on; nanmedian skips it
    x[2, :] = float("nan")
    x[0, 4] = x[0, 1]       # a tie
    args = (x.to(device), y.to(device), ids.to(device))
    with torch.no_grad():
        got, want = compiled(*args), m(*args)
    for i, (g_, w_) in enumerate(zip(got, want)):
        assert g_.dtype == w_.dtype and g_.shape == w_.shape, i
        if i in (1, 3, 5):  # among equal values (NaNs, ties) PyTorch's pick is its sort's: any such index is right
            continue
        assert torch.allclose(g_, w_, rtol=1e-5, atol=1e-5, equal_nan=True), (i, g_, w_)
    x = args[0]
    for values, indices, dim in ((got[0], got[1], -1), (got[2], got[3], 0), (got[4], got[5], -1)):
        taken = x.gather(dim, indices if indices.dim() == 2 else indices.unsqueeze(dim))
        assert torch.equal(taken.isnan(), (values if values.dim() == 2 else values.unsqueeze(dim)).isnan())
        assert torch.allclose(taken, values if values.dim() == 2 else values.unsqueeze(dim), equal_nan=True)


def _rotary_frequencies(dim, end, dtype=torch.complex64):
    freqs = 1.0 / (10000.0 ** (torch.arange(0, dim, 2).float() / dim))
    angles = torch.outer(torch.arange(end).float(), freqs)
    return torch.polar(torch.ones_like(angles), angles).to(dtype)


class _ComplexRotary(torch.nn.Module):
    """Rotary embeddings as Meta's Llama writes them, with complex numbers: the frequencies a
    complex buffer (or computed in forward with polar), queries viewed as complex pairs,
    multiplied, viewed back; plus the other complex ops a model may touch."""

    def __init__(self, buffer, dtype=torch.complex64):
        super().__init__()
        self.q = torch.nn.Linear(16, 16, bias=False)
        self.buffer = buffer
        if buffer:
            self.register_buffer("freqs_cis", _rotary_frequencies(8, 32, dtype), persistent=False)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, 2, 8)
        freqs = self.freqs_cis[:n] if self.buffer else _rotary_frequencies(8, n)
        q_ = torch.view_as_complex(q.float().reshape(b, n, 2, 4, 2))
        rotated = q_ * freqs.view(1, n, 1, 4)
        out = torch.view_as_real(rotated).flatten(3).type_as(x)
        extra = (rotated.conj() * 2).real + rotated.imag * rotated.abs() + rotated.angle()
        return out, extra


@pytest.mark.parametrize("buffer", [True, False])
def test_complex_rotary_embeddings_convert(buffer, device):
    m = _ComplexRotary(buffer).to(device)
    x = torch.randn(2, 6, 16, device=device)
    compiled = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    x = torch.randn(2, 6, 16, device=device)
    with torch.no_grad():
        for got, want in zip(compiled(x), m(x)):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


class _ComplexOut(torch.nn.Module):
    def forward(self, x):
        return torch.view_as_complex(torch.relu(x).reshape(3, 2)) * 2


class _ComplexPlusNumber(torch.nn.Module):
    def forward(self, x):  # z + 1 adds to the real part only
        return torch.view_as_real(torch.view_as_complex(x.reshape(3, 2)) + 1)


class _ComplexOfBroadcastParts(torch.nn.Module):
    def forward(self, x):
        return torch.view_as_real(torch.complex(x[:, :1], x[0]))


@pytest.mark.parametrize("model, why", [(_ComplexOut, "the program returns a complex value"),
                                        (_ComplexPlusNumber, "of a complex value and a number is not covered"),
                                        (_ComplexOfBroadcastParts, "parts of different shapes is not covered")])
def test_uncovered_complex_values_run_in_pytorch(model, why, device):
    """Where a complex value cannot take the real layout (returned to the caller; an op the
    rewrite does not cover), the complex part stays with PyTorch, the warning says why, and the
    answer is still right."""
    x = torch.randn(6, device=device).reshape(3, 2)
    with pytest.warns(UserWarning, match="complex values stay in PyTorch: .*" + why):
        compiled = kiln.compile(model(), arg_inputs=(x,), min_block_size=1)
    assert any("complex" in op or op.startswith("aten.view_as") for op in compiled.program.fallback_ops())
    assert torch.equal(compiled(x), model()(x))


def test_max_pool_indices_of_windows_of_minus_infinity(device):
    """A window whose inputs are all -inf ties with its padding: the index is still the window's
    first position inside the input, as PyTorch gives."""
    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.max_pool2d(x, 2, 2, 1, return_indices=True)[1]

    x = torch.randn(1, 2, 3, 3, device=device)
    compiled = kiln.compile(Pool(), arg_inputs=(x,), min_block_size=1)
    assert compiled.program.fallback_ops() == []  # the indices alone, values unread
    x[0, 0] = float("-inf")
    x[0, 1, 1:, 1:] = float("-inf")
    assert torch.equal(compiled(x), Pool()(x))


@pytest.mark.parametrize("options", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                     dict(kernel_size=3, stride=2, ceil_mode=True), dict(kernel_size=2, stride=1),
                                     dict(kernel_size=2, dilation=2)])
def test_max_pool_indices_and_unpool_convert(options, device):
    """SegNet-style pooling that remembers where each maximum was and unpooling that puts it back."""
    class PoolUnpool(torch.nn.Module):
        def forward(self, x):
            y, at = torch.nn.functional.max_pool2d(x, return_indices=True, **options)
            if "dilation" in options:  # max_unpool2d has no dilation
                return y, at
            back = torch.nn.functional.max_unpool2d(y * 2, at, options["kernel_size"], options.get("stride"),
                                                    options.get("padding", 0), output_size=x.shape[-2:])
            return y, at, back

    x = torch.randn(2, 3, 9, 8, device=device)
    compiled = kiln.compile(PoolUnpool(), arg_inputs=(x,), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    x = torch.randn(2, 3, 9, 8, device=device)
    for got, want in zip(compiled(x), PoolUnpool()(x)):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_repeat_interleave_with_output_size_converts(device):
    """Repeats that are data (each token's count, as packed-sequence code has them) with the total
    stated by output_size: the positions are computed per call, not frozen at the traced repeats."""
    class Expand(torch.nn.Module):
        def forward(self, x, repeats):
            return x.repeat_interleave(repeats, dim=0, output_size=6) * 2

    x = torch.randn(3, 4, device=device)
    compiled = kiln.compile(Expand(), arg_inputs=(x, torch.tensor([1, 2, 3], device=device)), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    for repeats in ([3, 0, 3], [0, 6, 0], [2, 2, 2]):
        repeats = torch.tensor(repeats, device=device)
        assert torch.equal(compiled(x, repeats), Expand()(x, repeats))


def test_nan_aware_pointwise_ops_convert(device):
    """fmax / fmin ignore a NaN on one side, heaviside keeps NaN and takes `values` at zero."""
    class NanOps(torch.nn.Module):
        def forward(self, a, b):
            return torch.fmax(a, b), torch.fmin(a, b), torch.heaviside(a, b)

    nan = float("nan")
    a = torch.tensor([1.0, nan, -2.0, nan, 0.0, -0.0], device=device)
    b = torch.tensor([nan, 3.0, -1.0, nan, 0.5, 2.0], device=device)
    compiled = kiln.compile(NanOps(), arg_inputs=(a, b), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    for got, want in zip(compiled(a, b), NanOps()(a, b)):
        assert torch.allclose(got, want, equal_nan=True), (got, want)


def test_graph_attention_aggregation_converts(device):
    """A GAT layer's softmax over each node's incoming edges, as PyG computes it: the per-node
    maximum (scatter_reduce amax), exponentials summed per node, the weighted messages summed; and
    min / product aggregations beside it."""
    class EdgeSoftmax(torch.nn.Module):
        def forward(self, scores, messages, target):
            nodes = torch.zeros(5, device=scores.device)
            peak = nodes.scatter_reduce(0, target, scores, "amax", include_self=False)
            weights = (scores - peak[target]).exp()
            total = nodes.scatter_add(0, target, weights)
            alpha = weights / total[target]
            out = torch.zeros(5, 4, device=scores.device).index_add(0, target, messages * alpha[:, None])
            low = nodes.scatter_reduce(0, target, scores, "amin", include_self=True)
            prod = torch.ones(5, device=scores.device).scatter_reduce(0, target, scores.tanh(), "prod")
            return out, low, prod

    g = torch.Generator().manual_seed(3)
    target = torch.tensor([0, 1, 1, 2, 2, 2, 4, 0, 1], device=device)  # node 3 has no incoming edge
    scores, messages = torch.randn(9, generator=g).to(device), torch.randn(9, 4, generator=g).to(device)
    compiled = kiln.compile(EdgeSoftmax(), arg_inputs=(scores, messages, target), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    scores = torch.randn(9, generator=g).to(device)
    for got, want in zip(compiled(scores, messages, target), EdgeSoftmax()(scores, messages, target)):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got, want)


class _Spectra(torch.nn.Module):
    """Audio front ends inside a model: a power spectrogram (torch.stft: reflect padding, frames cut
    with as_strided, a window, the real FFT), rfft / irfft round trips, and a complex FFT; the
    transforms become multiplies by their constant DFT matrices."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(16), persistent=False)

    def forward(self, signal):
        spec = torch.stft(signal, 16, hop_length=4, window=self.window, return_complex=True)
        power = spec.abs().pow(2)
        half = torch.fft.rfft(signal, norm="ortho")
        back = torch.fft.irfft(half * 2, n=signal.shape[-1], norm="ortho")
        odd = torch.fft.irfft(torch.fft.rfft(signal[:, :15]), n=15)
        full = torch.fft.fft(torch.view_as_complex(signal[:, :24].reshape(2, 12, 2)), dim=-1)
        return power, half.abs(), back, odd, torch.view_as_real(torch.fft.ifft(full))


def test_spectrograms_and_ffts_convert(device):
    m = _Spectra().to(device)
    signal = torch.randn(2, 64, device=device)
    compiled = kiln.compile(m, arg_inputs=(signal,), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    signal = torch.randn(2, 64, device=device)
    with torch.no_grad():
        for got, want in zip(compiled(signal), m(signal)):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()


def test_preprocessing_with_antialiased_resize_converts(device):
    """A deployed pipeline with torchvision's tensor transforms inside the model: an antialiased
    resize (bilinear and bicubic) and a crop, then a normalization, before the network.
    (torchvision's Normalize checks its std's values in Python, which PyTorch 1.13 cannot trace.)"""
    from torchvision import transforms

    class Pipeline(torch.nn.Module):
        def __init__(self, mode):
            super().__init__()
            self.resize = transforms.Resize(24, interpolation=mode, antialias=True)
            self.crop = transforms.CenterCrop(20)
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1))
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, image):
            return self.conv((self.crop(self.resize(image)) - self.mean) / self.std)

    for mode in (transforms.InterpolationMode.BILINEAR, transforms.InterpolationMode.BICUBIC):
        m = Pipeline(mode).to(device).eval()
        image = torch.rand(2, 3, 61, 47, device=device)
        compiled = kiln.compile(m, arg_inputs=(image,), min_block_size=1)
        assert compiled.program.fallback_ops() == []
        image = torch.rand(2, 3, 61, 47, device=device)
        with torch.no_grad():
            assert torch.allclose(compiled(image), m(image), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(hasattr(torch, "export"), reason="PyTorch 1.13's make_fx capture; torch.export traces these itself")
def test_calls_make_fx_cannot_trace_are_rewritten(device):
    """one_hot and quantile read values in PyTorch 1.13's implementations (range checks), which
    stops make_fx; capture writes them in traceable ops. A NaN in a slice gives NaN, as PyTorch."""
    class Calls(torch.nn.Module):
        def forward(self, x, routes):
            mask = torch.nn.functional.one_hot(routes, num_classes=4)
            return (mask, torch.quantile(x, 0.3), x.quantile(0.75, dim=1, keepdim=True),
                    torch.quantile(x, 0.5, dim=0, interpolation="nearest"),
                    torch.quantile(x, 0.4, dim=-1, interpolation="midpoint"))

    x, routes = torch.randn(3, 7, device=device), torch.tensor([3, 0, 2], device=device)
    compiled = kiln.compile(Calls(), arg_inputs=(x, routes), min_block_size=1)
    assert compiled.program.fallback_ops() == []
    x = torch.randn(3, 7, device=device)
    x[1, 2] = float("nan")
    for got, want in zip(compiled(x, routes), Calls()(x, routes)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.allclose(got, want, equal_nan=True), (got, want)


def test_transformer_attention_is_captured_whole(device):
    """nn.TransformerEncoderLayer's self-attention reaches kiln as fused ops (PyTorch 1.13's fast
    path, the whole layer as one; 2.x's scaled_dot_product_attention), not as batched matmuls:
    capture's rewrites of one_hot / quantile, a TorchFunctionMode that turns the fast path off,
    apply only where tracing without them fails (a ViT-S ran 1.7x slower on the CPU with them on)."""
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).to(device).eval()
    x = torch.randn(2, 10, 64, device=device)
    with torch.no_grad():
        compiled = kiln.compile(layer, arg_inputs=(x,), min_block_size=1)
        targets = [n.target for n in compiled.program.graph_nodes()]
        assert not any("bmm" in t for t in targets), targets
        fused = ("_transformer_encoder_layer_fwd", "multi_head_attention", "scaled_dot_product")
        assert any(f in t for t in targets for f in fused), targets
        assert compiled.program.fallback_ops() == []
        x = torch.randn(2, 10, 64, device=device)
        assert torch.allclose(compiled(x), layer(x), rtol=1e-4, atol=1e-5)


def test_a_long_fft_stays_in_pytorch(device):
    """A transform whose DFT matrix would be large (a second of 16 kHz audio: 16000 x 16002) is
    left to PyTorch's FFT rather than made a 1 GB constant; the answer is still right."""
    class Spectrum(torch.nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs() * 2

    x = torch.randn(2, 16000, device=device)
    with pytest.warns(UserWarning, match="accelerated little"):
        compiled = kiln.compile(Spectrum(), arg_inputs=(x,), min_block_size=1)
    assert "aten._fft_r2c.default" in compiled.program.fallback_ops()
    assert torch.allclose(compiled(x), Spectrum()(x), rtol=1e-4, atol=1e-3)
