#!/usr/bin/env bash
# On the GPU machine: build kiln with CUDA, libtorch and the Python module, run the GPU test suite,
# then bench/gpu_compare.py. Logs go to $OUT (or /tmp) so a time-limited run still reports.
#   BENCH_ARGS="--models resnet50 --batches small"   passed to gpu_compare.py (default: all 16 models, both
#                                                    kiln paths; more than one device call holds -- see
#                                                    gpu_session.sh's suite stage for parts)
#   SKIP_TESTS=1                                 build and bench only
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
export CMAKE_FLAGS="${CMAKE_FLAGS:-} -Dpybind11_DIR=$(python3 -m pybind11 --cmakedir 2>/dev/null) -DPython3_EXECUTABLE=$(command -v python3)"
if [[ -n "${SKIP_TESTS:-}" ]]; then export CTEST_ARGS="-R NONE_SELECTED"; fi
time bash scripts/gpu_test.sh > "$out/gpu_test.log" 2>&1
echo "gpu_test.sh exit $?"; grep -E "tests passed|tests failed|Failed|\*\*\*" "$out/gpu_test.log" | tail -30
for pkg in cudnn cublas cuda_nvrtc cuda_runtime; do
  d=$(python3 -c "import nvidia.$pkg; print(list(nvidia.$pkg.__path__)[0])" 2>/dev/null || true)
  [[ -n "$d" && -d "$d/lib" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d/lib"
done
PYTHONPATH=${BUILD:-build-gpu}/python eval python3 bench/gpu_compare.py --kiln-bin ${BUILD:-build-gpu}/bin/kiln --json "$out/bench.json" ${BENCH_ARGS:-} 2> "$out/bench.err" | tee "$out/bench.md"
tail -20 "$out/bench.err"
