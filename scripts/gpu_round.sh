#!/usr/bin/env bash
# One device call that does what a short GPU lease allows, each step time-boxed against the call's
# limit (CALL_LIMIT, default 585 s), in this order; outputs under $OUT:
#   build       the CLI and the Python module (gpu_session.sh; FIXTURES=1 FIXTURES_ONLY=a,b exports
#               those fixtures beside the build, into $OUT/fixtures.tar.gz)
#   PROBE       model names: bench/memory_probe.py at PROBE_BATCH (default 1) with KILN_LOG=debug
#   PYTEST_ARGS the Python tests on CUDA (default tests/python; empty skips), RESERVE s kept for the rest
#   INPLACE=1   the bf16 fixtures under three plans (gpu_inplace_check.sh); INPLACE_BISECT=model: the
#               first block where the in-place residual rule changes that model's bf16 result
#   ROOFLINE=s  bench/kernel_roofline.py (ROOFLINE_ARGS) for that long
#   BUILDTIME_ARGS  bench/build_time.py (default resnet50,efficientnet_b0 at b32; empty skips)
#   SUITE_MODELS    suite rows through both entry paths (SUITE_BATCHES, default both; SUITE_ROUNDS, default 2)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
limit=${CALL_LIMIT:-585}
left() { echo $(( limit - SECONDS )); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
STAGES=build BUILD_TYPE=Release TARGETS="kiln _kiln" bash scripts/gpu_session.sh > "$out/build.txt" 2>&1
echo "build done at ${SECONDS}s: $(ls build-gpu/bin/kiln build-gpu/python/kiln/_kiln*.so 2>&1 | tr '\n' ' ')"
grep -E "error|FAILED" "$out/build.txt" | head -5; [[ -f "$out/fixtures.log" ]] && tail -3 "$out/fixtures.log"
# The build's longest steps (what bounds it on 16 cores).
awk 'NR>1 {print $2-$1, $4}' build-gpu/.ninja_log 2>/dev/null | sort -rn | head -4 | awk '{printf "  %.0f s %s\n", $1/1000, $2}'
for pkg in cudnn cublas cuda_nvrtc cuda_runtime; do
  d=$(python3 -c "import nvidia.$pkg; print(list(nvidia.$pkg.__path__)[0])" 2>/dev/null || true)
  [[ -n "$d" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d/lib"
done
export PYTHONPATH=build-gpu/python
export KILN_COMMIT=${KILN_COMMIT:-$(cat .commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || true)}
if [[ -n "${PROBE:-}" ]]; then
  KILN_LOG=debug timeout 120 python3 bench/memory_probe.py --models "$PROBE" --batch ${PROBE_BATCH:-1} \
    > "$out/probe.md" 2> "$out/probe.err"
  echo "probe rc $? at ${SECONDS}s"; cat "$out/probe.md"; grep -E "resetting the per-thread stack" "$out/probe.err" | tail -8
fi
t=$(( $(left) - ${RESERVE:-170} ))
if (( t > 30 )) && [[ "${PYTEST_ARGS-x}" != "" ]]; then
  KILN_CRASH_TRACE=1 timeout $t python3 -X faulthandler -m pytest -q -rf --tb=short ${PYTEST_ARGS:-tests/python} \
    > "$out/pytest.log" 2>&1
  echo "pytest rc $? at ${SECONDS}s"; grep -E "^E |passed|failed|^FAILED|^ERROR" "$out/pytest.log" | head -40
fi
if [[ -n "${INPLACE:-}" ]] && (( $(left) > 60 )); then
  timeout $(( $(left) - 10 )) bash scripts/gpu_inplace_check.sh 2>&1 | grep -v "^build"
fi
if [[ -n "${INPLACE_BISECT:-}" ]] && (( $(left) > 60 )); then
  timeout $(( $(left) - 10 )) python3 bench/inplace_bisect.py --model "$INPLACE_BISECT" --dtype bf16 2>&1 | grep -v Warning
fi
if [[ -n "${ROOFLINE:-}" ]]; then
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
if [[ -n "${SUITE_MODELS:-}" ]] && (( t > 60 )); then
  timeout $t python3 bench/gpu_compare.py --kiln-bin build-gpu/bin/kiln --models "$SUITE_MODELS" --paths py,cli \
    --batches ${SUITE_BATCHES:-both} --rounds ${SUITE_ROUNDS:-2} --deadline $(( t - 10 )) --json "$out/suite.json" \
    > "$out/suite.md" 2> "$out/suite.err"
  echo "suite rc $? at ${SECONDS}s"; grep -E "^\||^- " "$out/suite.md"; grep -E "^\[suite\]|FAILED" "$out/suite.err" | tail -8
fi
echo "total ${SECONDS}s"
