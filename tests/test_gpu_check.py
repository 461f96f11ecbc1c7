"""scripts/gpu_check.sh, the one-shot GPU check, in its --dry-run: every step is recorded with its
command, every chapter is in the nbmake step, and every file it runs exists."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_dry_run_records_every_step(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path / "out")], capture_output=True, text=True,
                       env={**os.environ, "PY": sys.executable, "WORK": str(tmp_path / "work")}, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "Machine: (dry run" in readme and "Date:" in readme
    names = re.findall(r"^\| (\S+)\.txt \|", readme, re.M)
    assert names == ["standin", "chapters", "train_step_sd15_bf16", "tinysd_gpu"]
    chapters = next(line for line in readme.splitlines() if line.startswith("| chapters.txt"))
    assert "--nbmake notebooks" in chapters and "ZC_DEVICE=cuda" in chapters and "ZC_REHEARSE=sd15" in chapters
    for path in re.findall(r"(benchmarks/\S+\.py)", readme):
        assert (ROOT / path).is_file(), path
    assert not list((tmp_path / "out").glob("*.txt")), "a dry run ran something"
