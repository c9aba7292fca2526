#!/usr/bin/env bash
# `pip install .` of the checkout into a fresh virtual environment (which sees the system's PyTorch),
# then, outside the checkout, the installed kiln imports, compiles a module and agrees with it.
# The wheel is packed from this test's build folder (KILN_BUILD_DIR): nothing is rebuilt or fetched.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kiln_bin=${1:-$root/build/bin/kiln}
build=$(cd "$(dirname "$kiln_bin")/.." && pwd)
python=/usr/bin/python3
[[ -x $python ]] || python=$(command -v python3)
if ! "$python" -c "import torch, venv, pip" 2>/dev/null; then
  echo "SKIP: $python lacks torch, venv or pip"; exit 0
fi
if ! ls "$build"/python/kiln/_kiln*.so >/dev/null 2>&1; then
  echo "SKIP: $build has no Python module"; exit 0
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$python" -m venv --system-site-packages "$work/venv"
KILN_BUILD_DIR="$build" "$work/venv/bin/pip" install --no-index --no-cache-dir -q "$root" 2>&1 | tail -5
cd "$work"
KILN_CHECKOUT="$root" "$work/venv/bin/python" - <<'PY'
import os, torch, kiln
# the installed copy, not the checkout's build tree
assert "site-packages" in kiln.__file__ and not kiln.__file__.startswith(os.environ["KILN_CHECKOUT"]), kiln.__file__
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
x = torch.randn(3, 8)
compiled = kiln.compile(model, arg_inputs=(x,), min_block_size=1)
with torch.no_grad():
    assert torch.allclose(compiled(x), model(x), atol=1e-5)
kiln.save(compiled, "m.kiln")
assert torch.allclose(kiln.load("m.kiln")(x), model(x), atol=1e-5)
from importlib.metadata import entry_points
backends = [e for e in entry_points(group="torch_dynamo_backends") if e.name == "kiln"]
assert backends and backends[0].load() is kiln._dynamo.kiln_backend, "no torch.compile entry point"
print("installed kiln at", kiln.__file__, "compiles and agrees")
PY
"$work/venv/bin/pip" show kiln | grep -E "^(Name|Version|Location)"
