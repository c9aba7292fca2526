#!/usr/bin/env bash
# One device call that does what a short GPU lease allows, in order of value, each step time-boxed
# against the call's limit (CALL_LIMIT, default 585 s): build the CLI and the Python module, the
# Python tests on CUDA, the engine-cache build times (bench/build_time.py), then a quick suite
# sample (QUICK_MODELS at batch 1, both entry paths). BUILDTIME_ARGS= or QUICK_MODELS= (empty) skips
# that step; ROOFLINE=seconds adds bench/kernel_roofline.py before them. Outputs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
limit=${CALL_LIMIT:-585}
left() { echo $(( limit - SECONDS )); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
STAGES=build BUILD_TYPE=Release TARGETS="kiln _kiln" bash scripts/gpu_session.sh
echo "build done at ${SECONDS}s"
for pkg in cudnn cublas cuda_nvrtc cuda_runtime; do
  d=$(python3 -c "import nvidia.$pkg; print(list(nvidia.$pkg.__path__)[0])" 2>/dev/null || true)
  [[ -n "$d" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d/lib"
done
export PYTHONPATH=build-gpu/python
t=$(( $(left) - ${RESERVE:-170} ))
if (( t > 30 )); then
  KILN_CRASH_TRACE=1 timeout $t python3 -X faulthandler -m pytest -q -rf ${PYTEST_ARGS:-tests/python} > "$out/pytest.log" 2>&1
  echo "pytest rc $? at ${SECONDS}s"; grep -E "passed|failed|^FAILED|^ERROR" "$out/pytest.log" | tail -25
fi
if [[ -n "${ROOFLINE:-}" ]]; then  # ROOFLINE=seconds: bench/kernel_roofline.py (ROOFLINE_ARGS) for that long
  t=$(( $(left) < ROOFLINE ? $(left) : ROOFLINE ))
  timeout $t python3 bench/kernel_roofline.py --deadline $(( t - 30 )) ${ROOFLINE_ARGS:-} > "$out/roofline.md" 2> "$out/roofline.err"
  echo "roofline rc $? at ${SECONDS}s"; cat "$out/roofline.md"; tail -3 "$out/roofline.err"
fi
t=$(( $(left) - 80 ))
if (( t > 30 )) && [[ "${BUILDTIME_ARGS-x}" != "" ]]; then
  timeout $t python3 bench/build_time.py ${BUILDTIME_ARGS:---models resnet50,efficientnet_b0 --batches 32} \
    > "$out/buildtime.md" 2> "$out/buildtime.err"
  echo "buildtime rc $? at ${SECONDS}s"; cat "$out/buildtime.md"; tail -3 "$out/buildtime.err"
fi
t=$(( $(left) - 5 ))
if (( t > 40 )) && [[ "${QUICK_MODELS-x}" != "" ]]; then
  timeout $t python3 bench/gpu_compare.py --kiln-bin build-gpu/bin/kiln --models ${QUICK_MODELS:-efficientnet-b0} \
    --batches small --paths py,cli --rounds 1 --deadline $(( t - 10 )) > "$out/quick.md" 2> "$out/quick.err"
  grep -E "^\||^- " "$out/quick.md"; tail -3 "$out/quick.err"
fi
echo "total ${SECONDS}s"
