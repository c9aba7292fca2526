"""The GPU suite's results as markdown: one table, a geomean line, notes (errors, fallback ops), a legend.

Used by bench/gpu_compare.py (after each model) and bench/merge_results.py (per-part JSON files into one
table). Pure Python: no torch, no GPU, so it can be checked anywhere on fake results.

A result row (JSON, as gpu_compare.py writes it):
    {"model": "resnet50", "family": "cnn", "desc": "224²", "batch": 32, "status": "ok" | "error" | "timeout" |
     "crash" | "skipped", "errors": {stage: message},
     "time": {method: {"ms": median over rounds, "lo": .., "hi": .., "rounds": [...], "iters": n}},
     "compile_s": {method: seconds}, "mem_mb": {key: MiB},
     "kiln": {"py" | "cli": {"segments": n, "fallback": n, "fallback_ops": [...], ...}},
     "cosine": {"kiln_py": .., "kiln_cli": .., "kiln_py_fp32": .., "kiln_cli_fp32": .., "eager_fp32": ..},
     "out": {"shape": [...], "std": .., "finite": bool}, "notes": [...]}
methods: "eager", "tc_default", "tc_reduce-overhead", "tc_max-autotune", "kiln_py", "kiln_cli".
"""
import math

FAMILIES = ["cnn", "vit", "encoder", "decoder"]
TC_MODES = ["default", "reduce-overhead", "max-autotune"]
TC_SHORT = {"default": "tc default", "reduce-overhead": "tc r-o", "max-autotune": "tc max-autotune"}
PATHS = ["py", "cli"]


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def timing(row, method):
    t = (row.get("time") or {}).get(method)
    return t if t and _num(t.get("ms")) and t["ms"] > 0 else None


def best_tc(row):
    """(mode, ms) of the fastest torch.compile mode timed in this row, or None."""
    best = None
    for mode in TC_MODES:
        t = timing(row, f"tc_{mode}")
        if t and (best is None or t["ms"] < best[1]):
            best = (mode, t["ms"])
    return best


def ratio(row, path):
    """Best torch.compile time ÷ kiln's time through `path` ("py" or "cli"): > 1 means kiln is faster."""
    b, k = best_tc(row), timing(row, f"kiln_{path}")
    return b[1] / k["ms"] if b and k else None


