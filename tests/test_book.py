"""The book builds offline with warnings as errors, from the notebooks `make test` executed, and
every chapter page shows its figures and renders its formulas without a network."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = os.environ.get("ZC_EXECUTED")  # set by `make test`: nbmake's executed copies of the chapters


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [c["file"] for part in toc["parts"] for c in part["chapters"]]


def test_every_notebook_is_in_the_toc():
    listed = {f for f in toc_files() if f.startswith("notebooks/")}
    on_disk = {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert listed == on_disk


@pytest.mark.after_notebooks
def test_book_builds_with_every_chapter_and_figure(tmp_path):
    """Runs after nbmake (tests/conftest.py orders it last) on the executed copies: nothing is executed
    twice. A chapter that failed under nbmake has no outputs here, so this fails too."""
    if not EXECUTED:
        pytest.skip("`make test` runs this on the notebooks nbmake executed (set ZC_EXECUTED=<folder>)")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("_toc.yml", "book"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"  # the outputs are already there
    (src / "_config.yml").write_text(yaml.safe_dump(config))
    (src / "notebooks").mkdir()
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        executed = Path(EXECUTED) / nb.name
        assert executed.is_file(), f"no executed copy of {nb.name} in {EXECUTED}"
        code = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
        assert all(c.get("execution_count") for c in code), f"{executed} was not executed (did nbmake run it?)"
        shutil.copy(executed, src / "notebooks" / nb.name)
    jb = Path(sys.executable).with_name("jupyter-book")
    r = subprocess.run([str(jb), "build", str(src), "-W", "--keep-going"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    html = src / "_build" / "html"
    for f in toc_files():
        page = html / f"{f}.html"
        assert page.is_file(), f
        text = page.read_text()
        assert "cdn.jsdelivr.net/npm/mathjax" not in text, f"{f} loads MathJax from a CDN"
        if f.startswith("notebooks/"):  # launch buttons from the one repository setting; install cell folded
            url = config["repository"]["url"].removeprefix("https://github.com/")
            assert f"colab.research.google.com/github/{url}/blob/main/{f}.ipynb" in text, f"{f}: no Colab button"
            assert "tag_hide-cell" in text, f"{f}: the install cell is not folded"
            images = re.findall(r'<img[^>]+src="([^"]+\.png)"', text)
            assert images, f"{f} shows no figure"
            for src_ in images:
                assert (page.parent / src_).resolve().is_file(), src_
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', (html / "notebooks/04_controlnet.html").read_text())
    assert scripts, "no MathJax script on a page with formulas"
    assert all((html / "notebooks" / s.split("?")[0]).resolve().is_file() for s in scripts), scripts


def test_glossary_defines_every_measure_and_the_chapters_use_no_retired_name():
    """One name per measure (book/glossary.md): every key zc prints has its entry, and no chapter
    says chance, AUC, keypoint error or structure C any more."""
    import json
    import re

    from zc import conditions

    glossary = (ROOT / "book" / "glossary.md").read_text()
    for key, name in conditions.NAMES.items():
        assert f"`{key}`" in glossary and f"| {name} |" in glossary, key
    retired = re.compile(r"(?i:\bchance\b|keypoint error|structure C)|\bAUC\b")  # AUC: not the code's `auc` key
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
        assert not retired.findall(text), (nb.name, retired.findall(text))
