#!/usr/bin/env bash
# One device call for what the last GPU runs left unexplained, each step time-boxed (CALL_LIMIT,
# default 585 s): build the CLI and the Python module; the bf16 fixtures under the three plans of
# gpu_inplace_check.sh; the 2.11 pytest files in PYTEST_ARGS; regnet's device memory
# (bench/memory_probe.py with KILN_LOG=debug, the stack-reset lines kept). Outputs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
limit=${CALL_LIMIT:-585}
left() { echo $(( limit - SECONDS )); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
STAGES=build BUILD_TYPE=Release TARGETS="kiln _kiln" bash scripts/gpu_session.sh > "$out/build.txt" 2>&1
echo "build done at ${SECONDS}s: $(ls build-gpu/bin/kiln build-gpu/python/kiln/_kiln*.so 2>&1 | tr '\n' ' ')"
for pkg in cudnn cublas cuda_nvrtc cuda_runtime; do
  d=$(python3 -c "import nvidia.$pkg; print(list(nvidia.$pkg.__path__)[0])" 2>/dev/null || true)
  [[ -n "$d" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d/lib"
done
export PYTHONPATH=build-gpu/python
if [[ -n "${PROBE:-regnet-y-800mf}" ]]; then
  KILN_LOG=debug timeout 90 python3 bench/memory_probe.py --models ${PROBE:-regnet-y-800mf} --batch ${PROBE_BATCH:-1} \
    > "$out/probe.md" 2> "$out/probe.err"
  echo "probe rc $? at ${SECONDS}s"; cat "$out/probe.md"; grep -E "stack|MiB taken" "$out/probe.err" | tail -12
fi
t=$(( $(left) - ${RESERVE:-200} ))
if (( t > 30 )) && [[ -n "${PYTEST_ARGS:-}" ]]; then
  timeout $t python3 -m pytest -q -rf --tb=short $PYTEST_ARGS > "$out/pytest.log" 2>&1
  echo "pytest rc $? at ${SECONDS}s"; grep -E "^E |^tests.*Error|passed|failed|^FAILED" "$out/pytest.log" | head -40
fi
if (( $(left) > 60 )); then
  timeout $(( $(left) - 10 )) bash scripts/gpu_inplace_check.sh 2>&1 | grep -v "^build"
fi
echo "total ${SECONDS}s"
