"""The GitHub Actions workflow that publishes the book: actionlint passes it (and fails a broken copy),
and it builds with jupyter-book 1.x from the restored execution cache and deploys _build/html."""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
ACTIONLINT = Path(sys.executable).with_name("actionlint")  # installed by the dev extra


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ACTIONLINT), "-no-color", str(path)], capture_output=True, text=True)


def test_the_workflow_passes_actionlint():
    r = lint(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_fails_a_broken_workflow(tmp_path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    broken = tmp_path / ".github" / "workflows" / "book.yml"
    shutil.copy(WORKFLOW, broken)
    broken.write_text(broken.read_text().replace("needs: build", "needs: bulid"))  # a job that does not exist
    r = lint(broken)
    assert r.returncode != 0 and "bulid" in r.stdout


def test_the_workflow_builds_from_the_cache_and_deploys_the_html():
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert wf["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    steps = wf["jobs"]["build"]["steps"]
    uses = {s.get("uses", "").split("@")[0]: s for s in steps}
    assert uses["actions/cache"]["with"]["path"] == "_build/.jupyter_cache"
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert any(s.get("run") == "make book" for s in steps)
    assert wf["jobs"]["deploy"]["steps"][0]["uses"].startswith("actions/deploy-pages@")
