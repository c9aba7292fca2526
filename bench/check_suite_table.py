#!/usr/bin/env python3
"""Checks the suite's table and merge logic on fake results (no torch, no GPU):
    python3 bench/check_suite_table.py [--show]"""
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import suite_table  # noqa: E402


def t(ms, spread=0.05):
    return {"ms": ms, "lo": ms * (1 - spread), "hi": ms * (1 + spread), "rounds": [ms] * 5, "iters": 20}


def row(model, family, batch, eager, tcd, tcr, py, cli, **extra):
    r = {"model": model, "family": family, "desc": "224²", "batch": batch, "status": "ok", "errors": {},
         "time": {"eager": t(eager), "tc_default": t(tcd), "tc_reduce-overhead": t(tcr)},
         "compile_s": {"kiln_py": 3.1, "kiln_cli": 2.5, "tc_default": 15.2, "tc_reduce-overhead": 11.0},
         "mem_mb": {"weights": 49.0, "kiln_py_plan": 60.0, "kiln_cli_plan": 61.0, "tc_default": 80.0,
                    "tc_reduce-overhead": 95.0},
         "kiln": {"py": {"segments": 1, "fallback": 0}, "cli": {"segments": 1, "fallback": 0}},
         "cosine": {"kiln_py": 0.99999, "kiln_cli": 0.99998}, "notes": [], "prepared": ["BN calibrated"]}
    if py:
        r["time"]["kiln_py"] = t(py)
    if cli:
        r["time"]["kiln_cli"] = t(cli)
    r.update(extra)
    return r


def main():
    part1 = {"meta": {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "date": "2026-12-03",
                      "args": {"modes": ["default", "reduce-overhead"]}, "models": ["resnet50", "gpt2"]},
             "rows": [row("resnet50", "cnn", 1, 6.9, 2.5, 0.68, 0.40, 0.39),
                      row("resnet50", "cnn", 32, 4.9, 3.9, 1.89, 1.35, 1.36),
                      {"model": "gpt2", "family": "decoder", "desc": "seq 512", "batch": 1, "status": "timeout",
                       "errors": {"timeout": "timed out after 300 s"}}]}
    bad = row("bert-base", "encoder", 32, 6.5, 3.5, 3.1, None, 2.2,
              errors={"kiln_py": "RuntimeError: boom | with a pipe"})
    bad["kiln"] = {"cli": {"segments": 2, "fallback": 3, "fallback_ops": ["aten.where.self"]}}
    del bad["cosine"]["kiln_py"], bad["compile_s"]["kiln_py"], bad["mem_mb"]["kiln_py_plan"]
    part2 = {"meta": {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "date": "2026-12-03",
                      "args": {"modes": ["default", "reduce-overhead"]}, "models": ["bert-base", "gpt2"]},
             "rows": [bad, row("gpt2", "decoder", 1, 10.7, 4.3, 1.06, 1.2, 0.83)]}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, d in enumerate((part1, part2)):
            paths.append(os.path.join(tmp, f"suite_{i + 1}.json"))
            with open(paths[-1], "w") as f:
                json.dump(d, f)
        merged = os.path.join(tmp, "merged.json")
        md = subprocess.run([sys.executable, os.path.join(HERE, "merge_results.py"), *paths, "--json", merged],
                            check=True, capture_output=True, text=True).stdout
        with open(merged) as f:
            rows = json.load(f)["rows"]
    if "--show" in sys.argv:
        print(md)
    # gpt2 b1: the complete row of part 2 replaces part 1's timeout.
    assert [(r["model"], r["batch"], r["status"]) for r in suite_table.sort_rows(rows)] == [
        ("resnet50", 1, "ok"), ("resnet50", 32, "ok"), ("bert-base", 32, "ok"), ("gpt2", 1, "ok")], rows
    py = [0.68 / 0.40, 1.89 / 1.35, 1.06 / 1.2]
    cli = [0.68 / 0.39, 1.89 / 1.36, 3.1 / 2.2, 1.06 / 0.83]
    gpy = math.exp(sum(map(math.log, py)) / 3)
    gcli = math.exp(sum(map(math.log, cli)) / 4)
    assert f"**{gpy:.2f}×** (3 rows)" in md and f"**{gcli:.2f}×** (4 rows)" in md, md
    assert "bert-base b32: kiln_py: RuntimeError: boom / with a pipe" in md, md
    assert "kiln cli fallback ops: aten.where.self" in md and "2+3 / " not in md and "— / 2+3" in md, md
    assert "| resnet50 224² | 1 | 6.90 (6.55–7.25) | 2.50 (2.38–2.62) | 0.68 (0.65–0.71) | 0.40 (0.38–0.42)" in md, md
    header = [l for l in md.splitlines() if l.startswith("| model")][0]
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| model"):
            assert line.count(" |") >= header.count(" |") - 1, line  # every row spans the table
    print("suite table checks passed")


if __name__ == "__main__":
    main()
