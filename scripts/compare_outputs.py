"""Compare the text outputs of two folders of executed chapter notebooks, cell by cell.

A refactor of zc must leave every number the book prints unchanged, or list and explain each
difference. This script takes two folders of executed chapters (e.g. `_executed_before/` and
`_executed/`) and shows which printed lines changed:

  python scripts/compare_outputs.py BEFORE_DIR AFTER_DIR [--report FILE]

Chapters are matched by file name and their code cells paired by position (aligned on the cells'
source with difflib when the number of code cells differs). A cell's text is its stream output and
the text/plain of its results; images are only counted. ANSI colours and memory addresses (0x7f...)
are dropped. A changed line that measures time (`12.3 s`, `0.2 s/step`, `took`, a tqdm bar) is a
"timing" difference, expected between runs; any other change, a changed image count or a missing
notebook or cell is a "value" difference, printed with a unified diff. Exit code 1 when any value
difference exists, else 0. Cell numbers are the notebook's cell indices (markdown cells included).
"""
import argparse
import difflib
import re
import sys
from pathlib import Path

import nbformat

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
TIMING = re.compile(
    r"\d\s*(s|ms|sec|secs|min|mins|seconds|s/step|s/it|it/s|steps/s)\b"
    r"|\b(took|elapsed|time)\b|\|.*it/s|%\|",
    re.IGNORECASE,
)
MAX_DIFF_LINES = 20


def cell_text(cell):
    """The cell's printed text (ANSI and addresses removed) and its number of images."""
    parts, images = [], 0
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            images += sum(key.startswith("image/") for key in out.get("data", {}))
            parts.append(out.get("data", {}).get("text/plain", "") + "\n")
    text = ADDRESS.sub("0x…", ANSI.sub("", "".join(parts)))
    return text.splitlines(), images


def code_cells(path):
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def pair_cells(before, after):
    """Pairs of code cells (either side None when a cell has no partner)."""
    if len(before) == len(after):
        return list(zip(before, after))
    matcher = difflib.SequenceMatcher(
        a=[c.source for _, c in before], b=[c.source for _, c in after], autojunk=False)
    pairs = []
    for _, i1, i2, j1, j2 in matcher.get_opcodes():
        a, b = before[i1:i2], after[j1:j2]
        n = min(len(a), len(b))
        pairs += list(zip(a[:n], b[:n]))
        pairs += [(x, None) for x in a[n:]] + [(None, y) for y in b[n:]]
    return pairs


def compare_chapter(before_path, after_path, say):
    """Print one chapter's summary and value diffs; return its value differences (cells)."""
    name = before_path.name
    before, after = code_cells(before_path), code_cells(after_path)
    if len(before) != len(after):
        say(f"{name}: code cells differ in number: {len(before)} before, {len(after)} after")
    counts = {"compared": 0, "identical": 0, "timing only": 0, "value": 0, "unpaired": 0}
    details = []
    for b, a in pair_cells(before, after):
        if b is None or a is None:
            index, cell = b or a
            side = "before" if a is None else "after"
            details.append(f"{name} cell {index}: only {side}: {first_line(cell)}")
            counts["unpaired"] += 1
            continue
        counts["compared"] += 1
        (old, old_images), (new, new_images) = cell_text(b[1]), cell_text(a[1])
        changed = [line for tag, i1, i2, j1, j2 in
                   difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
                   if tag != "equal" for line in old[i1:i2] + new[j1:j2]]
        if not changed and old_images == new_images:
            counts["identical"] += 1
            continue
        if old_images == new_images and all(TIMING.search(line) for line in changed):
            counts["timing only"] += 1
            continue
        counts["value"] += 1
        where = f"{name} cell {b[0]}" + (f" (after: cell {a[0]})" if a[0] != b[0] else "")
        details.append(f"{where}: {first_line(b[1])}")
        if old_images != new_images:
            details.append(f"  images: {old_images} before, {new_images} after")
        diff = list(difflib.unified_diff(old, new, "before", "after", n=1, lineterm=""))
        details += ["  " + line for line in diff[:MAX_DIFF_LINES]]
        if len(diff) > MAX_DIFF_LINES:
            details.append(f"  ... ({len(diff) - MAX_DIFF_LINES} more diff lines)")
    say(f"{name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for line in details:
        say(line)
    return counts["value"] + counts["unpaired"]


def first_line(cell):
    lines = cell.source.strip().splitlines()
    return lines[0][:90] if lines else "(empty cell)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="folder of executed notebooks before the change")
    parser.add_argument("after", type=Path, help="folder of executed notebooks after the change")
    parser.add_argument("--report", type=Path, help="also write the report to this file")
    args = parser.parse_args()

    lines = []

    def say(line):
        print(line)
        lines.append(line)

    names = sorted({p.name for d in (args.before, args.after) for p in d.glob("*.ipynb")})
    values = 0
    for name in names:
        b, a = args.before / name, args.after / name
        if not (b.exists() and a.exists()):
            say(f"{name}: only in {args.before if b.exists() else args.after}")
            values += 1
            continue
        values += compare_chapter(b, a, say)
    say(f"total: {len(names)} notebooks, {values} value difference(s)"
        + (": each must be explained" if values else ": numbers identical"))
    if args.report:
        args.report.write_text("\n".join(lines) + "\n")
    return 1 if values else 0


if __name__ == "__main__":
    sys.exit(main())
