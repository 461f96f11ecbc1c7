"""Files that zc ships beside its code: the trained weights and the stored benchmark outputs that
chapters plot. Found the same way in a clone (benchmarks/results/) and in an installed wheel
(zc/results/, packaged from benchmarks/results/ by pyproject.toml)."""
from __future__ import annotations

from pathlib import Path

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


# glibc's malloc raises its mmap threshold each time a large block is freed and trims the heap
# eagerly; a process that samples (large, short-lived batches) and then trains pays page faults on
# every step: on this project's CPU a training step after one sampling call ran 3-5x slower
# (0.16 -> 0.79 s/step, TinySD batch 16), and the fixed thresholds below bring it back (0.21 s).
MMAP_THRESHOLD = 32 * 2**20  # bytes: glibc's largest; setting it at all disables the dynamic raise
TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap kept before returning any to the system


def tune_allocator() -> bool:
    """Fix glibc malloc's mmap and trim thresholds for this process (mallopt), unless ZC_MALLOC=0
    or the C library is not glibc. Returns whether it did. Memory is not lost: freed blocks stay
    in the heap for the next batch instead of going back to the system and faulting in again."""
    import ctypes
    import os
    import sys

    if os.environ.get("ZC_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(libc.mallopt(m_trim_threshold,
                                                                                           TRIM_THRESHOLD))
    except (OSError, AttributeError):  # musl, or no libc.so.6
        return False
