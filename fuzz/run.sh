#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/CMakeLists.txt) with clang in their own build folder, makes
# their seed corpora from the test fixtures, and runs each for a bounded time. Used by `make fuzz`
# (long runs, corpus kept between runs) and by the CTest smoke run tests/cli/bad_input_fuzz.sh.
#
# usage: fuzz/run.sh [-b BUILD_DIR] [-s SECONDS_PER_TARGET] [-k] [TARGET...]
#   TARGET: pt2_fuzz kiln_fuzz npy_fuzz (default: all)
#   -k      keep the corpus: new inputs go to BUILD_DIR/fuzz-corpus/TARGET (make fuzz); without it
#           they go to a temporary folder (the smoke run)
# env: FUZZ_JOBS (build parallelism, default nproc), FUZZ_NICE (nice level for the runs, default 0)
# Exit: 0 all ran clean; 1 a finding (reproducers in BUILD_DIR/fuzz-artifacts, printed in base64)
# or a build failure; 77 clang or libFuzzer is not installed (CTest reports it as skipped).
set -u
src="$(cd "$(dirname "$0")/.." && pwd)"
bdir="$src/build-fuzz"; seconds=60; keep=0
while getopts "b:s:k" o; do
  case "$o" in b) bdir="$OPTARG" ;; s) seconds="$OPTARG" ;; k) keep=1 ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(pt2_fuzz kiln_fuzz npy_fuzz)
mkdir -p "$bdir"; bdir="$(cd "$bdir" && pwd)"

# libFuzzer ships in Debian's libclang-rt-14-dev, separately from clang: try a one-line fuzzer.
probe=$(mktemp -d); trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe/p.cpp"
if ! command -v clang++ >/dev/null || ! command -v clang >/dev/null ||
   ! clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" >/dev/null 2>&1; then
  echo "skip: clang++ with libFuzzer not found (apt-get install clang libclang-rt-14-dev)"; exit 77
fi

log="$bdir/fuzz-build.log"
if [ ! -f "$bdir/CMakeCache.txt" ]; then
  generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
  # The fuzz build needs neither tests nor the GPU, Python or libtorch parts; the CLI is built to
  # compile the .kiln seeds.
  if ! cmake -S "$src" -B "$bdir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
       -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DKILN_FUZZ=ON -DKILN_BUILD_TESTS=OFF \
       -DKILN_WITH_CUDA=OFF -DKILN_WITH_PYTHON=OFF -DKILN_WITH_TORCH=OFF >"$log" 2>&1; then
    echo "FAIL: configuring the fuzz build (see $log)"; tail -20 "$log"; exit 1
  fi
fi
if ! cmake --build "$bdir" --target "${targets[@]}" kiln -j "${FUZZ_JOBS:-$(nproc)}" >>"$log" 2>&1; then
  echo "FAIL: building the fuzzers (see $log)"; grep -A5 "error" "$log" | head -40; exit 1
fi

# Seed corpora, made once per build folder from tests/data: the small fixtures only (libFuzzer
# mutates small inputs much faster; the big models add no new structure).
data="$src/tests/data"
seeds="$bdir/fuzz-seeds"
small_pt2=(gelu_tanh/core_aten gelu_erf/export ops_mix/core_aten ops_mix/export mlp_dyn/core_aten
           convnet_small/core_aten causal_sdpa/core_aten)
make_seeds() {
  local t="$1" d="$seeds/$1"
  [ -d "$d" ] && return 0
  mkdir -p "$d.tmp"
  case "$t" in
    pt2_fuzz)
      for f in "${small_pt2[@]}"; do cp "$data/$f.pt2" "$d.tmp/${f//\//_}.pt2"; done ;;
    kiln_fuzz)
      # .kiln files compiled here: the format is this build's own, so stored ones would go stale.
      for f in "${small_pt2[@]}"; do
        "$bdir/bin/kiln" compile "$data/$f.pt2" -o "$d.tmp/${f//\//_}.kiln" --min-block-size 1 >>"$log" 2>&1 ||
          { echo "FAIL: kiln compile $f.pt2 for the seed corpus (see $log)"; return 1; }
      done ;;
    npy_fuzz)
      for f in "$data"/*/input_0.npy; do cp "$f" "$d.tmp/$(basename "$(dirname "$f")").npy"; done
      # Dtypes the fixtures lack (all float32): tiny hand-made files, header padded to 64 bytes.
      local descr name
      for descr in "<i8:(3,)" "|b1:(2, 2)" "<f2:()" "<i4:(0, 5)" "|u1:(4,)" "<f8:(1, 1, 1)"; do
        name="${descr%%:*}"; name="${name//[<|]/}"
        python3 - "$d.tmp/$name.npy" "${descr%%:*}" "${descr#*:}" <<'PY' || return 1
import math, struct, sys
path, descr, shape = sys.argv[1], sys.argv[2], sys.argv[3]
dims = [int(x) for x in shape.strip("()").split(",") if x.strip()]
header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
size = int(descr[2:]) * math.prod(dims)
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(i % 256 for i in range(size)))
PY
      done ;;
  esac
  mv "$d.tmp" "$d"
}

# Bounds on every run: per-input timeout, memory, and huge single allocations refused (new throws
# std::bad_alloc) instead of ending the run, so a target can tell an allowed refusal from a bug.
export ASAN_OPTIONS="allocator_may_return_null=1:max_allocation_size_mb=256:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
artifacts="$bdir/fuzz-artifacts"; mkdir -p "$artifacts"
status=0
for t in "${targets[@]}"; do
  make_seeds "$t" || exit 1
  if [ $keep = 1 ]; then work="$bdir/fuzz-corpus/$t"; mkdir -p "$work"; else work=$(mktemp -d); fi
  out="$bdir/fuzz-$t.log"
  : >"$out"  # also the marker that tells this run's reproducers from older ones
  nice -n "${FUZZ_NICE:-0}" "$bdir/bin/$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
    -malloc_limit_mb=512 -print_final_stats=1 -artifact_prefix="$artifacts/$t-" \
    "$work" "$seeds/$t" >"$out" 2>&1
  rc=$?
  [ $keep = 1 ] || rm -rf "$work"
  # "#123 DONE cov: 4567 ft: 8910 corp: 12/34Kb ..." and "stat::number_of_executed_units: 123"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [^ ]*' "$out" | tail -1)
  if [ $rc -ne 0 ]; then
    status=1
    echo "FAIL: $t found a problem (rc=$rc, log $out):"
    grep -m3 -E "ERROR|runtime error|unexpected exception|deadly signal" "$out"
    find "$artifacts" -name "$t-*" -newer "$out" -o -name "$t-*" -cnewer "$out" | sort -u | while read -r a; do
      echo "reproducer $a (base64):"; base64 -w0 "$a" | head -c 2000; echo
    done
  else
    echo "ok: $t ${seconds}s, ${execs:-?} executions, ${cov:-no coverage line}"
  fi
done
exit $status
