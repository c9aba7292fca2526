"""The engine cache (Torch-TensorRT's cache_built_engines / reuse_cached_engines): compiled programs
kept on disk under a key of everything that decides them, so that compiling the same model again
loads its plans instead of converting, building and compiling kernels.

The key hashes the traced program (every node, its metadata and the symbol ranges), the weights'
names, types, shapes and bytes, the compile's settings, the converters registered from Python
(their code), the device and its architecture, and the kiln and PyTorch builds. A changed weight or
converter is a new key, never a stale hit. Entries beyond the size limit are evicted, least
recently used first; an unreadable entry is dropped and the program compiled anew.
"""
import hashlib
import os
import tempfile
import warnings

import torch

from . import _kiln

DEFAULT_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                           "kiln", "engines")
DEFAULT_SIZE = 5 << 30
_SUFFIX = ".kiln"

# Converters registered from Python, as (target, what decides their output): kiln.conversion
# appends to it and clears it with the registry.
python_converters = []


def _build_id():
    """The native module's file identity: another kiln build may build other plans."""
    st = os.stat(_kiln.__file__)
    return f"{_kiln.__file__}:{st.st_size}:{st.st_mtime_ns}"


def _tensor_bytes(t):
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return memoryview(t.numpy()).cast("B") if t.numel() else b""


def key_of(cap, settings, device):
    """The hex key of a compile: `cap` the capture (_capture.Captured), `settings` its
    CompilationSettings, `device` the torch.device it builds for."""
    h = hashlib.sha256()

    def feed(*parts):
        for p in parts:
            h.update(str(p).encode())
            h.update(b"\0")

    from . import __version__
    feed("kiln", __version__, _build_id(), "torch", torch.__version__)
    def canonical(v):  # a set's order differs between processes (string hashing)
        return sorted(v) if isinstance(v, (set, frozenset)) else v
    feed("settings", *(f"{k}={canonical(getattr(settings, k))!r}" for k in sorted(dir(settings))
                       if not k.startswith("_") and not callable(getattr(settings, k))))
    feed("dynamic", cap.dynamic, "device", device)
    if device.type == "cuda":
        feed(torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device))
    feed("converters", *python_converters)
    program = cap.program
    feed("graph", str(program), sorted(program.ranges.items()))
    for node in program.nodes():
        feed(node.name, node.meta)
    for name in sorted(cap.weights):
        t = cap.weights[name]
        feed("weight", name, t.dtype, tuple(t.shape))
        h.update(_tensor_bytes(t))
    return h.hexdigest()


class EngineCache:
    def __init__(self, directory=None, size_limit=None):
        self.directory = os.path.abspath(os.path.expanduser(str(directory or DEFAULT_DIR)))
        self.size_limit = DEFAULT_SIZE if size_limit is None else size_limit

    def _path(self, key):
        return os.path.join(self.directory, key + _SUFFIX)

    def load(self, key):
        """The cached CompiledProgram for `key`, or None. A damaged entry is removed with a warning."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:  # not a folder, no permission: compile, as for a miss
            warnings.warn(f"kiln: cannot read the engine cache ({e}); compiling instead", stacklevel=3)
            return None
        try:
            program = _kiln.CompiledProgram.deserialize(data)
        except _kiln.KilnError as e:
            warnings.warn(f"kiln: engine cache entry {path} is unreadable ({e}); compiling instead", stacklevel=3)
            self._remove(path)
            return None
        os.utime(path)  # recently used: evicted last
        return program

    def store(self, key, program):
        """Writes the program under `key` (atomically: a reader never sees half a file), then evicts
        the least recently used entries while the cache is over its size limit."""
        data = program.serialize()
        if len(data) > self.size_limit:
            warnings.warn(f"kiln: the compiled program ({len(data) >> 20} MiB) is larger than the engine cache's "
                          f"limit ({self.size_limit >> 20} MiB, engine_cache_size): not cached", stacklevel=3)
            return
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path(key))
        except BaseException:
            self._remove(tmp)
            raise
        self.evict(keep=key)

    def entries(self):
        """(path, bytes, last use) of every entry, oldest use first."""
        out = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return out
        for name in names:
            if name.endswith(_SUFFIX) and not name.startswith("."):
                path = os.path.join(self.directory, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:  # evicted by another process meanwhile
                    continue
                out.append((path, st.st_size, st.st_mtime_ns))
        return sorted(out, key=lambda e: e[2])

    def evict(self, keep=None):
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= self.size_limit:
                break
            if keep is not None and path == self._path(keep):
                continue
            self._remove(path)
            total -= size

    @staticmethod
    def _remove(path):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
