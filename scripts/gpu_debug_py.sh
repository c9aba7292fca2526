#!/usr/bin/env bash
# On the GPU machine: build the Python module with debug info and get a native backtrace of a
# crashing Python test/benchmark (gdb when present).
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
run() { if command -v gdb >/dev/null; then gdb -q -batch -ex run -ex bt -ex "info sharedlibrary gomp" --args "$@" 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -60; else "$@" 2>&1 | tail -40; fi; }
echo "=== pytest"; run python3 -X faulthandler -m pytest -x -q tests/python 
echo "=== bench"; run python3 -X faulthandler bench/gpu_compare.py --models resnet50,bert-base --batches 1 --modes "" --iters 10
