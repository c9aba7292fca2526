#!/usr/bin/env bash
# Compiling for a GPU on a machine that may have none: `kiln compile --device cuda --cuda-arch 90`
# builds the plans and their kernels (NVRTC needs no GPU) into the .kiln, whose summary says so.
# The file then runs: on the GPU where there is one, else with --device cpu; a plain run without
# a GPU is refused with exit code 2 naming the way out. Skips for a kiln built without CUDA.
# Usage: cuda_cross_compile.sh KILN DATA_DIR
set -u
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
d="$data/vit_small"
fail=0
if ! "$kiln" compile "$d/export.pt2" -o "$work/v.kiln" --device cuda --cuda-arch 90 >"$work/out" 2>"$work/err"; then
  if grep -q "built without CUDA" "$work/err"; then echo "SKIP: $(tail -1 "$work/err")"; exit 0; fi
  echo "FAIL compile --cuda-arch 90: $(tail -1 "$work/err")"; exit 1
fi
if grep -qE "device code [0-9]+ kernels for sm_90" "$work/out"; then
  echo "ok   the .kiln carries kernels compiled for sm_90"
else
  echo "FAIL no device code in the summary:"; cat "$work/out"; fail=1
fi
# where it runs: the GPU if there is one, else the CPU when asked
if "$kiln" run "$work/v.kiln" --input "$d/input_0.npy" --output-dir "$work/gpu" >/dev/null 2>"$work/err"; then
  msg=$($py "$cli_dir/npy_close.py" "$work/gpu/output_0.npy" "$d/output_0.npy" 1e-3 2>&1) &&
    echo "ok   runs on the GPU: $msg" || { echo "FAIL on the GPU: $msg"; fail=1; }
else
  rc=$?
  if [ $rc = 2 ] && grep -q "compiled for CUDA and no GPU is present here (run it with --device cpu)" "$work/err"; then
    echo "ok   no GPU: refused with exit code 2 and the way out"
  else
    echo "FAIL run without a GPU: exit $rc: $(tail -1 "$work/err")"; fail=1
  fi
fi
if "$kiln" run "$work/v.kiln" --device cpu --input "$d/input_0.npy" --output-dir "$work/cpu" >/dev/null 2>"$work/err"; then
  msg=$($py "$cli_dir/npy_close.py" "$work/cpu/output_0.npy" "$d/output_0.npy" 1e-3 2>&1) &&
    echo "ok   --device cpu: $msg" || { echo "FAIL --device cpu: $msg"; fail=1; }
else
  echo "FAIL --device cpu: $(tail -1 "$work/err")"; fail=1
fi
# the options are checked: exit code 2 and what is wrong
"$kiln" compile "$d/export.pt2" -o "$work/x.kiln" --cuda-arch 90 >/dev/null 2>"$work/err"
if [ $? != 2 ] || ! grep -q "cuda-arch needs --device cuda" "$work/err"; then
  echo "FAIL --cuda-arch without --device cuda: $(tail -1 "$work/err")"; fail=1
fi
"$kiln" compile "$d/export.pt2" -o "$work/x.kiln" --device cuda --cuda-arch 91 >/dev/null 2>"$work/err"
if [ $? != 2 ] || ! grep -q "cuda-arch 91: this kiln's NVRTC compiles for .*90" "$work/err"; then
  echo "FAIL --cuda-arch 91: $(tail -1 "$work/err")"; fail=1
fi
exit $fail
