"""What every benchmark writes beside its numbers: the machine line, and the table as text + JSON."""
from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import torch


def machine() -> str:
    return f"{datetime.date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def write(out: str | Path, lines: list[str], rows: list[dict]) -> None:
    """Print the table; write it to `out` (.txt) and the rows with the machine line to `out`.json."""
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"machine": lines[1], "rows": rows}, indent=1))
