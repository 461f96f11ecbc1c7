"""Files that zc ships beside its code: the trained weights and the stored benchmark outputs that
chapters plot. Found the same way in a clone (benchmarks/results/) and in an installed wheel
(zc/results/, packaged from benchmarks/results/ by pyproject.toml)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGE", "WEIGHTS", "RESULTS", "stored_result"]

PACKAGE = Path(__file__).parent
WEIGHTS = PACKAGE / "weights"
_CHECKOUT_RESULTS = PACKAGE.parent / "benchmarks" / "results"
RESULTS = _CHECKOUT_RESULTS if _CHECKOUT_RESULTS.is_dir() else PACKAGE / "results"


def stored_result(*parts: str) -> Path:
    """Path of a stored benchmark output, e.g. stored_result("h100", "bench_sd15_fp32.txt").

    FileNotFoundError names the file and how to get it when neither the clone nor the installed
    package has it."""
    path = RESULTS.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"stored result {'/'.join(parts)} not found in {RESULTS}: this zc has no benchmarks/results. Install zc "
            "from a wheel or clone of the project (both carry them), or rerun the benchmark named in the chapter")
    return path
