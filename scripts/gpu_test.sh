#!/usr/bin/env bash
# On the GPU machine (`make gpu-test`): configure a build with CUDA (+ cuDNN) and PyTorch's libtorch,
# build it with ninja and run the whole test suite, GPU tests included.
#   BUILD=build-gpu  build folder     JOBS=$(nproc)  parallel jobs     CTEST_ARGS=...  extra ctest args
#   TARGETS="a b"    build only these  CMAKE_FLAGS=... extra configure flags
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-$(nproc)}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# PyTorch's CMake config (libtorch) and the cuDNN that ships with its wheel.
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
CUDNN_DIR=$(python3 -c 'import nvidia.cudnn, os; print(list(nvidia.cudnn.__path__)[0])' 2>/dev/null || true)
extra=()
if [[ -n "$TORCH_PREFIX" ]]; then extra+=("-DCMAKE_PREFIX_PATH=$TORCH_PREFIX"); fi
if [[ -n "$CUDNN_DIR" && -d "$CUDNN_DIR/lib" ]]; then
  lib=$(ls "$CUDNN_DIR"/lib/libcudnn.so* 2>/dev/null | head -1 || true)
  if [[ -n "$lib" ]]; then
    extra+=("-DCUDNN_LIBRARY=$lib")
    export LD_LIBRARY_PATH="$CUDNN_DIR/lib:${LD_LIBRARY_PATH:-}"
  fi
  # Prefer the wheel's headers when the toolkit has none.
  if [[ ! -f /usr/local/cuda/include/cudnn.h && -f "$CUDNN_DIR/include/cudnn.h" ]]; then
    export CPATH="$CUDNN_DIR/include:${CPATH:-}"
  fi
elif [[ -f /usr/local/cuda/lib/libcudnn.so ]]; then
  extra+=("-DCUDNN_LIBRARY=/usr/local/cuda/lib/libcudnn.so")
fi
# The other CUDA libraries PyTorch's wheel brings (cuBLAS, NVRTC) for the test binaries' loader.
for pkg in cublas cuda_nvrtc cuda_runtime; do
  d=$(python3 -c "import nvidia.$pkg, os; print(list(nvidia.$pkg.__path__)[0])" 2>/dev/null || true)
  [[ -n "$d" && -d "$d/lib" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d/lib"
done

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_WITH_CUDA=ON "${extra[@]}" ${CMAKE_FLAGS:-}
grep -E "KILN_HAS_CUDA|CUDNN_LIBRARY" "$BUILD/CMakeCache.txt" || true
if [[ -n "${TARGETS:-}" ]]; then cmake --build "$BUILD" -j "$JOBS" --target $TARGETS; else cmake --build "$BUILD" -j "$JOBS"; fi
cd "$BUILD"
ctest --output-on-failure -j "$JOBS" ${CTEST_ARGS:-}
