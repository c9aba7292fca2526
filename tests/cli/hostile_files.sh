#!/usr/bin/env bash
# Hostile and careless inputs to compile/run (issue 17): .kiln files whose sizes, offsets, nesting,
# step order or output node are wrong, a .kiln from another version, a .pt2 with an absurd input
# dim, .npy shapes that wrap or do not parse, FIFOs, full and size-limited disks. Each must end
# with exit 2 and one line naming the problem; never a crash, a hang or a lost file.
# The files are generated here from good fixtures (kiln_file.py rewrites .kiln files).
# Usage: hostile_files.sh KILN DATA_DIR
set -u
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
fail=0
mlp="$data/mlp_dyn/export.pt2"
in="$data/mlp_dyn/input_0.npy"

# Two good programs: all ops run by PyTorch (weights in the .kiln itself), and one segment (a plan).
"$kiln" compile "$mlp" -o "$work/fb.kiln" --torch-executed-ops aten.linear.default >/dev/null 2>&1 || { echo "FAIL: compile"; exit 1; }
"$kiln" compile "$mlp" -o "$work/seg.kiln" >/dev/null 2>&1 || { echo "FAIL: compile"; exit 1; }

"$py" - "$cli_dir" "$work" "$mlp" <<'PY' || { echo "FAIL: could not generate files"; exit 1; }
import sys, json, zipfile, numpy as np
sys.path.insert(0, sys.argv[1])
from kiln_file import KilnFile
w, mlp = sys.argv[2], sys.argv[3]
def edit(src, name, f):
    k = KilnFile(f"{w}/{src}.kiln"); f(k); k.write(f"{w}/{name}.kiln")
def weight(k, name):
    return next(x for x in k.json["weights"] if x["name"] == name)

# Item 3: a weight whose byte size wraps to 0 (2^62 float32s), and one at an offset near 2^64;
# the same for a constant inside a plan.
edit("fb", "weight_wraps", lambda k: weight(k, "a.weight").update(dims=[2**62], size=0))
edit("fb", "weight_far", lambda k: weight(k, "a.weight").update(offset=2**64 - 64))
def plan_edit(f):
    def g(k):
        p = k.plan(0); f(p); k.put_plan(0, p)
    return g
edit("seg", "plan_weight_wraps", plan_edit(lambda p: p.layer("a.weight")["params"]["weights"].update(dims=[2**62], bytes=0)))
edit("seg", "plan_weight_far", plan_edit(lambda p: p.layer("a.weight")["params"]["weights"].update(offset=2**64 - 64)))

# Item 4: arguments nested 10^5 deep (objects: the dump of an unknown argument recursed) and 10^6
# deep (arrays), written as text since json.dumps itself would recurse; the same in a plan.
marker = "DEEP_VALUE"
for name, depth, open_, close in [("deep_object", 100000, '{"x": ', "}"), ("deep_array", 1000000, "[", "]")]:
    k = KilnFile(f"{w}/fb.kiln")
    k.node("gelu")["args"].append(marker)
    k.write(f"{w}/{name}.kiln", json.dumps(k.json).replace(json.dumps(marker), open_ * depth + "null" + close * depth))
k = KilnFile(f"{w}/seg.kiln"); p = k.plan(0)
p.json["layers"][0]["name"] = marker
k.put_plan(0, p, json.dumps(p.json).replace(json.dumps(marker), "[" * 1000000 + "]" * 1000000))
k.write(f"{w}/plan_deep.kiln")

# Step order, references, ranks, the output node.
def swap(k):
    s = k.json["steps"]; s[0], s[1] = s[1], s[0]
edit("fb", "steps_swapped", swap)
edit("fb", "no_output", lambda k: k.json.update(graph=[n for n in k.json["graph"] if n["kind"] != "output"]))
edit("seg", "segment_input_unknown", lambda k: k.json["segments"][0].update(inputs=["nowhere"]))
edit("seg", "segment_input_mismatch", lambda k: k.json["segments"][0].update(inputs=["x", "x"]))
edit("fb", "input_rank", lambda k: k.json["inputs"][0]["meta"].update(sizes=[1] * 100, strides=[1] * 100))

