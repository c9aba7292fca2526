"""The engine cache: a compiled program stored by cache_built_engines is loaded by
reuse_cached_engines for the same model and settings, and only then; entries beyond the size limit
are evicted oldest first; a damaged entry is compiled anew."""
import os

import pytest
import torch

import kiln
from kiln import _cache

def model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()

X = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))

def compile_cached(m, cache_dir, **options):
    return kiln.compile(m, arg_inputs=(X,), min_block_size=1, cache_built_engines=True, reuse_cached_engines=True,
                        engine_cache_dir=cache_dir, **options)

def entries(cache_dir):
    return sorted(f for f in os.listdir(cache_dir) if f.endswith(".kiln"))

def test_a_second_compile_loads_the_stored_program(tmp_path, monkeypatch):
    m = model()
    first = compile_cached(m, tmp_path)
    assert len(entries(tmp_path)) == 1
    def refuse(*args, **kwargs):
        raise AssertionError("compile_program ran: the engine cache was not used")
    monkeypatch.setattr(kiln._kiln, "compile_program", refuse)
    second = compile_cached(m, tmp_path)
    with torch.no_grad():
        assert torch.equal(second(X), first(X))
        assert torch.allclose(second(X), m(X), atol=1e-5)
    assert second.program is not first.program

def test_only_the_same_model_and_settings_hit(tmp_path):
    compile_cached(model(0), tmp_path)
    compile_cached(model(0), tmp_path)
    assert len(entries(tmp_path)) == 1
    compile_cached(model(1), tmp_path)                    # other weights
    assert len(entries(tmp_path)) == 2
    compile_cached(model(0), tmp_path, precision="bf16")  # other settings
    assert len(entries(tmp_path)) == 3
    m = model(0)
    kiln.compile(m, arg_inputs=(torch.randn(5, 16),), min_block_size=1, cache_built_engines=True,
                 engine_cache_dir=tmp_path)                # other input shape: another graph
    assert len(entries(tmp_path)) == 4

def test_a_python_converter_changes_the_key(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU()).eval()
    compile_cached(m, tmp_path)
    calls = []

    @kiln.conversion.converter(torch.ops.aten.relu.default, priority=kiln.conversion.ConverterPriority.HIGH)
    def my_relu(ctx, target, args, kwargs, name):
        calls.append(name)
        return kiln.conversion.impl.activation.relu(ctx, target, name=name, source_ir=kiln.SourceIR.ATEN,
                                                    input_val=args[0])
    try:
        out = compile_cached(m, tmp_path)
        assert calls, "the new converter must run: a cached program built without it was used"
        assert len(entries(tmp_path)) == 2
        with torch.no_grad():
            assert torch.allclose(out(X), m(X), atol=1e-5)
    finally:
        kiln.conversion.remove_python_converters("python:" + __name__)

def test_least_recently_used_entries_are_evicted(tmp_path):
    compile_cached(model(0), tmp_path)
    size = os.path.getsize(os.path.join(tmp_path, entries(tmp_path)[0]))
    limit = int(size * 2.5)
    compile_cached(model(1), tmp_path, engine_cache_size=limit)
    first, second = entries(tmp_path), None
    assert len(first) == 2
    os.utime(os.path.join(tmp_path, first[0]), ns=(1, 1))  # make an order no clock can blur
    os.utime(os.path.join(tmp_path, first[1]), ns=(2, 2))
    compile_cached(model(2), tmp_path, engine_cache_size=limit)
    second = entries(tmp_path)
    assert len(second) == 2 and first[0] not in second and first[1] in second

def test_a_damaged_entry_is_compiled_anew(tmp_path):
    m = model()
    compile_cached(m, tmp_path)
    path = os.path.join(tmp_path, entries(tmp_path)[0])
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.warns(UserWarning, match="unreadable"):
        again = compile_cached(m, tmp_path)
    with torch.no_grad():
        assert torch.allclose(again(X), m(X), atol=1e-5)
    kiln._kiln.CompiledProgram.deserialize(open(path, "rb").read())  # rewritten whole

def test_bad_cache_options_are_named(tmp_path):
    m = model()
    with pytest.raises(TypeError, match="cache_built_engines"):
        kiln.compile(m, arg_inputs=(X,), cache_built_engines="yes")
    with pytest.raises(TypeError, match="engine_cache_dir"):
        kiln.compile(m, arg_inputs=(X,), cache_built_engines=True, engine_cache_dir=3)
    with pytest.raises(ValueError, match="engine_cache_size"):
        kiln.compile(m, arg_inputs=(X,), cache_built_engines=True, engine_cache_dir=tmp_path, engine_cache_size=0)

def test_the_key_is_stable_and_sees_weight_bytes():
    from kiln._capture import capture
    m = model()
    s = kiln.CompilationSettings()
    cpu = torch.device("cpu")
    with torch.no_grad():
        k1 = _cache.key_of(capture(m, (X,), None, cpu), s, cpu)
        k2 = _cache.key_of(capture(m, (X,), None, cpu), s, cpu)
        m[0].weight[0, 0] += 1e-3
        k3 = _cache.key_of(capture(m, (X,), None, cpu), s, cpu)
    assert k1 == k2 != k3


def test_an_unwritable_cache_warns_and_still_compiles(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would be")
    with pytest.warns(UserWarning, match="engine cache"):
        compiled = compile_cached(model(), blocker / "engines")
    with torch.no_grad():
        assert torch.allclose(compiled(X), model()(X), atol=1e-5)

def test_verbose_reports_the_capture_and_the_load(tmp_path, capfd):
    """verbose=True says how long the trace took (every compile pays it, a hit too) and how long
    loading the stored program took: the split bench/build_time.py reads."""
    compile_cached(model(), tmp_path, verbose=True)
    first = capfd.readouterr().err
    assert "kiln.compile: captured in" in first and "loaded from the engine cache" not in first
    compile_cached(model(), tmp_path, verbose=True)
    second = capfd.readouterr().err
    assert "kiln.compile: captured in" in second
    assert "kiln.compile: loaded from the engine cache (" in second and ") in " in second
