# Sourced by the CLI test scripts: a scratch folder removed on exit, and `py`, a Python with numpy
# (Debian's /usr/bin/python3 here, the PyTorch one on the GPU machine); without one the script
# skips (exit 0 with a note), since numpy is only how the tests read .npy results.
cli_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=""
for p in /usr/bin/python3 python3; do
  if "$p" -c "import numpy" 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || { echo "SKIP: no python3 with numpy"; exit 0; }

# check_fixture KILN FIXTURE_DIR MODEL PRECISION DEVICE: compile MODEL (.pt2) with that precision
# for that device, run it on the fixture's inputs, and compare every output with PyTorch's:
# fp32 within 1e-3 relative error, fp16/bf16 by cosine similarity (npy_cosine.py). Prints one
# line per output ("ok", "skip" or "FAIL ..."); returns 1 on any failure.
check_fixture() {
  local kiln=$1 dir=$2 model=$3 precision=$4 device=$5
  local name tag k out inputs=() f want o msg rc=0
  name=$(basename "$dir")
  tag="$name/$(basename "$model" .pt2) $precision $device"
  for f in "$dir"/input_*.npy; do inputs+=(--input "$f"); done
  k="$work/$name.$precision.$device.kiln"
  out="$work/$name.$precision.$device"
  if ! "$kiln" compile "$model" -o "$k" --precision "$precision" --device "$device" >/dev/null 2>"$work/err"; then
    echo "FAIL $tag compile: $(tail -1 "$work/err")"; return 1
  fi
  if ! "$kiln" run "$k" "${inputs[@]}" --output-dir "$out" >/dev/null 2>"$work/err"; then
    echo "FAIL $tag run: $(tail -1 "$work/err")"; return 1
  fi
  for want in "$dir"/output_*.npy; do
    o=$(basename "$want")
    if [ "$precision" = fp32 ]; then
      msg=$($py "$cli_dir/npy_close.py" "$out/$o" "$want" 1e-3 2>&1)
    else
      msg=$($py "$cli_dir/npy_cosine.py" "$out/$o" "$want" "$precision" 2>&1)
    fi
    case $? in
      0) echo "ok   $tag $o: $msg" ;;
      2) echo "skip $tag $o: $msg" ;;
      *) echo "FAIL $tag $o: $msg"; rc=1 ;;
    esac
  done
  return $rc
}

# expect CODE PATTERN -- command...: the command ends with exit CODE (within 60 s: a hang fails),
# PATTERN on its stderr and, when CODE is not 0, exactly one "kiln: error:" line. Sets fail=1 on
# a mismatch.
expect() {
  local code=$1 pattern=$2
  shift 3
  timeout 60 "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  local errors
  errors=$(grep -c '^kiln: error: ' "$work/err")
  if [ "$rc" != "$code" ] || ! grep -q -- "$pattern" "$work/err" || { [ "$code" != 0 ] && [ "$errors" != 1 ]; }; then
    echo "FAIL ($rc, want $code /$pattern/): $*"
    sed 's/^/    /' "$work/err" | tail -3
    fail=1
  else
    echo "ok   $code: $(grep 'error' "$work/err" | head -1)"
  fi
}

# require_cuda KILN DATA_DIR: runs a small fixture on CUDA; exits the script with a SKIP note where
# kiln sees no CUDA device (CI), with a FAIL where the run fails otherwise.
require_cuda() {
  local probe="$2/gelu_tanh"
  if ! "$1" run "$probe/export.pt2" --input "$probe/input_0.npy" --device cuda --output-dir "$work/probe" \
      >/dev/null 2>"$work/err"; then
    if grep -q "no CUDA device" "$work/err"; then echo "SKIP: $(tail -1 "$work/err")"; exit 0; fi
    echo "FAIL probe: $(tail -1 "$work/err")"; exit 1
  fi
}
