"""Every Python code block of the user guide (docs/guide/*.md) runs, in order, one namespace per
page, in a scratch folder that holds the project's examples/ and tests/data. A block right after
`<!-- guide: needs cuda -->` runs only with a GPU; after `<!-- guide: needs torch>=2.1 -->` (or 2.4) only on
that PyTorch or later; after `<!-- guide: skip -->` never (a fragment to read, not to run)."""
import os
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUIDE = os.path.join(ROOT, "docs", "guide")
BLOCK = re.compile(r"(?:<!-- guide: ([^\n]*?) -->\s*\n)?```python\n(.*?)```", re.S)


def pages():
    return sorted(f for f in os.listdir(GUIDE) if f.endswith(".md"))


def blocks(page):
    text = open(os.path.join(GUIDE, page)).read()
    for m in BLOCK.finditer(text):
        line = text[:m.start(2)].count("\n") + 1
        yield (m.group(1) or "").strip(), m.group(2), line


def runnable(tag):
    if tag == "skip":
        return False
    if tag == "needs cuda":
        return torch.cuda.is_available()
    if tag in ("needs torch>=2.1", "needs torch>=2.4"):
        wanted = tuple(int(x) for x in tag.split(">=")[1].split("."))
        return tuple(int(x) for x in torch.__version__.split(".")[:2]) >= wanted
    assert tag == "", f"unknown guide tag {tag!r}"
    return True


def test_the_guide_has_pages_with_code():
    assert "getting-started.md" in pages()
    assert sum(1 for p in pages() for _ in blocks(p)) >= 20


@pytest.mark.parametrize("page", pages())
def test_page_code_runs(page, tmp_path, monkeypatch, capsys):
    for name in ("examples", "tests"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"guide_{page[:-3].replace('-', '_')}"}
    ran = 0
    for tag, code, line in blocks(page):
        if not runnable(tag):
            continue
        # compiled with the page's line numbers, so a failure points into the .md file
        exec(compile("\n" * (line - 1) + code, os.path.join(GUIDE, page), "exec"), namespace)
        ran += 1
    if not any(tag == "" for tag, _, _ in blocks(page)):
        pytest.skip(f"{page}: no block runs here")
    assert ran > 0