# Another version of kiln; a plan of another version.
def future(k): k.version = 99
edit("fb", "future", future)
def plan_future(p): p.version = 99
edit("seg", "plan_future", plan_edit(plan_future))

# Item 7: .npy shapes that wrap or do not parse.
def npy(path, shape, data=b""):
    h = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape
    h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
    open(path, "wb").write(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode() + data)
npy(f"{w}/wraps.npy", "(%d, 64)" % 2**58)
npy(f"{w}/wraps1.npy", "(%d,)" % 2**62)
npy(f"{w}/junk_dim.npy", "(2x, 64)", bytes(2 * 64 * 4))
npy(f"{w}/two_commas.npy", "(2,, 64)", bytes(2 * 64 * 4))
npy(f"{w}/no_comma.npy", "(2 64)", bytes(2 * 64 * 4))
np.save(f"{w}/big_in.npy", np.zeros((256, 64), np.float32))

# A .pt2 whose input has a dim of 2^40.
z = zipfile.ZipFile(mlp)
out = zipfile.ZipFile(f"{w}/huge_dim.pt2", "w", zipfile.ZIP_STORED)
for i in z.infolist():
    d = z.read(i.filename)
    if i.filename.endswith("models/model.json"):
        m = json.loads(d)
        m["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][1] = {"as_int": 2**40}
        d = json.dumps(m).encode()
    out.writestr(i.filename, d)
out.close()
PY

expect 0 "" -- "$kiln" run "$work/fb.kiln" --input "$in" --output-dir "$work/o"
expect 0 "" -- "$kiln" run "$work/seg.kiln" --input "$in" --output-dir "$work/o"
expect 2 "weight a.weight" -- "$kiln" run "$work/weight_wraps.kiln" --input "$in" --output-dir "$work/o"
expect 2 "weight a.weight" -- "$kiln" run "$work/weight_far.kiln" --input "$in" --output-dir "$work/o"
expect 2 "weights.*\(overflow\|larger\|byte count\)" -- "$kiln" run "$work/plan_weight_wraps.kiln" --input "$in" --output-dir "$work/o"
expect 2 "outside the weight blob" -- "$kiln" run "$work/plan_weight_far.kiln" --input "$in" --output-dir "$work/o"
expect 2 "nested" -- "$kiln" run "$work/deep_object.kiln" --input "$in" --output-dir "$work/o"
expect 2 "nested" -- "$kiln" run "$work/deep_array.kiln" --input "$in" --output-dir "$work/o"
expect 2 "nested" -- "$kiln" run "$work/plan_deep.kiln" --input "$in" --output-dir "$work/o"
expect 2 "nested" -- "$kiln" inspect "$work/deep_object.kiln"
expect 2 "before it is computed" -- "$kiln" run "$work/steps_swapped.kiln" --input "$in" --output-dir "$work/o"
expect 2 "no output node" -- "$kiln" run "$work/no_output.kiln" --input "$in" --output-dir "$work/o"
expect 2 "nowhere" -- "$kiln" run "$work/segment_input_unknown.kiln" --input "$in" --output-dir "$work/o"
expect 2 "_run_on_acc_0.*inputs" -- "$kiln" run "$work/segment_input_mismatch.kiln" --input "$in" --output-dir "$work/o"
expect 2 "rank 100" -- "$kiln" run "$work/input_rank.kiln" --input "$in" --output-dir "$work/o"
expect 2 "version 99.*recompile" -- "$kiln" run "$work/future.kiln" --input "$in" --output-dir "$work/o"
expect 2 "version 99.*recompile" -- "$kiln" run "$work/plan_future.kiln" --input "$in" --output-dir "$work/o"

expect 2 "wraps.npy: .*overflow" -- "$kiln" run "$work/fb.kiln" --input "$work/wraps.npy" --output-dir "$work/o"
expect 2 "wraps1.npy: .*overflow" -- "$kiln" run "$work/fb.kiln" --input "$work/wraps1.npy" --output-dir "$work/o"
expect 2 "bad dimension '2x'" -- "$kiln" run "$work/fb.kiln" --input "$work/junk_dim.npy" --output-dir "$work/o"
expect 2 "bad 'shape'" -- "$kiln" run "$work/fb.kiln" --input "$work/two_commas.npy" --output-dir "$work/o"
expect 2 "bad dimension '2 64'" -- "$kiln" run "$work/fb.kiln" --input "$work/no_comma.npy" --output-dir "$work/o"
expect 2 "huge_dim.pt2" -- "$kiln" compile "$work/huge_dim.pt2" -o "$work/huge.kiln"

# FIFOs as model or input: refused at once, not read (a reader would wait for a writer forever).
mkfifo "$work/fifo.kiln" "$work/fifo.npy"
expect 2 "fifo.kiln: not a regular file" -- "$kiln" run "$work/fifo.kiln" --input "$in" --output-dir "$work/o"
expect 2 "fifo.npy: not a regular file" -- "$kiln" run "$work/fb.kiln" --input "$work/fifo.npy" --output-dir "$work/o"
expect 2 "fifo.kiln: not a regular file" -- "$kiln" inspect "$work/fifo.kiln"
expect 2 "fifo.kiln: not a regular file" -- "$kiln" compile "$work/fifo.kiln" -o "$work/x.kiln"

# Writes: a full device reports its errno; a failed or killed write leaves the old file whole.
expect 2 "/dev/full: .*No space left on device" -- "$kiln" compile "$mlp" -o /dev/full
mkdir -p "$work/full"
ln -sf /dev/full "$work/full/output_0.npy"
expect 2 "output_0.npy: .*No space left on device" -- "$kiln" run "$work/fb.kiln" --input "$in" --output-dir "$work/full"
expect 2 "is a directory" -- "$kiln" compile "$mlp" -o "$work"

cp "$work/seg.kiln" "$work/keep.kiln"
before=$(md5sum <"$work/keep.kiln")
# A file-size limit makes the write fail (EFBIG) partway, as a full disk would...
expect 2 "keep.kiln: .*File too large" -- bash -c "trap '' XFSZ; ulimit -f 16; exec \"\$0\" \"\$@\"" \
  "$kiln" compile "$mlp" -o "$work/keep.kiln" --torch-executed-ops aten.linear.default
# ...and, with SIGXFSZ at its default, kills the process in the middle of the write.
bash -c "ulimit -f 16; exec \"\$0\" \"\$@\"" "$kiln" compile "$mlp" -o "$work/keep.kiln" \
  --torch-executed-ops aten.linear.default >/dev/null 2>&1
rc=$?
after=$(md5sum <"$work/keep.kiln")
if [ "$rc" -lt 128 ] || [ "$before" != "$after" ]; then
  echo "FAIL: a killed write (rc $rc) changed the old .kiln"; fail=1
else
  echo "ok   killed write (rc $rc) left the old .kiln intact"
fi
left=$(find "$work" -maxdepth 1 -name '.keep.kiln.*' | wc -l)
[ "$left" = 0 ] || echo "note: $left temporary file(s) left by the killed write"
expect 0 "" -- "$kiln" run "$work/keep.kiln" --input "$in" --output-dir "$work/o"

# The same for .npy outputs: an old output survives a failed write.
"$kiln" run "$work/fb.kiln" --input "$work/big_in.npy" --output-dir "$work/npyout" >/dev/null 2>&1
before=$(md5sum <"$work/npyout/output_0.npy")
expect 2 "output_0.npy: .*File too large" -- bash -c "trap '' XFSZ; ulimit -f 8; exec \"\$0\" \"\$@\"" \
  "$kiln" run "$work/fb.kiln" --input "$work/big_in.npy" --output-dir "$work/npyout"
after=$(md5sum <"$work/npyout/output_0.npy")
[ "$before" = "$after" ] || { echo "FAIL: a failed write changed the old output_0.npy"; fail=1; }
exit $fail
