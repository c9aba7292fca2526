#!/usr/bin/env bash
# The installed package, as a C++ user meets it: installs this build into a scratch prefix
# (cmake --install), builds examples/cpp_runtime against it as a project of its own
# (find_package(kiln), kiln::kiln), compiles examples/mlp_dyn.pt2 with the installed `kiln`, runs
# the example on the bundled input and compares its output with PyTorch's (1e-4 relative error).
# Usage: cpp_runtime.sh KILN DATA_DIR (KILN in <build>/bin: the build folder is its parent's parent).
set -u
kiln=$1
source "$(dirname "$0")/common.bash"
build=$(cd "$(dirname "$kiln")/.." && pwd)
root=$(cd "$cli_dir/../.." && pwd)
prefix=$work/prefix

step() {  # step LABEL command...: runs it quietly; on failure prints its log's tail and exits 1
  local label=$1
  shift
  if "$@" >"$work/log" 2>&1; then
    echo "ok   $label"
  else
    echo "FAIL $label: $*"
    tail -25 "$work/log" | sed 's/^/    /'
    exit 1
  fi
}

cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
# The example is built by the compiler and build type kiln was (a sanitized kiln needs clang's
# runtimes at the link), with Ninja where there is one.
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

step "install into a scratch prefix" cmake --install "$build" --prefix "$prefix"
for f in bin/kiln include/kiln/program/program.h; do
  [ -e "$prefix/$f" ] || { echo "FAIL not installed: $f"; exit 1; }
done
config=$(find "$prefix" -name kilnConfig.cmake | head -1)
[ -n "$config" ] || { echo "FAIL not installed: kilnConfig.cmake"; exit 1; }
echo "ok   package config: ${config#"$prefix"/}"

step "configure examples/cpp_runtime (find_package(kiln))" \
  cmake -S "$root/examples/cpp_runtime" -B "$work/app" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_COMPILER="$(cache CMAKE_CXX_COMPILER)" -DCMAKE_BUILD_TYPE="$(cache CMAKE_BUILD_TYPE)"
step "build examples/cpp_runtime" cmake --build "$work/app" -j 2
step "kiln compile examples/mlp_dyn.pt2 (installed kiln)" \
  "$prefix/bin/kiln" compile "$root/examples/mlp_dyn.pt2" -o "$work/mlp_dyn.kiln" --device cpu
step "run_kiln mlp_dyn.kiln" "$work/app/run_kiln" "$work/mlp_dyn.kiln" "$work/out" "$root/examples/mlp_dyn.input_0.npy"
sed 's/^/    /' "$work/log"
if msg=$($py "$cli_dir/npy_close.py" "$work/out/output_0.npy" "$root/examples/mlp_dyn.output_0.npy" 2>&1); then
  echo "ok   output_0 against PyTorch's: $msg"
else
  echo "FAIL output_0 against PyTorch's: $msg"
  exit 1
fi
