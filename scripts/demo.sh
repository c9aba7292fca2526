#!/usr/bin/env bash
# `make demo`: compile and run the bundled example (examples/mlp_dyn.pt2: Linear-GELU-Linear-
# LayerNorm-softmax with a dynamic batch, exported by PyTorch 2.11), show the partition, check the
# result against PyTorch's stored output, and time it. Then the same with GELU forced to PyTorch,
# to show a partitioned program (two accelerated segments around a fallback op).
#   scripts/demo.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
kiln="$build/bin/kiln"
[ -x "$kiln" ] || { echo "demo: $kiln not built (run make)" >&2; exit 1; }
ex="$root/examples"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The first Python on PATH (or Debian's) that has numpy; KILN_PYTHON overrides.
py=""
for candidate in ${KILN_PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import numpy" 2>/dev/null; then py=$candidate; break; fi
done
compare() {  # compare GOT WANT
  if [ -n "$py" ]; then
    "$py" "$root/tests/cli/npy_close.py" "$1" "$2" 1e-4 | sed 's/^/agreement with PyTorch: /'
  else
    echo "agreement with PyTorch: (numpy not installed; skipped)"
  fi
}

echo "== kiln compile examples/mlp_dyn.pt2 --dryrun"
"$kiln" compile "$ex/mlp_dyn.pt2" --dryrun 2>/dev/null

echo
echo "== kiln compile examples/mlp_dyn.pt2 -o mlp_dyn.kiln --dynamic x:0:1:8:256"
"$kiln" compile "$ex/mlp_dyn.pt2" -o "$work/mlp_dyn.kiln" --dynamic x:0:1:8:256

echo
echo "== kiln run mlp_dyn.kiln --input examples/mlp_dyn.input_0.npy"
"$kiln" run "$work/mlp_dyn.kiln" --input "$ex/mlp_dyn.input_0.npy" --output-dir "$work/out" 2>/dev/null
compare "$work/out/output_0.npy" "$ex/mlp_dyn.output_0.npy"
"$kiln" bench "$work/mlp_dyn.kiln" --input "$ex/mlp_dyn.input_0.npy" --iters 200 2>/dev/null | sed 's/^/time per run: /'

echo
echo "== the same with GELU run by PyTorch: --torch-executed-ops aten.gelu.default --min-block-size 1"
"$kiln" compile "$ex/mlp_dyn.pt2" -o "$work/mlp_split.kiln" --torch-executed-ops aten.gelu.default --min-block-size 1 2>/dev/null
"$kiln" run "$work/mlp_split.kiln" --input "$ex/mlp_dyn.input_0.npy" --output-dir "$work/out2" >/dev/null 2>&1
compare "$work/out2/output_0.npy" "$ex/mlp_dyn.output_0.npy"
"$kiln" bench "$work/mlp_split.kiln" --input "$ex/mlp_dyn.input_0.npy" --iters 200 2>/dev/null | sed 's/^/time per run: /'
