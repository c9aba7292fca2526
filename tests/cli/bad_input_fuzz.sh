#!/usr/bin/env bash
# A short libFuzzer run of every fuzz target (fuzz/: the .pt2 reader, the .kiln loader and a
# bounded run of what it loads, the .npy reader) through fuzz/run.sh: it configures and builds the
# fuzzers with clang (ASan + UBSan) in their own folder next to this build, seeds them from the
# fixtures, and runs each for a few seconds. Exit 77 (CTest: skipped) where clang or libFuzzer is
# not installed. `make fuzz` runs the same targets for longer.
# usage: bad_input_fuzz.sh <kiln> <tests/data>   (env KILN_FUZZ_SECONDS per target, default 5)
set -u
kiln="$1"; data="$2"
src=$(cd "$data/../.." && pwd)
bdir="$(cd "$(dirname "$kiln")/.." && pwd)/fuzz-build"
exec "$src/fuzz/run.sh" -b "$bdir" -s "${KILN_FUZZ_SECONDS:-5}"
