#!/usr/bin/env bash
# One device call: the CLI alone, then the bf16 fixtures that disagreed with PyTorch at 6ad9e0e, under
# three plans: residuals in place (KILN_CUDA_IN_PLACE_RESIDUALS=1), neither in place nor the packing
# search (KILN_ARENA_SEARCH=0, the plans before that commit's changes), and the default.
set -u
cd "$(dirname "$0")/.."
SECONDS=0
STAGES=build TARGETS="kiln" bash scripts/gpu_session.sh > /dev/null 2>&1
echo "build ${SECONDS}s: $(ls build-gpu/bin/kiln 2>&1)"
source tests/cli/common.bash
for config in "1 1" "0 0" "0 1"; do
  read -r in_place search <<< "$config"
  for f in ${FIXTURES:-mobilenet_v2 efficientnet_b0}; do
    for m in export core_aten; do
      echo -n "in-place=$in_place search=$search "
      KILN_CUDA_IN_PLACE_RESIDUALS=$in_place KILN_ARENA_SEARCH=$search \
        check_fixture build-gpu/bin/kiln tests/data/$f tests/data/$f/$m.pt2 ${PRECISION:-bf16} cuda
    done
  done
done
echo "total ${SECONDS}s"
