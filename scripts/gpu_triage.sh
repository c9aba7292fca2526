#!/usr/bin/env bash
# One device call for what the last GPU runs left unexplained, each step time-boxed (CALL_LIMIT,
# default 585 s): build the CLI and the Python module; a model's device memory (PROBE, PROBE_BATCH:
# bench/memory_probe.py with KILN_LOG=debug, the stack-reset lines kept); the pytest files in
# PYTEST_ARGS; with INPLACE=1 the bf16 fixtures under the three plans of gpu_inplace_check.sh;
# suite rows for SUITE_MODELS (bench/gpu_compare.py, both entry paths) in the time left. Outputs under $OUT.
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
if [[ -n "${INPLACE:-}" ]] && (( $(left) > 60 )); then  # INPLACE=1: the bf16 fixtures under three plans
  timeout $(( $(left) - 10 )) bash scripts/gpu_inplace_check.sh 2>&1 | grep -v "^build"
fi
t=$(( $(left) - 5 ))
if [[ -n "${SUITE_MODELS:-}" ]] && (( t > 60 )); then  # suite rows (both entry paths) in the time left
  KILN_COMMIT=${KILN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || cat .commit 2>/dev/null)} \
  timeout $t python3 bench/gpu_compare.py --kiln-bin build-gpu/bin/kiln --models "$SUITE_MODELS" --paths py,cli \
    --rounds ${SUITE_ROUNDS:-2} --deadline $(( t - 10 )) --json "$out/suite.json" > "$out/suite.md" 2> "$out/suite.err"
  echo "suite rc $? at ${SECONDS}s"; grep -E "^\||^- " "$out/suite.md"; grep -E "^\[suite\]|FAILED" "$out/suite.err" | tail -8
fi
echo "total ${SECONDS}s"
