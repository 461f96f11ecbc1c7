"""scripts/execute_chapters.py: `make book` executes the chapters two at a time into jupyter-book's cache,
where the build finds them (myst-nb matches a notebook to the cache by its code, as checked here)."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parent.parent


def execute(*args) -> subprocess.CompletedProcess:
    """The script as `make book` runs it."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_chapters.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_chapters_run_side_by_side_into_the_cache_once(tmp_path):
    a = notebook(tmp_path / "a.ipynb", "import os\nprint('threads', os.environ.get('OMP_NUM_THREADS'))")
    b = notebook(tmp_path / "b.ipynb", "import os\nprint('cwd', os.getcwd())")
    cache = tmp_path / "cache"
    r = execute(a, b, "--cache", cache, "--jobs", 2)
    assert r.returncode == 0, r.stdout + r.stderr
    for path, expected in ((a, "threads 1"), (b, f"cwd {tmp_path}")):  # one thread each; in its own folder
        record = get_cache(str(cache)).match_cache_notebook(nbformat.read(path, as_version=4))
        _, nb = get_cache(str(cache)).merge_match_into_notebook(nbformat.read(path, as_version=4))
        assert record is not None and nb.cells[0].outputs[0]["text"].strip() == expected
    r = execute(a, b, "--cache", cache)  # cached: nothing runs again
    assert r.returncode == 0 and "nothing to execute" in r.stdout, r.stdout + r.stderr


def test_a_failing_chapter_fails_the_run_and_is_not_cached(tmp_path):
    good = notebook(tmp_path / "good.ipynb", "print('fine')")
    bad = notebook(tmp_path / "bad.ipynb", "raise ValueError('broken chapter')")
    cache = tmp_path / "cache"
    r = execute(good, bad, "--cache", cache, "--jobs", 2)
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "bad.ipynb FAILED" in out and "broken chapter" in out and "failed: bad.ipynb" in out
    get_cache(str(cache)).match_cache_notebook(nbformat.read(good, as_version=4))  # the other one is kept
    with pytest.raises(KeyError):  # the failed one is not
        get_cache(str(cache)).match_cache_notebook(nbformat.read(bad, as_version=4))


def test_bad_arguments_are_refused(tmp_path):
    r = execute(tmp_path / "missing.ipynb", "--cache", tmp_path / "c")
    assert r.returncode and "FileNotFoundError: no such notebook" in r.stderr, r.stderr
    r = execute("--jobs", 0)
    assert r.returncode and "--jobs must be at least 1" in r.stderr, r.stderr


def test_stored_seconds_find_renumbered_chapters_and_a_new_chapter_starts_first():
    sys.path.insert(0, str(ROOT / "scripts"))
    from execute_chapters import seconds_of

    times = {"09_ablations": 100.0, "06_training": 80.0}
    assert seconds_of("10_ablations", times) == 100.0 and seconds_of("06_training", times) == 80.0
    order = sorted(["06_training", "14_transformer", "10_ablations"], key=lambda s: -seconds_of(s, times))
    assert order == ["14_transformer", "10_ablations", "06_training"]
