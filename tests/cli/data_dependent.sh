#!/usr/bin/env bash
# A valid program that uses a data-dependent size in arithmetic (issue 17 item 5), as torch.export
# writes `idx = x.nonzero(); idx.float().sum(0) * idx.shape[0]`: nonzero's row count is the unbacked
# symbol u0, read back by aten.sym_size.int and multiplied in. It compiled and then crashed
# (SIGSEGV: a segment's plan sized a buffer from u0, which nothing in it bound; with nonzero in
# PyTorch, "Expected Tensor but got Int" and then a dangling read of the size). Every partition
# must now run and give PyTorch's result; converted whole, the segment binds u0 to the count its
# nonzero computes. The .pt2 is written here from mlp_dyn's archive.
# Usage: data_dependent.sh KILN DATA_DIR
set -u
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
fail=0
"$py" - "$data/mlp_dyn/core_aten.pt2" "$work/nz.pt2" "$work/x.npy" "$work/nz_full.pt2" <<'PY' || { echo "FAIL: could not write the .pt2"; exit 1; }
import copy, json, sys, zipfile, numpy as np
src, dst, xpath, dst_full = sys.argv[1:5]
z = zipfile.ZipFile(src)
entry = next(i.filename for i in z.infolist() if i.filename.endswith("models/model.json"))
m = json.loads(z.read(entry))
g = m["graph_module"]["graph"]
def tm(dtype, sizes):
    strides, s = [], 1
    for d in reversed(sizes):
        strides.insert(0, {"as_int": s}); s *= d["as_int"] if "as_int" in d else 1
    return {"dtype": dtype, "sizes": sizes, "requires_grad": False, "device": {"type": "cpu", "index": None},
            "strides": strides, "storage_offset": {"as_int": 0}, "layout": 7}
I = lambda v: {"as_int": v}
T = lambda n: {"as_tensor": {"name": n}}
u0 = {"as_expr": {"expr_str": "Symbol('u0', integer=True)", "hint": None}}
def node(target, name, inputs, outputs):
    return {"target": "torch.ops.aten." + target, "name": name, "outputs": outputs, "metadata": {},
            "is_hop_single_tensor_return": None, "inputs": [{"name": k, "arg": v, "kind": 1} for k, v in inputs]}
g["inputs"] = [T("x")]
g["nodes"] = [  # FLOAT = 7, LONG = 5 in the .pt2 ScalarType enum
    node("nonzero.default", "nonzero", [("self", T("x"))], [T("nonzero")]),
    node("sym_size.int", "sym_size_int", [("self", T("nonzero")), ("dim", I(0))], [{"as_sym_int": {"as_name": "sym_size_int"}}]),
    node("_to_copy.default", "_to_copy", [("self", T("nonzero")), ("dtype", {"as_scalar_type": 7})], [T("_to_copy")]),
    node("sum.dim_IntList", "sum_1", [("self", T("_to_copy")), ("dim", {"as_ints": [0]})], [T("sum_1")]),
    node("mul.Tensor", "mul", [("self", T("sum_1")), ("other", {"as_sym_int": {"as_name": "sym_size_int"}})], [T("mul")]),
]
g["outputs"] = [T("mul")]
g["tensor_values"] = {"x": tm(7, [I(4), I(3)]), "nonzero": tm(5, [u0, I(2)]), "_to_copy": tm(7, [u0, I(2)]),
                      "sum_1": tm(7, [I(2)]), "mul": tm(7, [I(2)])}
g["sym_int_values"] = {"sym_size_int": u0}
g["sym_bool_values"] = {}
g["is_single_tensor_return"] = False
sig = m["graph_module"]["signature"]
sig["input_specs"] = [{"user_input": {"arg": T("x")}}]
sig["output_specs"] = [{"user_output": {"arg": T("mul")}}]
m["graph_module"]["module_call_graph"] = []
m["range_constraints"] = {"u0": {"min_val": 0, "max_val": 9223372036854775806}}
def write(path, model):
    out = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED)
    for i in z.infolist():
        if "data/weights/weight_" in i.filename: continue
        d = z.read(i.filename)
        if i.filename == entry: d = json.dumps(model).encode()
        if i.filename.endswith("model_weights_config.json"): d = b'{"config": {}}'
        out.writestr(i.filename, d)
    out.close()
