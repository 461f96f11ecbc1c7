"""The book builds offline with warnings as errors, and every chapter page shows its figures."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [c["file"] for part in toc["parts"] for c in part["chapters"]]


def test_every_notebook_is_in_the_toc():
    listed = {f for f in toc_files() if f.startswith("notebooks/")}
    on_disk = {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert listed == on_disk


def test_book_builds_with_every_chapter_and_figure(tmp_path):
    jb = Path(sys.executable).with_name("jupyter-book")
    r = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(tmp_path), "-W", "--keep-going"],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    for f in toc_files():
        page = html / f"{f}.html"
        assert page.is_file(), f
        if f.startswith("notebooks/"):
            images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page.read_text())
            assert images, f"{f} shows no figure"
            for src in images:
                assert (page.parent / src).resolve().is_file(), src
