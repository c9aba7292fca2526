#!/usr/bin/env bash
# Bad input to `kiln inspect`: exit code 2 and exactly one line on stderr, `kiln: error: ...`,
# naming the problem. The malformed files are made here from a good fixture.
# usage: bad_input.sh <kiln> <tests/data>
set -u
kiln="$1"; data="$2"
good="$data/mlp_dyn/export.pt2"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0

# expect <file> <substring of the message>
expect() {
  "$kiln" inspect "$1" >/dev/null 2>"$tmp/err"; rc=$?
  lines=$(wc -l <"$tmp/err")
  if [ $rc -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -q '^kiln: error: ' "$tmp/err" || ! grep -qF -- "$2" "$tmp/err"; then
    echo "FAIL: $1 (want '$2'): rc=$rc lines=$lines stderr: $(head -c 400 "$tmp/err")"; fail=1
  else
    echo "ok: $(cat "$tmp/err")"
  fi
}

printf 'not a zip at all\n' >"$tmp/text.pt2";          expect "$tmp/text.pt2" "not a zip"
: >"$tmp/empty.pt2";                                    expect "$tmp/empty.pt2" "not a zip"
expect "$tmp/does_not_exist.pt2" "cannot open"
expect "$tmp" "not a regular file"
size=$(stat -c %s "$good")
for frac in 1 3 5 7 9 11 13 15; do
  head -c $((size * frac / 16)) "$good" >"$tmp/trunc_$frac.pt2"; expect "$tmp/trunc_$frac.pt2" "$tmp/trunc_$frac.pt2"
done
head -c $((size - 10)) "$good" >"$tmp/trunc_tail.pt2";  expect "$tmp/trunc_tail.pt2" "trunc_tail.pt2: "
head -c 4096 /dev/urandom >"$tmp/random.pt2";           expect "$tmp/random.pt2" "kiln: error"

# Archive-level edits need a zip writer: Debian's python3 has one (skipped where absent).
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3 || true)
if [ -n "$PY" ]; then
  "$PY" - "$good" "$tmp" <<'PYEOF' || { echo "FAIL: could not generate archives"; fail=1; }
import io, json, sys, zipfile
good, tmp = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(good)
def write(name, edit_model=None, drop=None, replace=None):
    w = zipfile.ZipFile(f"{tmp}/{name}.pt2", "w", zipfile.ZIP_STORED)
    for i in z.infolist():
        d = z.read(i.filename)
        if drop and i.filename.endswith(drop):
            continue
        if replace and i.filename.endswith(replace[0]):
            d = replace[1]
        if edit_model and i.filename.endswith("models/model.json"):
            m = json.loads(d); edit_model(m); d = json.dumps(m).encode()
        w.writestr(i.filename, d)
    w.close()
def node(m, name):
    return next(n for n in m["graph_module"]["graph"]["nodes"] if n["name"] == name)
write("bad_json", replace=("models/model.json", b'{"graph_module": [1,'))
write("no_model", drop="models/model.json")
write("major9", lambda m: m["schema_version"].update(major=9))
write("bad_tag", lambda m: node(m, "gelu")["inputs"][1].update(arg={"as_bogus": 1}))
write("bad_dtype", lambda m: m["graph_module"]["graph"]["tensor_values"]["gelu"].update(dtype=99))
write("undefined", lambda m: node(m, "gelu")["inputs"][0]["arg"]["as_tensor"].update(name="nope"))
def swap(m):
    n = m["graph_module"]["graph"]["nodes"]; n[0], n[1] = n[1], n[0]
write("cycle", swap)
write("short_weight", replace=("data/weights/weight_0", b"\0" * 100))
def huge(m):
    tv = m["graph_module"]["graph"]["tensor_values"]["x"]
    tv["sizes"][1] = {"as_int": 2**64 - 1}
write("overflow", huge)
def mutation(m):
    m["graph_module"]["signature"]["output_specs"][0] = {
        "buffer_mutation": {"arg": {"name": "softmax"}, "buffer_name": "bn.running_mean"}}
write("buffer_mutation", mutation)
w = zipfile.ZipFile(f"{tmp}/old.pt2", "w"); w.writestr("old/serialized_exported_program.json", "{}"); w.close()
w = zipfile.ZipFile(f"{tmp}/deflated.pt2", "w", zipfile.ZIP_DEFLATED)
for i in z.infolist(): w.writestr(i.filename, z.read(i.filename))
w.close()
PYEOF
  expect "$tmp/bad_json.pt2" "invalid JSON"
  expect "$tmp/no_model.pt2" "no models/model.json"
  expect "$tmp/major9.pt2" "schema version 9"
  expect "$tmp/bad_tag.pt2" "unknown argument tag 'as_bogus'"
  expect "$tmp/bad_dtype.pt2" "unknown ScalarType 99"
  expect "$tmp/undefined.pt2" "refers to 'nope'"
  expect "$tmp/cycle.pt2" "not yet defined"
  expect "$tmp/short_weight.pt2" "but the file holds 100"
  expect "$tmp/overflow.pt2" "does not fit in 64 bits"
  expect "$tmp/buffer_mutation.pt2" "mutates buffer"
  expect "$tmp/old.pt2" "before 2.8"
  expect "$tmp/deflated.pt2" "compressed"
else
  echo "note: no python3; archive-level cases are covered by test_frontend"
fi
exit $fail
