"""How long the README's two commands take on a fresh clone, part by part (issue #37's budgets:
`make book` <= 8 min and `make test` <= 12 min on 2 cores, install included; each chapter <= ~2 min).

    python benchmarks/suite_time.py [--repo .] [--out benchmarks/results/cpu/suite_time]

Clones the repository's HEAD into a temporary folder and there runs, one after the other with nothing
else running: `make .venv/.installed` (the install), `make test` (with a JUnit report) and `make book`
(in the same clone, after `make test`: its install is done, so `make book`'s own time is measured from a
second, empty `_build`, and its install line is the first one's). Prints one table and writes
<out>.json and <out>.txt with the command, machine and date beside the numbers.

Parts of `make test` come from the JUnit report, as the sum of their items' seconds: the unit tests, the
TinySD chapters under nbmake, the chapters on the stand-in, the browser test, the book built from the
executed chapters, the wheel test. `make test` runs two workers, so the parts add up to more than its
wall time. The chapters' own seconds come from `make book`'s executor (one torch thread each, two at a
time); scripts/execute_chapters.py reads them back to start the longest first.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> float:
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    seconds = time.time() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed after {seconds:.0f} s; see {log}")
    return seconds


def part_of(case: ET.Element) -> str:
    name, where = case.get("name", ""), case.get("classname", "") + "/" + case.get("file", "")
    if ".ipynb" in name or "ipynb" in where or "_executed" in where:
        return "TinySD chapters (nbmake)"
    for key, part in (("test_standin_chapters", "stand-in chapters"), ("test_canvas_browser", "browser"),
                      ("test_book", "book (built from the executed chapters)"), ("test_install", "wheel test")):
        if key in where:
            return part
    return "unit tests"


def junit_parts(path: Path) -> tuple[dict[str, float], dict[str, int]]:
    seconds, counts = {}, {}
    for case in ET.parse(path).getroot().iter("testcase"):
        p = part_of(case)
        seconds[p] = seconds.get(p, 0.0) + float(case.get("time", 0))
        counts[p] = counts.get(p, 0) + 1
    return seconds, counts


def chapter_seconds(log: Path) -> dict[str, float]:
    """scripts/execute_chapters.py prints '[n/N] 06_training.ipynb 93 s (at 120 s)' per chapter."""
    found = re.findall(r"^\[\d+/\d+\] (\S+)\.ipynb (\d+) s", log.read_text(), re.M)
    return {name: float(s) for name, s in found}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(ROOT))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu" / "suite_time"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="zc-suite-"))
    clone = work / "zc"
    subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                            text=True).stdout.strip()
    print(f"fresh clone of {commit} in {clone}", flush=True)
    install = timed(["make", ".venv/.installed"], clone, work / "install.log")
    print(f"install: {install:.0f} s", flush=True)
    junit = work / "junit.xml"
    test = timed(["make", "test", f"PYTEST_ARGS=--junitxml={junit}"], clone, work / "test.log")
    print(f"make test (after the install): {test:.0f} s", flush=True)
    book = timed(["make", "book"], clone, work / "book.log")
    print(f"make book (after the install): {book:.0f} s", flush=True)
    parts, counts = junit_parts(junit)
    chapters = chapter_seconds(work / "book.log")
    tail = (work / "test.log").read_text().strip().splitlines()[-1]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    rows = [("install (venv + uv, both commands pay it once)", install),
            ("make test, after the install (wall)", test), ("make test, install included", install + test),
            ("make book, after the install (wall)", book), ("make book, install included", install + book)]
    lines = [f"$ python benchmarks/suite_time.py   (fresh clone of {commit})",
             f"{datetime.date.today()}, {machine}; nothing else running", "",
             f"{'command':48s} {'seconds':>8s} {'min':>6s}"]
    lines += [f"{name:48s} {s:8.0f} {s / 60:6.1f}" for name, s in rows]
    lines += ["", f"make test by part (sum of its items' seconds; two workers, so more than the wall time): {tail}",
              f"{'part':48s} {'items':>6s} {'seconds':>8s}"]
    lines += [f"{p:48s} {counts[p]:6d} {s:8.0f}" for p, s in sorted(parts.items(), key=lambda kv: -kv[1])]
    lines += ["", "make book: each chapter's execution (one torch thread, two chapters at a time)",
              f"{'chapter':48s} {'seconds':>8s}"]
    lines += [f"{c:48s} {s:8.0f}" for c, s in sorted(chapters.items())]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({
        "command": "python benchmarks/suite_time.py", "commit": commit, "date": str(datetime.date.today()),
        "machine": machine, "install": install, "test": test, "book": book, "test_parts": parts,
        "test_counts": counts, "test_summary": tail, "chapters": chapters}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
