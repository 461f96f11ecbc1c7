"""Small pieces the training loops share: device choice, per-step seeds, atomic checkpoints, the data
order by step, resuming, the prediction target and the posterior draw."""
from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path

import torch
from torch import nn

__all__ = ["pick_device", "bars_off", "hide_bar", "step_generator", "atomic_write", "save_checkpoint",
    "load_checkpoint", "has_checkpoint", "prediction_target", "TIMESTEP_SCHEDULES", "draw_timesteps",
    "posterior_draw", "StepBatches",
    "whole_batches", "BatchReader", "RESUMABLE_FIELDS_MAY_CHANGE", "check_resumable", "load_snapshots",
    "save_grid", "trackers"]


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


def prediction_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict from z_t: ε (SD 1.x), v = √ᾱ_t ε − √(1−ᾱ_t) z_0, or z_0 itself,
    by the scheduler's prediction_type."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    if kind == "sample":
        return latents
    raise ValueError(f"unsupported prediction_type {kind!r}")


TIMESTEP_SCHEDULES = ("uniform", "cubic")  # the paper's (SD's) draw; T2I-Adapter's (its §3.4)


def draw_timesteps(n: int, num_train_timesteps: int, generator: torch.Generator, schedule: str = "uniform"):
    """n training timesteps: uniform over {0, ..., T−1}, or T2I-Adapter's cubic schedule
    t = ⌊(1 − u³)·T⌋, u ~ U(0, 1) (half of them above t = 0.875 T instead of 0.5 T)."""
    if schedule == "uniform":
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)
    if schedule == "cubic":
        u = torch.rand(n, generator=generator)
        return ((1 - u**3) * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)
    raise ValueError(f"timesteps must be 'uniform' or 'cubic', got {schedule!r}")


def posterior_draw(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None,
                   use_mean: bool = False) -> torch.Tensor:
    """z = μ + σ ε, a draw from the VAE posterior N(μ, σ²), ε ~ N(0, I) from `generator` on the CPU
    (so a run on any device draws the same); use_mean: μ, still drawing ε, so that what is drawn
    after it stays the same. Without a generator: μ."""
    if generator is None:
        return mean
    eps = torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
    return mean if use_mean else mean + std * eps


class StepBatches(torch.utils.data.Sampler):
    """Index batches by step: batch k depends only on (seed, k), so a resumed run reads the same pairs.
    mode "iid": each batch drawn with replacement; "epochs": positions k*batch ... (k+1)*batch of the
    concatenated epochs, each epoch its own permutation (what a shuffling DataLoader does)."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, mode: str = "iid"):
        if mode not in ("iid", "epochs"):
            raise ValueError(f"batches must be 'iid' or 'epochs', got {mode!r}")
        self.n, self.batch, self.seed, self.start, self.stop, self.mode = n, batch, seed, start, stop, mode
        self._perms: dict[int, list[int]] = {}

    def _epoch(self, e: int) -> list[int]:
        """Epoch e's permutation, drawn once (each step of the epoch reads it)."""
        if e not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k >= e - 1}  # a batch spans at most two
            self._perms[e] = torch.randperm(self.n, generator=step_generator(self.seed, "epoch", e)).tolist()
        return self._perms[e]

    def __iter__(self):
        for k in range(self.start, self.stop):
            if self.mode == "iid":
                yield torch.randint(self.n, (self.batch,), generator=step_generator(self.seed, "data", k)).tolist()
                continue
            positions = range(k * self.batch, (k + 1) * self.batch)
            yield [self._epoch(p // self.n)[p % self.n] for p in positions]

    def __len__(self) -> int:
        return self.stop - self.start


def whole_batches(batch):
    return batch  # BatchReader already returns whole batches


class BatchReader(torch.utils.data.Dataset):
    """What one step reads from the data: the pairs' condition images (and their targets when
    encoding on the fly), fetched per batch: memory O(batch)."""

    def __init__(self, data, targets: bool):
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, idx):
        return {**self.data.batch(idx, targets=self.targets), "idx": torch.tensor(idx)}


RESUMABLE_FIELDS_MAY_CHANGE = ("steps", "eval_every", "eval_dense", "eval_n", "eval_steps", "checkpoint_every",
                               "device", "report_to", "num_workers", "out", "cache")  # a resumed run may differ in these


def check_resumable(out: Path, cfg) -> None:
    """A checkpoint in `out` must come from the same recipe: resuming it with another batch, learning
    rate, model or data would silently mix two runs. ValueError names the differences and the fixes."""
    saved = out / "config.json"
    if not (has_checkpoint(out / "checkpoint") and saved.is_file()):
        return
    theirs = json.loads(saved.read_text())
    diff = {k: (theirs.get(k), v) for k, v in dataclasses.asdict(cfg).items()
            if k not in RESUMABLE_FIELDS_MAY_CHANGE and k in theirs and theirs[k] != v}
    if diff:
        said = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"{out} holds a run with other settings ({said}): resume it with its settings, delete "
                         "that folder, or train into another (out=..., or ZC_RUNS for the chapters)")
    done = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    if done > cfg.steps:  # a run never goes back: its weights at cfg.steps are gone
        raise ValueError(f"{out} holds a run already at step {done}, past steps={cfg.steps}: ask for steps >= {done} "
                         "to continue it, or train into another folder (out=..., or ZC_RUNS for the chapters)")


def load_snapshots(out: Path, upto: int) -> dict[int, torch.Tensor]:
    """The validation images of a resumed run's earlier evaluations, read back from the grids
    save_grid wrote (8 per step, as 8-bit PNG: equal to the uninterrupted run's to 1/255)."""
    import numpy as np
    from PIL import Image

    snaps = {}
    for f in sorted(out.glob("validation_*.png")):
        step = int(f.stem.split("_")[1])
        if step <= upto:
            row = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255
            h = row.shape[1]
            snaps[step] = torch.stack(row.split(h, dim=2))  # (3, h, 8h) -> (8, 3, h, h)
    return snaps


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    """Validation images side by side in one PNG."""
    from PIL import Image

    n = min(len(images), columns)
    row = (images[:n].clamp(0, 1) * 255).round().to(torch.uint8).permute(2, 0, 3, 1).reshape(images.shape[-2], -1, 3)
    Image.fromarray(row.numpy()).save(path)


def trackers(report_to: str) -> list[str] | None:
    """accelerate trackers from "--report-to tensorboard" (comma-separated; "" = none)."""
    from accelerate.utils import LoggerType

    names = [n.strip() for n in report_to.split(",") if n.strip()]
    known = sorted(t.value for t in LoggerType)
    for n in names:
        if n not in known:
            raise ValueError(f"--report-to {n!r}: unknown tracker; accelerate knows {known}")
    if "tensorboard" in names:
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            raise ValueError("--report-to tensorboard needs the tensorboard package: pip install tensorboard")
    return names or None
