#!/usr/bin/env bash
# kiln inspect prints every fixture: summary then graph, exit 0, nothing on stderr.
# usage: inspect_fixtures.sh <kiln> <tests/data>
set -u
kiln="$1"; data="$2"
fail=0; count=0
for f in "$data"/*/export.pt2 "$data"/*/core_aten.pt2; do
  [ -e "$f" ] || continue
  count=$((count + 1))
  out=$("$kiln" inspect "$f" 2>/tmp/kiln_inspect_err.$$); rc=$?
  if [ $rc -ne 0 ] || [ -s /tmp/kiln_inspect_err.$$ ]; then
    echo "FAIL: $f: rc=$rc stderr: $(cat /tmp/kiln_inspect_err.$$)"; fail=1; continue
  fi
  for want in "inputs (" "outputs (" "weights: " "ops (" "graph():" "return ("; do
    grep -qF "$want" <<<"$out" || { echo "FAIL: $f: output lacks '$want'"; fail=1; }
  done
done
rm -f /tmp/kiln_inspect_err.$$
[ $count -ge 2 ] || { echo "FAIL: no fixtures under $data"; exit 1; }

# mlp_dyn: the symbolic batch dim and its range.
out=$("$kiln" inspect "$data/mlp_dyn/export.pt2")
grep -qE '^  x: f32\[s[0-9]+, 64\]$' <<<"$out" || { echo "FAIL: mlp_dyn input line"; echo "$out" | head -20; fail=1; }
grep -qE '^  s[0-9]+: 1\.\.256$' <<<"$out" || { echo "FAIL: mlp_dyn symbol range"; echo "$out" | head -20; fail=1; }
grep -qF '%gelu : call_function[target=aten.gelu.default](args = (%linear,), kwargs = {approximate: tanh})' <<<"$out" \
  || { echo "FAIL: mlp_dyn gelu line"; fail=1; }
[ $fail -eq 0 ] && echo "ok: $count programs inspected"
exit $fail
