"""Model files name their ops as text; loading one must never call anything but an operator
(issue 17, item 1: a .kiln or .pt2 whose node target was `torch.os.system` ran the file's command).

Each hostile file is made here from a valid one: a .kiln written by kiln.save, or a .pt2 fixture from
tests/data, with one node's target (and arguments) rewritten. Loading it must raise kiln.FormatError
naming the target, and the command in its arguments must not have run.
"""
import io
import json
import os
import struct
import zipfile

import pytest
import torch

import kiln
from kiln import _values

DATA = os.path.join(os.path.dirname(__file__), "..", "data")

# Names a file could give: attribute walks out of torch / operator / math, other modules, torch.ops
# namespaces' and packets' own Python attributes, and callables that are fine for Python but are no
# operator. Each must be refused before anything is looked up or called.
HOSTILE = [
    "torch.os.system",
    "torch.os.popen",
    "torch._C._jit_set_profiling_mode",
    "torch.load",
    "torch.ops.aten.__class__.__init__",
    "aten.__class__.__init__",
    "aten.name.upper",          # torch.ops.aten.name is the string "aten"
    "aten.relu.__call__",
    "aten.relu.default.extra",
    "_operator.attrgetter",
    "_operator.methodcaller",
    "_operator.pow",            # integer powers compute without bound
    "operator.getitem.__self__",
    "math.factorial",
    "builtins.eval",
    "builtins.exec",
    "os.system",
    "subprocess.check_call",
    "kiln._values.resolve_target",
    "mylib.op.default",         # not an operator namespace kiln runs
    "torch.ops.torch.os.system",
    "",
    "getitem.__globals__",
    "aten.__getattr__.default",  # operator-shaped, but a Python attribute of the namespace
    "aten.__and__.__call__",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_resolve_target_refuses(name):
    with pytest.raises(kiln.FormatError) as e:
        _values.resolve_target(name)
    assert repr(name) in str(e.value)


@pytest.mark.parametrize("name, want", [
    ("aten.relu.default", torch.ops.aten.relu.default),
    ("torch.ops.aten.add.Tensor", torch.ops.aten.add.Tensor),
    ("aten._softmax.default", torch.ops.aten._softmax.default),
    ("getitem", __import__("operator").getitem),
    ("_operator.getitem", __import__("operator").getitem),
    ("_operator.floordiv", __import__("operator").floordiv),
    ("math.ceil", __import__("math").ceil),
    ("aten.sym_size", _values._dim),
    ("kiln._values.sym_expr", _values.sym_expr),
    ("aten.__and__.Tensor", torch.ops.aten.__and__.Tensor),  # ATen's own dunder-named operators
    ("aten.__ior__.Tensor", torch.ops.aten.__ior__.Tensor),
])
def test_resolve_target_accepts_operators(name, want):
    assert _values.resolve_target(name) is want


def test_resolve_target_unknown_overload_is_none():
    # A well-formed ATen name this PyTorch lacks: "no such op" (an InputError at compile), not a lookup.
    assert _values.resolve_target("aten.no_such_op_kiln.default") is None
    assert _values.resolve_target("aten.relu.no_such_overload") is None


def test_symbolic_power_is_bounded():
    with pytest.raises(ValueError):
        _values.eval_sym(("Pow", "s0", 10 ** 5), {"s0": 3})  # 10**12 would take forever
    assert _values.eval_sym(("Pow", "s0", 3), {"s0": 3}) == 27


# ---- hostile .kiln files ------------------------------------------------------------------------

_HEADER = struct.Struct("<8sIIQQ")  # magic, version, flags, JSON bytes, blob bytes (src/program/serialize.cpp)


def _fnv1a(data):
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def rewrite_kiln(data, edit):
    """A .kiln file's bytes with its JSON changed by edit(json) and its sizes and checksum redone:
    what an attacker writes, valid in every respect the loader checks."""
    magic, version, flags, json_bytes, blob_bytes = _HEADER.unpack_from(data)
    assert magic == b"KILNPROG"
    start = _HEADER.size
    j = json.loads(data[start:start + json_bytes])
    blob = data[start + json_bytes:start + json_bytes + blob_bytes]
    edit(j)
    text = json.dumps(j).encode()
    body = _HEADER.pack(magic, 1, flags, len(text), len(blob)) + text + blob  # version 1: its checksum is FNV-1a
    return body + struct.pack("<Q", _fnv1a(body))


class Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _saved_program(tmp_path):
    """A .kiln file with a fallback node (aten.relu.default) between two segments."""
    compiled = kiln.compile(Mixed().eval(), arg_inputs=(torch.randn(3, 8),), min_block_size=1,
                            torch_executed_ops={torch.ops.aten.relu.default})
    path = tmp_path / "good.kiln"
    kiln.save(compiled, path)
    return path.read_bytes()


def _retarget(target, args):
    """Rewrites the fallback relu node: its target, and its arguments unless args is None."""
    def edit(j):
        nodes = [n for n in j["graph"] if n["kind"] == "call_function" and n["target"] == "aten.relu.default"]
        assert len(nodes) == 1, [n["target"] for n in j["graph"]]
        nodes[0]["target"] = target
        if args is not None:
            nodes[0]["args"] = args
            nodes[0]["kwargs"] = []
    return edit


def _attempt(fn):
    """fn's exception (None if it returned): checked after the test looked for side effects."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 -- the type is the test's to judge
        return e
    return None


def _assert_refused(err, target, marker):
    assert not marker.exists(), f"loading a file naming {target!r} ran its command"
    assert isinstance(err, kiln.FormatError), f"{type(err).__name__}: {err}"
    assert target.removeprefix("torch.ops.") in str(err), str(err)


def _command_args(target, marker):
    """Arguments that make `target` act if it is ever called: a shell command, Python source."""
    if target.startswith("builtins."):
        return [{"s": f"open({str(marker)!r}, 'w').close()"}]
    return [{"s": f"touch '{marker}'"}]


@pytest.mark.parametrize("target", ["torch.os.system", "torch.os.popen", "builtins.eval", "builtins.exec",
                                    "aten.__class__.__init__", "aten.name.upper", "_operator.attrgetter",
                                    "torch._C._jit_set_profiling_mode", "math.factorial", "os.system"])
def test_kiln_file_with_hostile_target_is_refused(tmp_path, target):
    good = _saved_program(tmp_path)
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.kiln"
    path.write_bytes(rewrite_kiln(good, _retarget(target, _command_args(target, marker))))
    x = torch.randn(3, 8)
    err = _attempt(lambda: kiln.load(path)(x))
    _assert_refused(err, target, marker)


def test_rewritten_kiln_file_still_loads_when_the_target_is_an_operator(tmp_path):
    """The helper makes files the loader accepts: with an operator for target, the file runs."""
    good = _saved_program(tmp_path)
    path = tmp_path / "sigmoid.kiln"
    path.write_bytes(rewrite_kiln(good, _retarget("aten.sigmoid.default", None)))
    loaded = kiln.load(path)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert loaded(x).shape == (3, 4)
    assert "aten.sigmoid.default" in str(loaded.graph)


# ---- hostile .pt2 files -------------------------------------------------------------------------

def rewrite_pt2(src, dst, edit):
    """A copy of the .pt2 archive `src` with its model JSON changed by edit(json)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/models/model.json"):
                j = json.loads(data)
                edit(j)
                data = json.dumps(j).encode()
            zout.writestr(info, data)


def _retarget_pt2(target, marker):
    def edit(j):
        nodes = [n for n in j["graph_module"]["graph"]["nodes"] if n["target"] == "torch.ops.aten.gelu.default"]
        assert len(nodes) == 1
        nodes[0]["target"] = target
        nodes[0]["inputs"] = [{"name": "command", "arg": {"as_string": f"touch '{marker}'"}, "kind": 1}]
    return edit


@pytest.mark.parametrize("target", ["torch.os.system", "torch.ops.torch.os.system", "_operator.methodcaller",
                                    "builtins.exec", "aten.__class__.__init__", "torch._C._jit_set_profiling_mode"])
def test_pt2_with_hostile_target_is_refused(tmp_path, target):
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pt2"
    rewrite_pt2(os.path.join(DATA, "mlp_dyn", "export.pt2"), path, _retarget_pt2(target, marker))
    x = torch.randn(8, 64)
    err = _attempt(lambda: kiln.load_pt2(path, min_block_size=1)(x))
    _assert_refused(err, target, marker)


def test_rewritten_pt2_still_loads_when_the_target_is_an_operator(tmp_path):
    path = tmp_path / "relu.pt2"

    def edit(j):
        node = next(n for n in j["graph_module"]["graph"]["nodes"] if n["target"] == "torch.ops.aten.gelu.default")
        node["target"] = "torch.ops.aten.relu.default"
        node["inputs"] = node["inputs"][:1]
    rewrite_pt2(os.path.join(DATA, "mlp_dyn", "export.pt2"), path, edit)
    compiled = kiln.load_pt2(path, min_block_size=1)
    with torch.no_grad():
        assert compiled(torch.randn(8, 64)).shape == (8, 32)


def test_resolve_target_fuzz():
    """Random dotted names built from operator-ish, dunder and attribute-walk pieces (a fuzzer of
    the Python side, seeded): each resolves to an aten/prims OpOverload or an allowed Python
    operator, is None (a well-formed name this PyTorch lacks), or raises FormatError; nothing else
    ever comes back or escapes."""
    import random
    rng = random.Random(1234)
    pieces = ["torch", "ops", "aten", "prims", "os", "system", "relu", "default", "Tensor", "__and__",
              "__class__", "__init__", "__globals__", "__call__", "_operator", "operator", "math",
              "ceil", "getitem", "attrgetter", "builtins", "eval", "kiln", "_values", "sym_expr",
              "sym_size", "int", "add", "mul", "name", "upper", "__getattr__", "_C", "", "x" * 300]
    allowed = set(_values._HOST_OPS.values()) | set(_values._PY_OPERATORS.values()) | set(
        _values._KILN_HELPERS.values())
    for _ in range(3000):
        name = ".".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
        try:
            got = _values.resolve_target(name)
        except kiln.FormatError:
            continue
        if got is None:
            continue
        if isinstance(got, torch._ops.OpOverload):
            assert got.namespace in ("aten", "prims"), name
        else:
            assert got in allowed, (name, got)
