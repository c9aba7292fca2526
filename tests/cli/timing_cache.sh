#!/usr/bin/env bash
# The on-disk timing cache on CUDA: a second process reads the first one's tactic choices instead
# of timing again (KILN_LOG=debug says so), computes the same outputs, and KILN_TIMING_CACHE=off
# writes nothing. Skips where kiln has no CUDA device (CI). Usage: timing_cache.sh KILN DATA_DIR
set -u
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
require_cuda "$kiln" "$data"
fail=0
cache="$work/timing/cache.json"
for name in convnet_small bert_tiny; do
  dir="$data/$name"
  inputs=()
  for f in "$dir"/input_*.npy; do inputs+=(--input "$f"); done
  if ! "$kiln" compile "$dir/export.pt2" -o "$work/$name.kiln" --precision fp16 --device cuda >/dev/null 2>"$work/err"; then
    echo "FAIL $name compile: $(tail -1 "$work/err")"; fail=1; continue
  fi
  for round in first second; do
    if ! KILN_TIMING_CACHE=$cache KILN_LOG=debug "$kiln" run "$work/$name.kiln" "${inputs[@]}" \
        --output-dir "$work/$name.$round" >/dev/null 2>"$work/$name.$round.err"; then
      echo "FAIL $name $round run: $(tail -1 "$work/$name.$round.err")"; fail=1; continue 2
    fi
  done
  [ -s "$cache" ] || { echo "FAIL $name: no cache file written"; fail=1; continue; }
  timed=$(grep -cE "s to choose|heuristic candidates" "$work/$name.first.err")
  reused=$(grep -c "from the timing cache" "$work/$name.second.err")
  retimed=$(grep -cE "s to choose|heuristic candidates" "$work/$name.second.err")
  if [ "$name" = convnet_small ] && [ "$reused" = 0 ]; then
    echo "FAIL $name: the second run chose no convolution from the cache"; fail=1
  fi
  if [ "$retimed" != 0 ]; then
    echo "FAIL $name: the second run timed $retimed choice(s) the first had made ($timed timed then)"
    grep -E "s to choose|heuristic candidates" "$work/$name.second.err" | head -3 | sed 's/^/    /'; fail=1
  fi
  for want in "$dir"/output_*.npy; do
    o=$(basename "$want")
    msg=$($py "$cli_dir/npy_close.py" "$work/$name.second/$o" "$work/$name.first/$o" 1e-3 2>&1) ||
      { echo "FAIL $name $o: the cached choices compute other values: $msg"; fail=1; }
  done
  echo "ok   $name: $timed choice(s) timed, then $reused convolution/attention choice(s) from the cache"
done
grep -q '"gemm ' "$cache" || { echo "FAIL: no GEMM choice in the cache"; fail=1; }
mkdir -p "$work/home"
HOME=$work/home XDG_CACHE_HOME= KILN_TIMING_CACHE=off "$kiln" run "$work/convnet_small.kiln" \
  --input "$data/convnet_small/input_0.npy" --output-dir "$work/off" >/dev/null 2>&1 ||
  { echo "FAIL: run with KILN_TIMING_CACHE=off"; fail=1; }
# (CUDA's own JIT cache may appear under ~/.nv: not kiln's)
[ ! -e "$work/home/.cache/kiln" ] || { echo "FAIL: KILN_TIMING_CACHE=off wrote $(find "$work/home/.cache/kiln")"; fail=1; }
env -u KILN_TIMING_CACHE HOME=$work/home XDG_CACHE_HOME= "$kiln" run "$work/convnet_small.kiln" --input "$data/convnet_small/input_0.npy" \
  --output-dir "$work/default" >/dev/null 2>&1 || { echo "FAIL: run with the default cache"; fail=1; }
[ -s "$work/home/.cache/kiln/timing_cache.json" ] || { echo "FAIL: no cache at the default place"; fail=1; }
exit $fail