write(dst, m)
# The count read by a creation op: (nonzero + ones([count, 2])).sum(0), the shape of full taken from
# the node's metadata [u0, 2] (zeros_like(x[mask]) and new_zeros(count, ...) take this path).
mf = copy.deepcopy(m)
gf = mf["graph_module"]["graph"]
gf["nodes"] = gf["nodes"][:3] + [
    node("full.default", "full", [("size", {"as_sym_ints": [{"as_name": "sym_size_int"}, I(2)]}),
                                  ("fill_value", {"as_float": 1.0}), ("dtype", {"as_scalar_type": 7})], [T("full")]),
    node("add.Tensor", "add", [("self", T("_to_copy")), ("other", T("full"))], [T("add")]),
    node("sum.dim_IntList", "sum_2", [("self", T("add")), ("dim", {"as_ints": [0]})], [T("sum_2")]),
]
gf["outputs"] = [T("sum_2")]
gf["tensor_values"].update({"full": tm(7, [u0, I(2)]), "add": tm(7, [u0, I(2)]), "sum_2": tm(7, [I(2)])})
mf["graph_module"]["signature"]["output_specs"] = [{"user_output": {"arg": T("sum_2")}}]
write(dst_full, mf)
np.save(xpath, np.array([[1, 0, 2], [0, 0, 3], [4, 0, 0], [0, 5, 0]], np.float32))
PY

# Without libtorch nothing but the all-segment partition can run: skip then.
if ! "$kiln" compile "$work/nz.pt2" -o "$work/probe.kiln" --torch-executed-ops aten.nonzero.default >/dev/null 2>"$work/err"; then
  if grep -q "without libtorch" "$work/err"; then echo "SKIP: kiln built without libtorch"; exit 0; fi
fi
# nonzero rows (0,0) (0,2) (1,2) (2,0) (3,1): column sums [6, 5], times 5 rows.
for opts in "--min-block-size 1" "--min-block-size 5" "--min-block-size 1 --torch-executed-ops aten.nonzero.default" \
            "--min-block-size 5 --torch-executed-ops aten.nonzero.default"; do
  rm -rf "$work/o"
  # shellcheck disable=SC2086
  if ! "$kiln" compile "$work/nz.pt2" -o "$work/nz.kiln" $opts >/dev/null 2>"$work/err"; then
    echo "FAIL compile $opts: $(grep error "$work/err")"; fail=1; continue
  fi
  if ! "$kiln" run "$work/nz.kiln" --input "$work/x.npy" --output-dir "$work/o" >/dev/null 2>"$work/err"; then
    echo "FAIL run $opts (rc $?): $(grep error "$work/err")"; fail=1; continue
  fi
  if "$py" -c "import numpy as np, sys; sys.exit(0 if np.load('$work/o/output_0.npy').tolist() == [30.0, 25.0] else 1)"; then
    echo "ok   $opts"
  else
    echo "FAIL $opts: got $("$py" -c "import numpy as np; print(np.load('$work/o/output_0.npy'))")"; fail=1
  fi
done
# The export's u0 is the count the converted nonzero computes: each program is one segment, also
# under require_full_compilation, and reads the count the plan computed.
for case in "nz 30.0 25.0" "nz_full 11.0 10.0"; do
  read -r prog a b <<< "$case"
  rm -rf "$work/o"
  if "$kiln" compile "$work/$prog.pt2" -o "$work/$prog.kiln" --min-block-size 1 --require-full-compilation >"$work/out" 2>"$work/err" &&
     "$kiln" run "$work/$prog.kiln" --input "$work/x.npy" --output-dir "$work/o" >/dev/null 2>>"$work/err" &&
     "$py" -c "import numpy as np, sys; sys.exit(0 if np.load('$work/o/output_0.npy').tolist() == [$a, $b] else 1)"; then
    echo "ok   $prog --require-full-compilation: one segment, [$a, $b]"
  else
    echo "FAIL $prog require-full-compilation: $(grep error "$work/err")"; fail=1
  fi
done
exit $fail
