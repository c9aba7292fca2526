#!/usr/bin/env bash
# Bad input to compile/run/bench/converters: exit 2 and one line naming what is wrong.
# Usage: program_errors.sh KILN DATA_DIR
set -u
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
fail=0
mlp="$data/mlp_dyn/export.pt2"
in="$data/mlp_dyn/input_0.npy"

"$py" - "$work" <<'PY'
import sys, numpy as np
w = sys.argv[1]
np.save(f"{w}/i64.npy", np.zeros((4, 64), np.int64))
np.save(f"{w}/rank3.npy", np.zeros((4, 64, 1), np.float32))
np.save(f"{w}/wide.npy", np.zeros((4, 63), np.float32))
np.save(f"{w}/big.npy", np.zeros((300, 64), np.float32))
PY
echo "garbage" >"$work/garbage.npy"

expect 2 "no such file" -- "$kiln" compile "$work/missing.pt2" -o "$work/x.kiln"
expect 2 "unknown op 'aten.nonsense.default'" -- "$kiln" compile "$mlp" -o "$work/x.kiln" --torch-executed-ops aten.nonsense.default
expect 2 "NAME:DIM:MIN:OPT:MAX" -- "$kiln" compile "$mlp" -o "$work/x.kiln" --dynamic x:0:1
expect 2 "no input 'y'" -- "$kiln" compile "$mlp" -o "$work/x.kiln" --dynamic y:0:1:2:3
expect 2 "is static" -- "$kiln" compile "$mlp" -o "$work/x.kiln" --dynamic x:1:1:2:3
expect 2 "--workspace-size: Value -5 not in range" -- "$kiln" compile "$mlp" -o "$work/x.kiln" --workspace-size -5
expect 0 "" -- "$kiln" compile "$mlp" -o "$work/x.kiln" --workspace-size 1
expect 2 "exceeds the exported range" -- "$kiln" compile "$mlp" -o "$work/x.kiln" --dynamic x:0:1:8:100000
expect 2 "require_full_compilation" -- "$kiln" compile "$mlp" -o "$work/x.kiln" --require-full-compilation --torch-executed-ops aten.gelu.default
expect 0 "" -- "$kiln" compile "$mlp" -o "$work/mlp.kiln" --dynamic x:0:1:8:64
expect 2 "input 'x'.*wrong dtype" -- "$kiln" run "$work/mlp.kiln" --input "$work/i64.npy" --output-dir "$work/o"
expect 2 "input 'x'.*wrong rank" -- "$kiln" run "$work/mlp.kiln" --input "$work/rank3.npy" --output-dir "$work/o"
expect 2 "input 'x'.*dim 1 must be 64" -- "$kiln" run "$work/mlp.kiln" --input "$work/wide.npy" --output-dir "$work/o"
expect 2 "outside the range \[1, 64\]" -- "$kiln" run "$work/mlp.kiln" --input "$work/big.npy" --output-dir "$work/o"
expect 2 "expected 1 input" -- "$kiln" run "$work/mlp.kiln" --output-dir "$work/o"
expect 2 "not a .npy file" -- "$kiln" run "$work/mlp.kiln" --input "$work/garbage.npy" --output-dir "$work/o"
expect 2 "no such file" -- "$kiln" run "$work/mlp.kiln" --input "$work/none.npy" --output-dir "$work/o"
expect 0 "" -- "$kiln" run "$work/mlp.kiln" --input "$in" --output-dir "$work/o"
expect 0 "" -- "$kiln" bench "$work/mlp.kiln" --input "$in" --iters 3
expect 2 "no converter is registered" -- "$kiln" converters aten.nonsense.default

# A corrupted .kiln (one byte flipped in the middle, or truncated) is refused.
cp "$work/mlp.kiln" "$work/bad.kiln"
size=$(stat -c %s "$work/bad.kiln")
printf '\xff' | dd of="$work/bad.kiln" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect 2 "checksum mismatch" -- "$kiln" run "$work/bad.kiln" --input "$in" --output-dir "$work/o"
head -c $((size - 100)) "$work/mlp.kiln" >"$work/short.kiln"
expect 2 "not a valid .kiln" -- "$kiln" run "$work/short.kiln" --input "$in" --output-dir "$work/o"
exit $fail
