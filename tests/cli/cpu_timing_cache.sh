#!/usr/bin/env bash
# The CPU's convolution tactics in the on-disk timing cache: the first run of a program times
# oneDNN's direct and Winograd kernels for each 3x3 convolution (KILN_LOG=debug prints the times;
# where oneDNN has no Winograd kernel it says so, and that is kept too),
# a second process reads those choices instead of timing again, and both compute PyTorch's
# outputs; KILN_CPU_CONV_TACTIC=winograd and =direct force one, and an unknown value is bad input
# (exit 2, named). Usage: cpu_timing_cache.sh KILN DATA_DIR
set -u
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
fail=0
name=fpn_backbone
dir="$data/$name"
inputs=()
for f in "$dir"/input_*.npy; do inputs+=(--input "$f"); done
"$kiln" compile "$dir/export.pt2" -o "$work/$name.kiln" >/dev/null 2>"$work/err" ||
  { echo "FAIL compile: $(tail -1 "$work/err")"; exit 1; }
cache="$work/timing/cache.json"
matches_pytorch() {  # OUTPUT_DIR WHAT
  local want o msg
  for want in "$dir"/output_*.npy; do
    o=$(basename "$want")
    msg=$($py "$cli_dir/npy_close.py" "$1/$o" "$want" 1e-3 2>&1) || { echo "FAIL $2 $o: $msg"; fail=1; }
  done
}
# Without oneDNN (`kiln --version` lists it when built with it) there are no tactics to time: the
# setting is still checked (the last case below), and the runs must still compute PyTorch's outputs.
if ! "$kiln" --version | grep -q "oneDNN"; then
  KILN_CPU_CONV_TACTIC=winograd "$kiln" run "$work/$name.kiln" "${inputs[@]}" --output-dir "$work/plain" \
    >/dev/null 2>"$work/err" || { echo "FAIL run without oneDNN: $(tail -1 "$work/err")"; fail=1; }
  matches_pytorch "$work/plain" "run without oneDNN"
  echo "skip tactic timing: this kiln was built without oneDNN"
else
for round in first second; do
  KILN_TIMING_CACHE=$cache KILN_LOG=debug "$kiln" run "$work/$name.kiln" "${inputs[@]}" --output-dir "$work/$round" \
    >/dev/null 2>"$work/$round.err" || { echo "FAIL $round run: $(tail -1 "$work/$round.err")"; exit 1; }
  matches_pytorch "$work/$round" "$round run"
done
chosen='direct [0-9.e-]+ ms, winograd|no Winograd kernel'  # timed, or nothing to time on this processor
timed=$(grep -cE "$chosen" "$work/first.err")
reused=$(grep -c "from the timing cache" "$work/second.err")
retimed=$(grep -cE "$chosen" "$work/second.err")
[ "$timed" -gt 0 ] || { echo "FAIL: the first run timed no convolution tactic"; fail=1; }
[ -s "$cache" ] && grep -q '"cpu conv ' "$cache" || { echo "FAIL: no CPU convolution choice in $cache"; fail=1; }
[ "$reused" -gt 0 ] || { echo "FAIL: the second run chose no convolution from the cache"; fail=1; }
[ "$retimed" = 0 ] || { echo "FAIL: the second run timed $retimed choice(s) again"; fail=1; }
echo "ok   $timed choice(s) timed, then $reused from the cache"
for tactic in winograd direct; do
  KILN_CPU_CONV_TACTIC=$tactic "$kiln" run "$work/$name.kiln" "${inputs[@]}" --output-dir "$work/$tactic" \
    >/dev/null 2>"$work/err" || { echo "FAIL KILN_CPU_CONV_TACTIC=$tactic: $(tail -1 "$work/err")"; fail=1; continue; }
  matches_pytorch "$work/$tactic" "KILN_CPU_CONV_TACTIC=$tactic"
done
fi
KILN_CPU_CONV_TACTIC=fastest "$kiln" run "$work/$name.kiln" "${inputs[@]}" --output-dir "$work/bad" >/dev/null 2>"$work/err"
rc=$?
[ "$rc" = 2 ] || { echo "FAIL: an unknown KILN_CPU_CONV_TACTIC exited $rc, not 2"; fail=1; }
grep -q "KILN_CPU_CONV_TACTIC must be auto, direct or winograd, not 'fastest'" "$work/err" ||
  { echo "FAIL: the error does not name the setting: $(tail -1 "$work/err")"; fail=1; }
exit $fail
