#!/usr/bin/env python3
"""Merges the GPU suite's per-part JSON files (bench/gpu_compare.py --json) into one markdown table with the
geomean line, for docs/PERFORMANCE.md. A row (model, batch) found in several files is taken from the last
file that has it complete (status ok), else the last one. No torch needed.

    python3 bench/merge_results.py suite_1.json suite_2.json ... [--md OUT.md] [--json MERGED.json]
"""
import argparse
import json
import sys

import suite_table


def merge(docs):
    """[(meta, rows)] -> (meta, rows)."""
    by_key, order, metas = {}, [], []
    for meta, rows in docs:
        metas.append(meta)
        for r in rows:
            key = (r["model"], r.get("batch"))
            if key not in by_key:
                order.append(key)
            old = by_key.get(key)
            if old is None or r.get("status", "ok") == "ok" or old.get("status", "ok") != "ok":
                by_key[key] = r
    meta = {}
    for k in ("device", "torch", "torchvision", "transformers", "cuda", "kiln_commit"):
        vals = list(dict.fromkeys(str(m[k]) for m in metas if m.get(k)))
        if vals:
            meta[k] = " + ".join(vals)  # parts run on different cards or builds show it
    dates = sorted({m["date"] for m in metas if m.get("date")})
    if dates:
        meta["date"] = dates[0] if len(dates) == 1 else f"{dates[0]}…{dates[-1]}"
    spreads = {m.get("spread") for m in metas if m.get("spread")}
    if len(spreads) == 1:
        meta["spread"] = spreads.pop()
    meta["parts_args"] = [m.get("args") or {} for m in metas]
    meta["wall_s"] = round(sum(m.get("wall_s") or 0 for m in metas), 1)
    order_models = []
    for m in metas:
        order_models += [x for x in m.get("models") or [] if x not in order_models]
    meta["models"] = order_models
    return meta, [by_key[k] for k in order]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--md", default="", help="write the markdown here too")
    ap.add_argument("--json", default="", help="write the merged results here")
    args = ap.parse_args()
    docs = []
    for path in args.files:
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            print(f"merge_results: {path}: {e}", file=sys.stderr)
            sys.exit(2)
        docs.append((d.get("meta") or {}, d.get("rows") or []))
    meta, rows = merge(docs)
    text = suite_table.markdown(rows, meta, meta.get("models"))
    print(text, end="")
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
