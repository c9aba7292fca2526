"""The PEP 517 build backend `pip install .` uses (pyproject.toml): builds the native module with
CMake and packs the package into a wheel, with the standard library alone.

The CMake build folder is KILN_BUILD_DIR, else build/ in the checkout (configured if it is not, as
`make build` would): an already-built checkout packs in seconds. The wheel holds kiln/ (the .py files
and _kiln.*.so) and is tagged for this interpreter and platform; its native module links the shared
libraries kiln was built against (OpenBLAS, oneDNN, CUDA and cuDNN where found), so it installs on
the machine or image it was built on.
"""
import base64
import hashlib
import os
import subprocess
import sys
import sysconfig
import zipfile

NAME, VERSION = "kiln", "0.1.0"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _build_dir():
    return os.path.abspath(os.environ.get("KILN_BUILD_DIR") or os.path.join(ROOT, "build"))


def _log(msg):
    print(f"kiln build: {msg}", file=sys.stderr, flush=True)


def _native_module():
    build = _build_dir()
    if not os.path.exists(os.path.join(build, "CMakeCache.txt")):
        _log(f"configuring {build}")
        subprocess.check_call(["cmake", "-S", ROOT, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                               f"-DPython3_EXECUTABLE={sys.executable}"])
    _log(f"building the Python module in {build}")
    subprocess.check_call(["cmake", "--build", build, "--target", "_kiln"])
    package = os.path.join(build, "python", NAME)
    so = [f for f in os.listdir(package) if f.startswith("_kiln") and f.endswith(".so")]
    if not so:
        raise RuntimeError(f"kiln build: no _kiln module in {package}: CMake found no pybind11 or Python "
                           "development files (scripts/install_deps.sh installs them)")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    if not any(f.endswith(suffix) for f in so):
        raise RuntimeError(f"kiln build: {package} holds {', '.join(so)}, built for another Python than "
                           f"{sys.executable} ({suffix}); set KILN_BUILD_DIR to a fresh folder")
    return package


def _tag():
    impl = f"cp{sys.version_info.major}{sys.version_info.minor}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{impl}-{impl}{sys.abiflags}-{plat}"


def _metadata():
    return "\n".join([
        "Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {VERSION}",
        "Summary: An ahead-of-time inference compiler for PyTorch programs",
        "Requires-Python: >=3.9", "Requires-Dist: torch>=1.13.0a0", "Requires-Dist: numpy", ""])


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = f"{NAME}-{VERSION}.dist-info"
    os.makedirs(os.path.join(metadata_directory, info), exist_ok=True)
    with open(os.path.join(metadata_directory, info, "METADATA"), "w") as f:
        f.write(_metadata())
    return info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    package = _native_module()
    tag = _tag()
    name = f"{NAME}-{VERSION}-{tag}.whl"
    info = f"{NAME}-{VERSION}.dist-info"
    records = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as whl:
        def add(arcname, data):
            whl.writestr(arcname, data)
            records.append(_record_line(arcname, data))

        for folder, dirs, files in os.walk(package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                if f.endswith(".py") or (f.startswith("_kiln") and f.endswith(".so")):
                    path = os.path.join(folder, f)
                    with open(path, "rb") as src:
                        add(os.path.join(NAME, os.path.relpath(path, package)), src.read())
        add(f"{info}/METADATA", _metadata().encode())
        add(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: kiln_build\nRoot-Is-Purelib: false\nTag: {tag}\n".encode())
        add(f"{info}/top_level.txt", f"{NAME}\n".encode())
        # torch.compile(backend="kiln") finds the backend through this entry point (PyTorch >= 2.1
        # reads the group), also before `import kiln`.
        add(f"{info}/entry_points.txt", b"[torch_dynamo_backends]\nkiln = kiln._dynamo:kiln_backend\n")
        whl.writestr(f"{info}/RECORD", "\n".join(records + [f"{info}/RECORD,,"]) + "\n")
    _log(f"wrote {name}")
    return name
