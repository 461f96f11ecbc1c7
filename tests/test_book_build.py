"""The book builds offline with warnings as errors, from the notebooks `make test` executed, and
every chapter page shows its figures and renders its formulas without a network. Its own file: under
pytest-xdist (--dist loadfile) a file is one unit of work, and this one is queued last."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_book import (
    toc_files,  # tests/ is on sys.path under pytest's default import mode
)

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = os.environ.get("ZC_EXECUTED")  # set by `make test`: nbmake's executed copies of the chapters


def written_back(path: Path) -> bool:
    """nbmake has written this copy back (it does, failed or not): some code cell has an execution count."""
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError):  # not there, or being written right now
        return False
    return any(c.get("execution_count") for c in cells if c["cell_type"] == "code")


def wait_for_chapters(folder: Path, timeout: float = 3600.0) -> None:
    """Under xdist the other worker may still be executing a chapter when this test starts: wait until
    nbmake has written every copy (a chapter that never comes back fails here after `timeout` s)."""
    deadline = time.time() + timeout
    copies = sorted(folder.glob("*.ipynb"))
    while not all(written_back(p) for p in copies):
        if time.time() > deadline:
            pytest.fail(f"chapters not executed after {timeout:.0f} s: {[p.name for p in copies if not written_back(p)]}")
        time.sleep(2)


@pytest.mark.after_notebooks
def test_book_builds_with_every_chapter_and_figure(tmp_path):
    """Runs after nbmake (tests/conftest.py orders it last; under xdist it waits for them) on the executed
    copies: nothing is executed twice. A chapter that failed under nbmake has no outputs here, so this fails
    too."""
    if not EXECUTED:
        pytest.skip("`make test` runs this on the notebooks nbmake executed (set ZC_EXECUTED=<folder>)")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        wait_for_chapters(Path(EXECUTED))
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
