#!/usr/bin/env bash
# On the GPU machine, one call that does a whole round of work, each stage time-boxed so a
# limited run still reports: build (RelWithDebInfo: native stacks resolve), the test suite, the
# Python tests with native crash traces, a per-layer profile of chosen models, the benchmark table
# (stage `bench`: bench/gpu_compare.py through the CLI, BENCH_ARGS passed on), the GPU suite (stage
# `suite`, below), and (FIXTURES=1) a re-export of tests/data packed as $OUT/fixtures.tar.gz
# (FIXTURES_ONLY=a,b: those alone).
#   PROFILE_ARGS="--models gpt2 --batches 32"   what to profile ('' skips)   STAGES="build test py profile"
#   CTEST_FILTER=regex: the tests stage runs those alone. Stage `buildtime`: bench/build_time.py
#   (BUILDTIME_ARGS), kiln's build time with an empty and a filled timing cache.
# Stage `suite`: bench/gpu_compare.py's 16 models, both kiln entry paths, in parts that fit one device
# call (10 min): SUITE_PART="K/N" (default 1/6; "1/6,2/6" runs two in turn), SUITE_ARGS passed on
# (e.g. "--batches large", "--paths py", "--max-autotune"). It stops starting models when the call's
# time (CALL_LIMIT, default 585 s, counted from this script's start) runs short, and says which to rerun.
# Writes $OUT/suite_KofN.json (raw results; bench/merge_results.py makes one table of all parts) and
# suite_KofN.err (progress); the part's table goes to stdout. Stage `trace`: bench/kernel_trace.py with
# TRACE_ARGS (default "--models llama --batch 8 --compare tc") into $OUT/trace.txt.
# Stage `frontends`: bench/frontends.py on CUDA (a log-mel spectrogram, an antialiased preprocessing
# pipeline) with FRONTENDS_ARGS. Stage `roofline`: bench/kernel_roofline.py (ROOFLINE_ARGS), one-op
# modules against the copy bandwidth and matrix rate measured in the same run.
# TARGETS="kiln _kiln" builds only the CLI and the Python module (what the suite, buildtime, trace,
# frontends and py stages run), not the C++ test binaries: a shorter build where the call runs no ctest.
# Build first, in a call of its own:
#   STAGES=build bash scripts/gpu_session.sh;  then per call: STAGES=suite SUITE_PART=1/6 bash scripts/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
STAGES=${STAGES:-build test py profile}
PROFILE_ARGS=${PROFILE_ARGS-"--models gpt2,resnet50 --batches 32"}
has() { [[ " $STAGES " == *" $1 "* ]]; }
stamp() { echo "[$(date +%T)] $*"; }
for pkg in cudnn cublas cuda_nvrtc cuda_runtime; do
  d=$(python3 -c "import nvidia.$pkg; print(list(nvidia.$pkg.__path__)[0])" 2>/dev/null || true)
  [[ -n "$d" && -d "$d/lib" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d/lib"
done
# Device code for the lent card alone: sm_90 (the default build adds compute_80 PTX, a third more nvcc time).
export CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-90-real} -Dpybind11_DIR=$(python3 -m pybind11 --cmakedir) -DPython3_EXECUTABLE=$(command -v python3) ${CMAKE_FLAGS:-}"
if [[ "${FIXTURES:-}" == 1 ]]; then
  stamp fixtures; (timeout 300 python3 scripts/make_fixtures.py --out "$out/data" ${FIXTURES_ONLY:+--only "$FIXTURES_ONLY"} > "$out/fixtures.log" 2>&1;
    tar -C "$out" -czf "$out/fixtures.tar.gz" data && rm -rf "$out/data") &
fi
if has build; then
  stamp build; CTEST_ARGS="-R NONE_SELECTED" timeout 330 bash scripts/gpu_test.sh > "$out/build.log" 2>&1
  echo "build exit $?"; grep -E "error|FAILED" "$out/build.log" | head -20
fi
if has test; then
  stamp test; (cd build-gpu && timeout ${TEST_TIMEOUT:-200} ctest -j 8 -E python_pytest ${CTEST_FILTER:+-R "$CTEST_FILTER"} --output-on-failure > "$out/ctest.log" 2>&1)
  grep -E "tests passed|tests failed|\(Failed\)|\(SEGFAULT\)|Timeout|Not Run" "$out/ctest.log" | tail -25
fi
resolve() {  # frames inside _kiln -> function and source line
  while IFS= read -r line; do
    echo "$line"
    if [[ "$line" =~ ^(.*_kiln[^\(]*\.so)\(\+(0x[0-9a-f]+)\) ]]; then
      addr2line -Cfpe "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" | sed 's/^/    -> /'
    fi
  done
}
if has py; then
  stamp pytest
  PYTHONPATH=build-gpu/python KILN_CRASH_TRACE=1 timeout 200 python3 -X faulthandler -m pytest -q ${PYTEST_ARGS:-} tests/python 2>&1 | resolve > "$out/pytest.log"
  tail -40 "$out/pytest.log"
fi
if has profile && [[ -n "$PROFILE_ARGS" ]]; then
  stamp profile
  PYTHONPATH=build-gpu/python timeout ${PROFILE_TIMEOUT:-240} python3 bench/gpu_compare.py --cli build-gpu/bin/kiln --profile --modes "" --iters 20 --rounds 1 --cli-rounds 1 $PROFILE_ARGS > "$out/profile.log" 2>&1
  grep -vE "^\s*$" "$out/profile.log" | tail -120
fi
if has bench; then
  stamp bench
  PYTHONPATH=build-gpu/python timeout ${BENCH_TIMEOUT:-420} python3 bench/gpu_compare.py --cli build-gpu/bin/kiln \
    --deadline $(( ${BENCH_TIMEOUT:-420} - 20 )) ${BENCH_ARGS:---models resnet50,bert-base,vit-b16,gpt2} > "$out/bench.md" 2> "$out/bench.err"
  grep -E "^\|" "$out/bench.md"; tail -3 "$out/bench.err"
fi
if has buildtime; then  # kiln.compile + first call, with an empty and with a filled timing cache
  stamp buildtime
  PYTHONPATH=build-gpu/python timeout ${BUILDTIME_TIMEOUT:-240} python3 bench/build_time.py ${BUILDTIME_ARGS:-} \
    > "$out/buildtime.md" 2> "$out/buildtime.err"
  cat "$out/buildtime.md"; tail -5 "$out/buildtime.err"
fi
if has trace; then  # which kernels a model spends its time in, kiln beside torch.compile
  stamp trace
  PYTHONPATH=build-gpu/python timeout ${TRACE_TIMEOUT:-200} python3 bench/kernel_trace.py \
    ${TRACE_ARGS:---models llama --batch 8 --compare tc} > "$out/trace.txt" 2>&1
  grep -viE "warn" "$out/trace.txt" | tail -${TRACE_LINES:-80}
fi
if has roofline; then  # kiln's kernels against the card's measured copy bandwidth and matrix rate
  stamp roofline
  PYTHONPATH=build-gpu/python timeout ${ROOFLINE_TIMEOUT:-240} python3 bench/kernel_roofline.py \
    --deadline $(( ${ROOFLINE_TIMEOUT:-240} - 40 )) ${ROOFLINE_ARGS:-} > "$out/roofline.md" 2> "$out/roofline.err"
  cat "$out/roofline.md"; tail -3 "$out/roofline.err"
fi
if has frontends; then  # spectrogram and preprocessing front ends, kiln beside eager (bench/frontends.py)
  stamp frontends
  PYTHONPATH=build-gpu/python timeout ${FRONTENDS_TIMEOUT:-150} python3 bench/frontends.py --device cuda \
    ${FRONTENDS_ARGS:-} 2> "$out/frontends.err"
  tail -3 "$out/frontends.err"
fi
if has suite; then
  # A snapshot without git history (git archive) names its commit in .commit.
  export KILN_COMMIT=${KILN_COMMIT:-$(cat .commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || true)}
  SUITE_PART=${SUITE_PART:-1/6}
  for part in ${SUITE_PART//,/ }; do
    tag=${part//\//of}
    left=$(( ${CALL_LIMIT:-585} - SECONDS - 15 ))
    if (( left < 90 )); then echo "suite part $part: ${left}s left in this call, not started"; continue; fi
    stamp "suite part $part (${left}s)"
    PYTHONPATH=build-gpu/python timeout $(( left + 10 )) python3 bench/gpu_compare.py --kiln-bin build-gpu/bin/kiln \
      --part "$part" --deadline "$left" --json "$out/suite_$tag.json" ${SUITE_ARGS:-} > "$out/suite_$tag.md" 2> "$out/suite_$tag.err"
    echo "suite part $part exit $?"
    grep -E "^\||^- " "$out/suite_$tag.md"; grep -E "^\[suite\]|FAILED" "$out/suite_$tag.err" | tail -30
    rm -f "$out/suite_$tag.md"  # the table is above and in the JSON; keeps $OUT under the 8 files the device tool returns
  done
fi
wait
stamp done
