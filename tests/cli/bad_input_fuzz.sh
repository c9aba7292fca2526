#!/usr/bin/env bash
# A short libFuzzer run of the .pt2 reader (fuzz/pt2_fuzz.cpp): configures and builds the fuzzer
# with clang in its own build folder next to this build, seeds it with the small fixtures, and
# runs it for a bounded time. Skipped (exit 0 with a note) where clang++ is not installed.
# usage: bad_input_fuzz.sh <kiln> <tests/data>   (env KILN_FUZZ_SECONDS, default 20)
set -u
kiln="$1"; data="$2"
seconds="${KILN_FUZZ_SECONDS:-20}"
src=$(cd "$data/../.." && pwd)
if ! command -v clang++ >/dev/null || ! command -v clang >/dev/null; then
  echo "skip: clang++ not found (apt-get install clang) - the fuzz run needs libFuzzer"; exit 0
fi
bdir="$(cd "$(dirname "$kiln")/.." && pwd)/fuzz-build"
log="$bdir.log"
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
if ! cmake -S "$src" -B "$bdir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DKILN_FUZZ=ON -DKILN_BUILD_TESTS=OFF \
     -DKILN_WITH_CUDA=OFF -DKILN_WITH_PYTHON=OFF -DKILN_WITH_TORCH=OFF >"$log" 2>&1; then
  echo "FAIL: configuring the fuzzer (see $log)"; tail -20 "$log"; exit 1
fi
if ! cmake --build "$bdir" --target pt2_fuzz -j "$(nproc)" >>"$log" 2>&1; then
  echo "FAIL: building the fuzzer (see $log)"; tail -30 "$log"; exit 1
fi

corpus=$(mktemp -d); trap 'rm -rf "$corpus"' EXIT
for f in "$data"/gelu_tanh/*.pt2 "$data"/gelu_erf/export.pt2 "$data"/mlp_dyn/*.pt2 "$data"/convnet_small/core_aten.pt2; do
  [ -e "$f" ] && cp "$f" "$corpus/$(basename "$(dirname "$f")")_$(basename "$f")"
done
cd "$corpus"  # crash-* artifacts land here; they are printed below before the folder goes
"$bdir/bin/pt2_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -print_final_stats=1 "$corpus" >fuzz.log 2>&1
rc=$?
tail -15 fuzz.log
if [ $rc -ne 0 ]; then
  echo "FAIL: pt2_fuzz found a problem (rc=$rc); reproducer(s):"
  for a in crash-* leak-* timeout-* oom-*; do [ -e "$a" ] && { echo "$a:"; base64 -w0 "$a" | head -c 2000; echo; }; done
  exit 1
fi
echo "ok: fuzzed the .pt2 reader for ${seconds}s"
