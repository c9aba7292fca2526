#!/usr/bin/env bash
# One device call: the CLI alone, then the bf16 fixtures that disagreed with PyTorch when CUDA plans
# took residual buffers in place, with KILN_CUDA_IN_PLACE_RESIDUALS off and on (an A/B of that rule).
set -u
cd "$(dirname "$0")/.."
SECONDS=0
STAGES=build TARGETS="kiln" bash scripts/gpu_session.sh > /dev/null 2>&1
echo "build ${SECONDS}s: $(ls build-gpu/bin/kiln 2>&1)"
source tests/cli/common.bash
for flag in 0 1; do
  for f in ${FIXTURES:-mobilenet_v2 efficientnet_b0}; do
    for m in export core_aten; do
      echo -n "in-place=$flag "
      KILN_CUDA_IN_PLACE_RESIDUALS=$flag check_fixture build-gpu/bin/kiln tests/data/$f tests/data/$f/$m.pt2 ${PRECISION:-bf16} cuda
    done
  done
done
echo "total ${SECONDS}s"
