#!/usr/bin/env bash
# `kiln refit MODEL.kiln NEW.pt2 -o OUT.kiln`: the compiled program takes the weights of another
# export of the same model and then computes what that export compiled from scratch computes;
# other partition options than the program's are refused (exit 2), nothing written, and the input
# program is never changed. Usage: refit.sh KILN DATA_DIR
set -eu
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
root=$(cd "$(dirname "$0")/../.." && pwd)
src=$root/examples/mlp_dyn.pt2
input=$root/examples/mlp_dyn.input_0.npy

# A second export of the same model: every weight scaled (the archive's raw weight files rewritten,
# sizes unchanged), as a fine-tuned checkpoint would differ.
$py - "$src" "$work/finetuned.pt2" <<'PY'
import sys, zipfile
import numpy as np
src, scaled = sys.argv[1:3]
with zipfile.ZipFile(src) as z:
    entries = {i.filename: z.read(i.filename) for i in z.infolist()}
with zipfile.ZipFile(scaled, "w") as out:
    for name, data in entries.items():
        if "/data/weights/weight_" in name:
            data = (np.frombuffer(data, dtype=np.float32) * 1.5 - 0.01).astype(np.float32).tobytes()
        out.writestr(name, data)
PY

"$kiln" compile "$src" -o "$work/base.kiln" --min-block-size 1 >/dev/null 2>&1
"$kiln" compile "$work/finetuned.pt2" -o "$work/fresh.kiln" --min-block-size 1 >/dev/null 2>&1
cp "$work/base.kiln" "$work/before.kiln"
"$kiln" refit "$work/base.kiln" "$work/finetuned.pt2" -o "$work/refitted.kiln" --min-block-size 1 >/dev/null 2>&1
cmp -s "$work/base.kiln" "$work/before.kiln" || { echo "FAIL: refit changed its input program"; exit 1; }
for k in base fresh refitted; do
  "$kiln" run "$work/$k.kiln" --input "$input" --output-dir "$work/out_$k" >/dev/null 2>&1
done
$py "$cli_dir/npy_close.py" "$work/out_refitted/output_0.npy" "$work/out_fresh/output_0.npy" 1e-6 \
  || { echo "FAIL: the refitted program disagrees with the new export compiled from scratch"; exit 1; }
if $py "$cli_dir/npy_close.py" "$work/out_refitted/output_0.npy" "$work/out_base/output_0.npy" 1e-3 >/dev/null 2>&1; then
  echo "FAIL: the refitted program still computes the old weights' result"; exit 1
fi
echo "ok   refit: the new weights' result"

# Other partition options than the program's: refused, naming what to pass, exit 2.
set +e
"$kiln" refit "$work/base.kiln" "$work/finetuned.pt2" -o "$work/bad.kiln" --min-block-size 1 \
  --torch-executed-ops aten.gelu.default >/dev/null 2>"$work/err"
rc=$?
set -e
msg=$(tail -1 "$work/err")
[ $rc -eq 2 ] || { echo "FAIL: refit with other options exited $rc: $msg"; exit 1; }
case $msg in *"options the program was compiled with"*) ;; *) echo "FAIL: unhelpful message: $msg"; exit 1 ;; esac
[ ! -e "$work/bad.kiln" ] || { echo "FAIL: a refused refit wrote its output"; exit 1; }
echo "ok   refit with other options refused: ${msg:0:120}"

# Missing arguments and files: exit 2 with one line.
set +e
"$kiln" refit "$work/base.kiln" "$work/nope.pt2" -o "$work/x.kiln" >/dev/null 2>&1; rc1=$?
"$kiln" refit "$work/base.kiln" "$work/finetuned.pt2" --min-block-size 1 >/dev/null 2>&1; rc2=$?
set -e
[ $rc1 -eq 2 ] && [ $rc2 -eq 2 ] || { echo "FAIL: bad arguments exited $rc1 / $rc2"; exit 1; }
echo "ok   bad arguments exit 2"
