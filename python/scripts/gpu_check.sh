#!/usr/bin/env bash
# On the GPU machine: build only the Python module (CUDA on) and run the Python tests and the
# tutorial port on the GPU. Environment setup as scripts/gpu_test.sh does it.
#   BUILD=build-gpu-py  JOBS=$(nproc)  PYTEST_ARGS=...
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-gpu-py}
JOBS=${JOBS:-$(nproc)}
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
CUDNN_DIR=$(python3 -c 'import nvidia.cudnn; print(list(nvidia.cudnn.__path__)[0])' 2>/dev/null || true)
extra=("-DCMAKE_PREFIX_PATH=$TORCH_PREFIX" "-DPython3_EXECUTABLE=$(command -v python3)")
if [[ -n "$CUDNN_DIR" && -d "$CUDNN_DIR/lib" ]]; then
  lib=$(ls "$CUDNN_DIR"/lib/libcudnn.so* 2>/dev/null | head -1 || true)
  [[ -n "$lib" ]] && extra+=("-DCUDNN_LIBRARY=$lib")
  [[ ! -f /usr/local/cuda/include/cudnn.h && -f "$CUDNN_DIR/include/cudnn.h" ]] && export CPATH="$CUDNN_DIR/include:${CPATH:-}"
fi
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_WITH_CUDA=ON -DKILN_BUILD_TESTS=OFF \
  "${extra[@]}" > "$BUILD.configure.log" 2>&1 || { tail -30 "$BUILD.configure.log"; exit 1; }
grep -E "kiln:" "$BUILD.configure.log" || true
cmake --build "$BUILD" -j "$JOBS" --target _kiln 2>&1 | grep -E "error|FAILED|warning: unused" | head -40 || true
test -f "$BUILD"/python/kiln/_kiln*.so
export PYTHONPATH="$PWD/$BUILD/python"
python3 -c "import torch, kiln; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'kiln cuda', kiln._kiln.cuda_available())"
python3 examples/converter_overloading.py
python3 -m pytest -q -p no:cacheprovider tests/python ${PYTEST_ARGS:-}
