"""The chapters as files: committed without outputs, formatted to the book's width, parameters first."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDTH = 88  # characters of code the book's page shows without cutting (notebooks/ruff.toml)


def cells(path, kind="code"):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    dirty = [i for i, c in enumerate(cells(path)) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; run `make clean-notebooks`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_fits_the_page(path):
    long = [line for c in cells(path) for line in "".join(c["source"]).splitlines() if len(line) > WIDTH]
    assert not long, f"{path.name}: {len(long)} code lines over {WIDTH} characters, e.g. {long[0]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_comes_right_after_the_install_cell(path):
    second = cells(path)[1]
    assert "parameters" in second.get("metadata", {}).get("tags", []), f"{path.name}: code cell 2 is not tagged"
    assert "os.environ" in "".join(second["source"]), f"{path.name}: the parameters cell reads no environment variable"


def test_every_chapter_starts_with_the_current_install_cell():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "install_cell.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, f"run `python scripts/install_cell.py --write`:\n{r.stderr}"


def _run_install_cell(monkeypatch, importable: bool) -> list:
    """Executes chapter 1's install cell with find_spec and subprocess.run replaced: the pip commands it ran."""
    import importlib.util
    import subprocess as sp

    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if importable else None)
    monkeypatch.setattr(sp, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    exec("".join(cells(NOTEBOOKS[0])[0]["source"]), {})
    return calls


def test_install_cell_is_a_no_op_where_zc_is_installed(monkeypatch):
    assert _run_install_cell(monkeypatch, importable=True) == []


def test_install_cell_pins_the_books_repository_and_version(monkeypatch):
    import re

    import yaml

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    [(cmd, kw)] = _run_install_cell(monkeypatch, importable=False)
    assert cmd == [sys.executable, "-m", "pip", "install", "-q", f"zc @ git+{url}@v{version}"]
    assert kw == {"check": True}


def test_ruff_format_is_clean():
    ruff = Path(sys.executable).with_name("ruff")  # installed by requirements.txt beside this Python
    r = subprocess.run([str(ruff), "format", "--check", str(ROOT / "notebooks")], capture_output=True, text=True)
    assert r.returncode == 0, f"run `make format`:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_has_a_title(path):
    """A cell that shows a figure also names it (title, suptitle or set_title): the book has no captions."""
    untitled = [i for i, c in enumerate(cells(path)) if "plt.show()" in "".join(c["source"])
                and "title(" not in "".join(c["source"])]
    assert not untitled, f"{path.name}: code cells {untitled} show a figure without a title"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_opens_and_closes_for_the_reader(path):
    text = "\n".join("".join(c["source"]) for c in cells(path, "markdown"))
    for part in ("What you will learn", "Assumes", "## Summary", "## Try this"):
        assert part in text, f"{path.name}: no '{part}'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_figure_drawn_inside_a_widget(path):
    """ipywidgets' interact/interactive draw into an Output widget while the cell runs, and a headless run
    (nbmake, the book's build) can then wait forever for a message (jupyter/nbclient#312: chapter 7 hung
    so in the suite). Widgets show images as ipywidgets.Image (zc.study.widgets.png), as chapters 7 and 8 do."""
    used = [i for i, c in enumerate(cells(path)) if re.search(r"\binteract(ive)?\(|widgets\.Output\(", "".join(c["source"]))]
    assert not used, f"{path.name}: code cells {used} draw inside a widget; show an ipywidgets.Image instead"
