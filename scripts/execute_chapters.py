"""Execute the book's chapters side by side into jupyter-book's execution cache, before `jupyter-book build`.

jupyter-book 1.x (myst-nb, `execute_notebooks: cache`) executes the chapters one after another while it
builds. On a 2-core machine that leaves half the machine idle: a chapter's torch work on TinySD gains
little from a second thread (one thread runs at ~0.73x the speed of two), while two chapters at one
thread each get ~1.4x the work done (measured: 609 s one after the other on two threads, 449 s in two
lanes; two torch kernels side by side each run ~30% slower than alone at one thread). This script
executes every chapter whose code is not already in the cache, `--jobs` at a time (one torch thread
each), the longest first, exactly as myst-nb would
(`jupyter_cache`'s single_nb_execution, in the chapter's own folder, no errors allowed), and stores each
result in the cache; `jupyter-book build` then finds them all there and executes nothing.

  python scripts/execute_chapters.py [--jobs 2] [--cache _build/.jupyter_cache] [notebooks/*.ipynb]

A chapter whose code did not change since it was cached is skipped (the cache matches on code cells and
metadata, as jupyter-book's own). A failed chapter prints its traceback; the others still run, and the
script exits 1 so that `make book` stops before building.
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# seconds per chapter measured on the project's 2-core machine (benchmarks/suite_time.py), used only to
# start the longest first; a chapter missing here counts as short
TIMES = ROOT / "benchmarks" / "results" / "cpu" / "suite_time.json"


def _execute(path: str, timeout: int) -> tuple[str, str, float, str | None]:
    """One chapter in its own kernel: (path, executed notebook as JSON, seconds, traceback or None)."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False,
                                 meta_override=True)
    return path, nbformat.writes(nb), result.time, result.exc_string


def expected_seconds() -> dict[str, float]:
    if not TIMES.is_file():
        return {}
    return json.loads(TIMES.read_text()).get("chapters", {})


def seconds_of(stem: str, times: dict[str, float]) -> float:
    """A chapter's stored seconds, found by its name without the number where chapters were renumbered
    since the measurement (09_ablations -> 10_ablations); infinite for a chapter never measured (a new
    one may be long: ordered longest first, it starts first rather than last)."""
    if stem in times:
        return times[stem]
    name = stem.split("_", 1)[-1]
    return next((s for k, s in times.items() if k.split("_", 1)[-1] == name), float("inf"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="default: notebooks/*.ipynb")
    ap.add_argument("--jobs", type=int, default=2, help="chapters executed at once (one torch thread each if > 1)")
    ap.add_argument("--cache", default=str(ROOT / "_build" / ".jupyter_cache"), help="jupyter-book's cache folder")
    ap.add_argument("--timeout", type=int, default=7200, help="seconds per cell (_config.yml's execute.timeout)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {args.jobs}")
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    paths = [Path(p).resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such notebook: {missing}")
    cache = get_cache(args.cache)
    todo = []
    for p in paths:
        try:
            cache.match_cache_notebook(nbformat.read(p, as_version=4))
        except KeyError:
            todo.append(p)
    if not todo:
        print(f"every chapter is in {args.cache} already: nothing to execute")
        return 0
    guess = expected_seconds()
    todo.sort(key=lambda p: -seconds_of(p.stem, guess))  # longest first: the last to finish is a short one
    if args.jobs > 1:  # one torch (OpenMP) thread per kernel: the kernels share the cores instead
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
    print(f"executing {len(todo)} of {len(paths)} chapters, {args.jobs} at a time", flush=True)
    t0, failed = time.time(), []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_execute, str(p), args.timeout) for p in todo]
        for n, f in enumerate(as_completed(futures), 1):
            path, text, seconds, error = f.result()
            name = Path(path).name
            if error:
                failed.append(name)
                print(f"[{n}/{len(todo)}] {name} FAILED after {seconds:.0f} s\n{error}", flush=True)
                continue
            cache.cache_notebook_bundle(CacheBundleIn(nbformat.reads(text, as_version=4), path,
                                                      data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            print(f"[{n}/{len(todo)}] {name} {seconds:.0f} s (at {time.time() - t0:.0f} s)", flush=True)
    print(f"executed in {time.time() - t0:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
