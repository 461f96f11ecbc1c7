"""The first code cell of every chapter: installs zc, pinned to the book's version, when `import zc`
would fail (Colab, Binder, a fresh kernel), and does nothing where zc is installed (a clone, CI).

Its pip requirement comes from the one repository URL setting, `repository.url` in _config.yml
(which also drives the book's launch buttons), and the version in pyproject.toml:

    python scripts/install_cell.py --write        # after changing either: rewrite every chapter's cell
    python scripts/install_cell.py --check        # exit 1 when a chapter's cell is missing or stale
    make repository URL=https://github.com/you/zc # sets the URL in _config.yml, then --write
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "hide-cell"  # collapsed in the rendered book
MARK = "# Colab, Binder or a fresh kernel"


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    import yaml

    url = (yaml.safe_load(config.read_text()).get("repository") or {}).get("url", "")
    if not url.startswith("https://"):
        raise ValueError(f"{config}: repository.url must be the https URL of the book's repository, got {url!r}")
    return url.rstrip("/").removesuffix(".git")


def version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    return re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M).group(1)


def requirement(url: str | None = None, ver: str | None = None) -> str:
    """What pip installs: this repository at the book's version tag (v<version>)."""
    return f"zc @ git+{url or repository_url()}@v{ver or version()}"


def cell_source(req: str | None = None) -> str:
    return (f"{MARK}: install zc (the book's version) when it is\n"
            "# missing. Where zc is installed (a clone, CI) this does nothing.\n"
            "import importlib.util\n"
            "import subprocess\n"
            "import sys\n\n"
            f'ZC = "{req or requirement()}"\n'
            'if importlib.util.find_spec("zc") is None:\n'
            '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", ZC], check=True)')


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def install_cell(nb: dict) -> dict | None:
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    return code[0] if code and "".join(code[0]["source"]).startswith(MARK) else None


def write(path: Path) -> bool:
    nb = json.loads(path.read_text())
    want = _lines(cell_source())
    cell = install_cell(nb)
    if cell is None:
        first = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
        cell = {"cell_type": "code", "execution_count": None, "id": uuid.uuid4().hex[:8],
                "metadata": {"tags": [TAG]}, "outputs": [], "source": []}
        nb["cells"].insert(first, cell)
    if cell["source"] == want and TAG in cell["metadata"].get("tags", []):
        return False
    cell["source"], cell["metadata"]["tags"] = want, [TAG]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def stale(path: Path) -> str | None:
    cell = install_cell(json.loads(path.read_text()))
    if cell is None:
        return f"{path.name}: its first code cell is not the install cell"
    if "".join(cell["source"]) != cell_source() or TAG not in cell["metadata"].get("tags", []):
        return f"{path.name}: its install cell is stale (not {requirement()!r}, or not tagged {TAG})"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--set-url", help="write this URL into _config.yml's repository.url first")
    args = ap.parse_args(argv)
    if args.set_url:
        config = ROOT / "_config.yml"
        text = config.read_text()
        new = re.sub(r"^(  url: )\S+", lambda m: m.group(1) + args.set_url, text, count=1, flags=re.M)
        if new == text and args.set_url not in text:
            raise SystemExit("_config.yml has no 'repository:\\n  url: ...' line to set")
        config.write_text(new)
        repository_url()  # validates it
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.write or args.set_url:
        for p in notebooks:
            if write(p):
                print("updated", p.relative_to(ROOT))
    problems = [s for p in notebooks if (s := stale(p))]
    for s in problems:
        print(s, file=sys.stderr)
    return 1 if problems and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
