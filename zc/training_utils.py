"""Small pieces the training loops share: device choice, per-step seeds, atomic checkpoints."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch
from torch import nn


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bars_off() -> bool:
    """TQDM_DISABLE=1 (as `make book` and `make test` set): no progress bars. tqdm reads that variable
    itself, but its notebook bars (tqdm.auto in a kernel) ignore it, so zc checks it here."""
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")


def hide_bar(hidden: bool = False) -> dict:
    """tqdm keyword arguments for every zc progress bar: hidden when `hidden` or when bars_off()."""
    return {"disable": True} if hidden or bars_off() else {}


def step_generator(seed: int, stage: str, step: int, device="cpu") -> torch.Generator:
    """A generator that depends only on (seed, stage, step): a resumed run draws the same data
    and noise as an uninterrupted one."""
    salt = sum(ord(ch) * 31**i for i, ch in enumerate(stage)) % 1_000_003
    return torch.Generator(device).manual_seed(seed * 1_000_003 * 997 + salt * 1_000_003 + step)


def atomic_write(path: Path, write) -> None:
    """Write through a temp file and rename, so an interrupted save never leaves half a file.

    The temp name is unique per call (process id + random suffix): two writers of the same file
    (two processes, two threads) never rename each other's half-written file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left over when write() failed


def save_checkpoint(folder: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    state: dict) -> None:
    """modules -> model.safetensors, optimizer -> optimizer.pt, counters -> state.json, written into
    folder.new/ and swapped in whole: a process killed at any moment leaves either the previous
    checkpoint or this one (folder/, or folder.old/ during the swap), never a mix of the two."""
    import shutil

    from safetensors.torch import save_file

    folder = Path(folder)
    new, old = folder.with_name(folder.name + ".new"), folder.with_name(folder.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    tensors = {f"{name}.{k}": v.detach().contiguous().cpu()
               for name, m in modules.items() for k, v in m.state_dict().items()}
    save_file(tensors, str(new / "model.safetensors"))
    torch.save(optimizer.state_dict(), new / "optimizer.pt")
    (new / "state.json").write_text(json.dumps(state, indent=2))
    if (folder / "state.json").is_file():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    else:  # none yet, or a kill fell between the renames (folder.old is then the whole one): keep .old
        shutil.rmtree(folder, ignore_errors=True)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def _complete(folder: Path) -> Path:
    """folder, or folder.old when a kill fell between the two renames of save_checkpoint's swap."""
    folder = Path(folder)
    old = folder.with_name(folder.name + ".old")
    return old if not (folder / "state.json").is_file() and (old / "state.json").is_file() else folder


def load_checkpoint(folder: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer | None) -> dict:
    from safetensors.torch import load_file

    folder = _complete(folder)
    tensors = load_file(str(folder / "model.safetensors"))
    for name, m in modules.items():
        prefix = name + "."
        m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    return json.loads((folder / "state.json").read_text())


def has_checkpoint(folder: Path) -> bool:
    return (_complete(folder) / "state.json").is_file()
