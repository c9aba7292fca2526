#!/usr/bin/env bash
# The CUDA backend end to end (issue 6 item 3): every fixture in tests/data, both forms, compiled
# for --device cuda in fp32 (within 1e-3 relative error of PyTorch's output) and in fp16 and bf16
# (cosine similarity >= 0.999 to it; see precision.sh for the two fixtures that need more care).
# Skips where kiln has no CUDA device (CI). Usage: gpu_fixtures.sh KILN DATA_DIR
set -u
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
require_cuda "$kiln" "$data"
# Fixtures run side by side (each in a scratch folder of its own): one after another, 204 compiles
# and runs take longer than a GPU test session allows. KILN_TEST_JOBS sets how many (default 6).
jobs=${KILN_TEST_JOBS:-6}
run_fixture() {  # all forms and precisions of one fixture; the result lines, then exit status
  local dir=$1 model precision rc=0
  work=$(mktemp -d "$top/fixture.XXXXXX")
  for model in "$dir"/export.pt2 "$dir"/core_aten.pt2; do
    [ -f "$model" ] || continue
    for precision in fp32 fp16 bf16; do
      check_fixture "$kiln" "$dir" "$model" $precision cuda || rc=1
    done
  done
  return $rc
}
top=$work
count=0
for dir in "$data"/*/; do
  [ -f "$dir/input_0.npy" ] || continue
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  name=$(basename "$dir")
  { run_fixture "$dir" > "$top/$name.log" 2>&1; echo $? > "$top/$name.rc"; } &
  count=$((count + 1))
done
wait
cat "$top"/*.log
# Every fixture must have finished and passed (a job that died leaves no .rc).
fail=0
[ "$(ls "$top"/*.rc 2>/dev/null | wc -l)" = "$count" ] || { echo "FAIL: only $(ls "$top"/*.rc | wc -l) of $count fixtures finished"; fail=1; }
for rc in "$top"/*.rc; do [ "$(cat "$rc")" = 0 ] || fail=1; done
exit $fail
