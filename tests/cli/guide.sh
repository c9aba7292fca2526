#!/usr/bin/env bash
# Every shell block of the user guide (docs/guide/*.md, ```sh fences) runs, in order, one shell per
# page, in a scratch folder holding the project's examples/ and tests/data, with the built `kiln` on
# PATH. A block right after `<!-- guide: skip -->` is not run; `<!-- guide: needs cuda -->` only with
# a GPU (nvidia-smi works).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(cd "$(dirname "${1:-$root/build/bin/kiln}")" && pwd)   # ctest passes the kiln binary
export PATH="$bin:$PATH" PYTHONPATH="$bin/../python${PYTHONPATH:+:$PYTHONPATH}"
have_gpu=0; nvidia-smi -L >/dev/null 2>&1 && have_gpu=1
for page in "$root"/docs/guide/*.md; do
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  ln -s "$root/examples" "$work/examples"; ln -s "$root/tests" "$work/tests"
  script="$work/page.sh"
  python3 - "$page" "$have_gpu" > "$script" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
print("set -euo pipefail")
for m in re.finditer(r"(?:<!-- guide: ([^\n]*?) -->\s*\n)?```sh\n(.*?)```", text, re.S):
    tag = (m.group(1) or "").strip()
    if tag == "skip" or (tag == "needs cuda" and sys.argv[2] != "1"):
        continue
    line = text[:m.start(2)].count("\n") + 1
    print(f"echo '--- {sys.argv[1].rsplit('/', 1)[-1]}:{line}' >&2")
    print(m.group(2))
PY
  if ! (cd "$work" && bash "$script" > "$work/log" 2>&1); then
    echo "FAIL: a shell block of ${page#$root/} failed:"; tail -30 "$work/log"; exit 1
  fi
  echo "ok: ${page#$root/} ($(grep -c '^--- ' "$work/log" || true) blocks)"
  rm -rf "$work"; trap - EXIT
done
