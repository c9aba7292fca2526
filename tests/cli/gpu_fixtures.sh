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
fail=0
for dir in "$data"/*/; do
  [ -f "$dir/input_0.npy" ] || continue
  for model in "$dir"/export.pt2 "$dir"/core_aten.pt2; do
    [ -f "$model" ] || continue
    for precision in fp32 fp16 bf16; do
      check_fixture "$kiln" "$dir" "$model" $precision cuda || fail=1
    done
  done
done
exit $fail