def geomean(values):
    xs = [x for x in values if _num(x) and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def sort_rows(rows, order=None):
    """Family, then the suite's model order (`order`: model names) or first appearance, then batch."""
    seen = {}
    for i, name in enumerate(order or []):
        seen.setdefault(name, i)
    for r in rows:
        seen.setdefault(r["model"], len(seen) + 1000)
    fam = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(rows, key=lambda r: (fam.get(r.get("family"), len(fam)), seen[r["model"]], r.get("batch", 0)))


def _ms(t):
    if not t:
        return "—"
    s = f"{t['ms']:.2f}"
    if _num(t.get("lo")) and _num(t.get("hi")):
        s += f" ({t['lo']:.2f}–{t['hi']:.2f})"
    return s


def _esc(s):
    return str(s).replace("|", "/").replace("\n", " ")


def _x(v):
    if v is None:
        return "—"
    return f"**{v:.2f}×**" if v >= 1.0 else f"{v:.2f}×"


def _f(v, fmt):
    return format(v, fmt) if _num(v) else "—"


def _seg(info):
    if not info or "segments" not in info:
        return "—"
    s = f"{info['segments']}+{info.get('fallback', 0)}"
    return s + (" ✓" if info["segments"] == 1 and not info.get("fallback") else "")


def columns_present(rows, asked=()):
    """tc modes and kiln paths with a number (or an error) in some row, or asked for by the run."""
    modes = [m for m in TC_MODES if m in asked or any(timing(r, f"tc_{m}") or f"tc_{m}" in (r.get("errors") or {})
                                                      for r in rows)]
    paths = [p for p in PATHS if any(timing(r, f"kiln_{p}") or p in (r.get("kiln") or {})
                                     or any(k.startswith(f"kiln_{p}") for k in (r.get("errors") or {}))
                                     for r in rows)]
    return modes, paths or ["py"]


def markdown(rows, meta=None, order=None):
    """The whole report as one markdown string."""
    meta = meta or {}
    rows = sort_rows(rows, order)
    asked = [m for a in (meta.get("args") or {}, *(meta.get("parts_args") or [])) for m in a.get("modes") or []]
    modes, paths = columns_present(rows, asked)
    out = []
    if meta:
        bits = [f"{k} {meta[k]}" for k in ("device", "torch", "torchvision", "transformers", "date", "kiln_commit")
                if meta.get(k)]
        out.append("_" + " · ".join(bits) + "_")
        out.append("")
    cols = (["model", "batch", "eager ms"] + [f"{TC_SHORT[m]} ms" for m in modes] + [f"kiln {p} ms" for p in paths]
            + [f"best tc ÷ kiln {p}" for p in paths]
            + ["compile s (" + " / ".join([f"kiln {p}" for p in paths] + [TC_SHORT[m] for m in modes]) + ")",
               "MiB kiln plan (process) / best tc", "segments+fallback (" + " / ".join(paths) + ")",
               "cosine to eager (" + " / ".join(paths) + ")"])
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "---|" * len(cols))
    notes = []
    prepared = {}
    for r in rows:
        if r.get("prepared") and r["model"] not in prepared:
            prepared[r["model"]] = "; ".join(r["prepared"])
        label = f"{r['model']} {r.get('desc', '')}".strip()
        key = f"{r['model']} b{r.get('batch')}"
        whole = r.get("status") not in (None, "ok") and not r.get("time")  # one line says it all
        for stage, msg in ({} if whole else r.get("errors") or {}).items():
            notes.append(f"{key}: {stage}: {_esc(msg)}")
        for n in r.get("notes") or []:
            notes.append(f"{key}: {_esc(n)}")
        for p in paths:
            ops = ((r.get("kiln") or {}).get(p) or {}).get("fallback_ops")
            if ops:
                notes.append(f"{key}: kiln {p} fallback ops: {' '.join(ops)}")
        if whole:
            msg = next(iter((r.get("errors") or {}).values()), "")
            out.append(f"| {label} | {r.get('batch')} | {r.get('status')}: {_esc(msg)[:200]} |" + " |" * (len(cols) - 3))
            continue
        b = best_tc(r)
        mem = r.get("mem_mb") or {}
        kmem = next((mem[k] for k in ("kiln_py_plan", "kiln_cli_plan") if _num(mem.get(k))), None)
        tmem = mem.get(f"tc_{b[0]}") if b else None
        tmeasured = mem.get(f"tc_{b[0]}_measured") if b else None
        cos = r.get("cosine") or {}
        cs = r.get("compile_s") or {}
        cells = [label, str(r.get("batch")), _ms(timing(r, "eager"))]
        cells += [_ms(timing(r, f"tc_{m}")) for m in modes]
        cells += [_ms(timing(r, f"kiln_{p}")) for p in paths]
        cells += [_x(ratio(r, p)) for p in paths]
        cells.append(" / ".join([_f(cs.get(f"kiln_{p}"), ".1f") for p in paths] + [_f(cs.get(f"tc_{m}"), ".1f")
                                                                                    for m in modes]))
        # The plan's weights and activations, and (kiln.compile) the device memory the process lost
        # across compile and first call: library handles, loaded kernels, scratch on top of the plan.
        measured = mem.get("kiln_py_measured")
        kcell = _f(kmem, '.0f') + (f" ({_f(measured, '.0f')})" if _num(measured) else "")
        tcell = _f(tmem, '.0f') + (f" ({_f(tmeasured, '.0f')})" if _num(tmeasured) else "")
        cells.append(f"{kcell} / {tcell}")
        cells.append(" / ".join(_seg((r.get("kiln") or {}).get(p)) for p in paths))
        cells.append(" / ".join(_f(cos.get(f"kiln_{p}"), ".5f") for p in paths))
        out.append("| " + " | ".join(cells) + " |")
    gm = {p: geomean(ratio(r, p) for r in rows) for p in paths}
    n = {p: sum(1 for r in rows if ratio(r, p) is not None) for p in paths}
    out.append("| **geomean** | | |" + " |" * (len(modes) + len(paths))
               + "".join(f" {_x(gm[p])} ({n[p]} rows) |" for p in paths) + " |" * 4)
    out.append("")
    for p in paths:
        rs = [ratio(r, p) for r in rows if ratio(r, p) is not None]
        if not rs:
            continue
        fams = []
        for f in FAMILIES:
            g = geomean(ratio(r, p) for r in rows if r.get("family") == f)
            if g:
                fams.append(f"{f} {g:.2f}×")
        out.append(f"- kiln {p}: geomean of best torch.compile ÷ kiln {gm[p]:.2f}× over {len(rs)} rows; "
                   f"≥ 1.0× on {sum(x >= 1.0 for x in rs)}/{len(rs)}; worst {min(rs):.2f}×, best {max(rs):.2f}×"
                   + (f"; by family: {', '.join(fams)}" if fams else ""))
    missing = [f"{r['model']} b{r.get('batch')} ({r.get('status')})" for r in rows if r.get("status") not in (None, "ok")]
    if missing:
        out.append(f"- rows not complete: {', '.join(missing)}")
    if notes:
        out.append("")
        out.append("Notes:")
        out.extend(f"- {n}" for n in notes)
    if prepared:
        out.append("")
        out.append("Random weights, prepared so fp16 outputs stay meaningful: "
                   + "; ".join(f"{m}: {p}" for m, p in prepared.items()) + ".")
    out.append("")
    out.append(LEGEND.format(spread=meta.get("spread", "min–max of the per-round medians")))
    return "\n".join(out) + "\n"


LEGEND = """Columns: times are medians over interleaved timing rounds (each round times every method in turn, order \
rotated; a round's value is the median of its calls, each timed with CUDA events; kiln cli = `kiln bench`'s median \
in its own process), in parentheses the {spread}. tc = torch.compile (dynamic=False) of the fp16 eager module. \
best tc ÷ kiln > 1 means kiln is faster than the fastest torch.compile mode of that row. compile s: kiln py = \
kiln.compile() plus its first call; kiln cli = `kiln compile` (export and save not included); tc = first call. \
MiB: kiln = its plans' weights + planned activation arena (as `kiln compile`/program.summary() report them), in \
parentheses the device memory the process lost over kiln.compile and its first call (library handles, loaded \
kernels and scratch too); tc = \
weights + torch's peak allocated bytes over compile and the first three calls, in parentheses measured as kiln's \
parenthesis is (device memory lost outside PyTorch's allocator plus its peak: CUDA graphs, cuDNN/cuBLAS \
workspaces, Triton's loaded kernels). \
segments+fallback: kiln's accelerated segments + ops run by PyTorch (✓ = one segment, no fallback). cosine: kiln's \
output against eager fp16 on the same weights and inputs (computed in float64)."""
