#!/usr/bin/env bash
# On the GPU machine: build the Python module with debug info and get a native backtrace of a
# crashing Python test/benchmark: KILN_CRASH_TRACE=1 makes the module print its native stack, and
# the frames inside _kiln are resolved to functions and lines with addr2line.
set -uo pipefail
cd "$(dirname "$0")/.."
export CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR=$(python3 -m pybind11 --cmakedir) -DPython3_EXECUTABLE=$(command -v python3)"
export TARGETS="_kiln kiln" CTEST_ARGS="-R NONE_SELECTED"
bash scripts/gpu_test.sh > "${OUT:-/tmp}/build.log" 2>&1; echo "build exit $?"; tail -3 "${OUT:-/tmp}/build.log"
for pkg in cudnn cublas cuda_nvrtc cuda_runtime; do
  d=$(python3 -c "import nvidia.$pkg; print(list(nvidia.$pkg.__path__)[0])" 2>/dev/null || true)
  [[ -n "$d" && -d "$d/lib" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d/lib"
done
export PYTHONPATH=build-gpu/python
export KILN_CRASH_TRACE=1
resolve() {  # "<module>(+0xOFF)[...]" lines of _kiln -> function and source line
  while IFS= read -r line; do
    echo "$line"
    if [[ "$line" =~ ^(.*_kiln[^\(]*\.so)\(\+(0x[0-9a-f]+)\) ]]; then
      addr2line -Cfpe "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" | sed 's/^/    -> /'
    fi
  done
}
run() { "$@" 2>&1 | resolve | tail -80; }
echo "=== pytest"; run python3 -X faulthandler -m pytest -x -q tests/python 
echo "=== bench"; run python3 -X faulthandler bench/gpu_compare.py --models resnet50,bert-base --batches 1 --modes "" --iters 10
