"""The frozen SD's encodings of a training set, computed once and kept on disk.

SD is locked, so the VAE latent of each target image and the text features of each prompt never
change during ControlNet training: zc encodes them once (diffusers' train_controlnet.py encodes every
batch again, every step) and reads them back per batch. The cache lives on disk, not in RAM:

    folder/meta.json        what it was made from: the data's fingerprint and the model's
    folder/latents.npy      (N, 4, h, w) the VAE posterior's mean x scaling_factor, one row per pair
    folder/logvar.npy       (N, 4, h, w) its log-variance, shifted to the scaled latent (+ 2 ln scaling_factor)
    folder/text.npy         (U, L, D) text features of the U distinct prompts ("" included); an SD3's
                            without its always-zero T5 slot and padding (zc.sd3.compact_text)
    folder/prompt_ids.npy   (N,) row of text.npy for each pair
    folder/progress.json    pairs encoded so far (an interrupted encoding continues from there)

The VAE encodes an image to a distribution, not a point: SD (and TinySD) were trained on *draws* from
it, so every training step draws its latents again, mean + std x eps with eps from the step's own
generator (latents_for(idx, device, generator)): what diffusers' train_controlnet.py does by encoding
every batch, at the cost of one extra array (the log-variance: twice the disk of the mean alone).

Rows are read with one positioned read each (os.pread), never memory-mapped whole, so a training
step costs O(batch) memory whatever N is. A cache made from other data or another model is refused
with the difference named; so is one made by zc before 0.2, which kept the posterior's mean only.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .sd3 import compact_text, compacts_text, denoiser, expand_text, scale_latents, text_features
from .training_utils import atomic_write, hide_bar, posterior_draw

__all__ = ["FILES", "STORES", "model_fingerprint", "default_folder", "LatentCache"]

FILES = ("meta.json", "latents.npy", "logvar.npy", "text.npy", "prompt_ids.npy")
STORES = "VAE posterior mean and log-variance, x scaling_factor"  # what a cache of this zc holds (meta.json)
SD3_TEXT = "CLIP tokens + pooled (zc.sd3.compact_text)"  # how an SD3's text is stored (meta.json)


def model_fingerprint(pipe, dtype: torch.dtype) -> dict:
    """What identifies the encoders: their configs and a checksum of some of their weights."""
    def checksum(module):
        ps = list(module.parameters())
        return round(float(sum(p.detach().double().abs().sum() for p in ps[:2] + ps[-2:])), 4)

    return {"vae": dict(pipe.vae.config.items()) | {"checksum": checksum(pipe.vae.encoder)},
            "text_encoder": {"hidden_size": pipe.text_encoder.config.hidden_size,
                             "checksum": checksum(pipe.text_encoder)},
            "max_tokens": pipe.tokenizer.model_max_length, "dtype": str(dtype).removeprefix("torch.")} | (
        {"text_encoder_2": {"checksum": checksum(pipe.text_encoder_2)}}  # an SD3's second CLIP
        if getattr(pipe, "text_encoder_2", None) is not None else {}) | (
        {"text_encoder_3": {"checksum": checksum(pipe.text_encoder_3)}}  # an SD3 loaded with its T5
        if getattr(pipe, "text_encoder_3", None) is not None else {})


def _plain(x):
    return json.loads(json.dumps(x, default=str))  # tuples -> lists etc., as meta.json stores them


def _meta(data, pipe, dtype: torch.dtype) -> dict:
    """What a cache holds: the data, the encoders, the stored arrays (meta.json; default_folder's name)."""
    return _plain({"data": data.fingerprint(), "model": model_fingerprint(pipe, dtype), "stores": STORES} | (
        {"text": SD3_TEXT} if compacts_text(pipe) else {}))


def default_folder(out: str | Path, data, pipe, dtype: torch.dtype) -> Path:
    """Where a run keeps its cache when it names none: `out`/cache, unless the runs live on a network drive
    ($ZC_RUNS, e.g. Google Drive in Colab) or $ZC_CACHE names a place: then on local disk ($ZC_CACHE, else
    the system's temp folder /zc-cache), in a folder named by what it holds (the data's and the encoders'
    fingerprints), so a later run reuses it and never finds it stale. Hundreds of MB of small writes through
    Drive are slow; checkpoints stay in `out`."""
    root = os.environ.get("ZC_CACHE") or (os.environ.get("ZC_RUNS") and Path(tempfile.gettempdir()) / "zc-cache")
    if not root:
        return Path(out) / "cache"
    key = hashlib.sha256(json.dumps(_meta(data, pipe, dtype), sort_keys=True).encode()).hexdigest()[:16]
    return Path(root).expanduser() / key


class LatentCache:
    """Open (or build, or finish building) the cache of `data` under `pipe` in `folder`."""

    def __init__(self, folder: str | Path, data, pipe, device, dtype: torch.dtype, batch: int = 64):
        from tqdm.auto import tqdm

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = _meta(data, pipe, dtype)
        meta_path = self.folder / "meta.json"
        if meta_path.is_file():
            theirs = json.loads(meta_path.read_text())
            if theirs.get("stores") != STORES:
                raise ValueError(f"latent cache {self.folder} was made by an older zc that kept only the VAE posterior's "
                                 "mean (training needs draws from it): delete that folder, it is encoded again once")
            for part in ("data", "model"):
                if theirs.get(part) != meta[part]:
                    diff = {k: (theirs.get(part, {}).get(k), v) for k, v in meta[part].items()
                            if theirs.get(part, {}).get(k) != v}
                    raise ValueError(
                        f"latent cache {self.folder} was made from other {part} (cached vs now: {diff}); "
                        "delete that folder or give the run another --cache folder")
            if theirs.get("text") != meta.get("text"):
                raise ValueError(f"latent cache {self.folder} was made by an older zc that stored an SD3's text with its "
                                 "zero padding: delete that folder, it is encoded again once")
        else:
            atomic_write(meta_path, lambda p: p.write_text(json.dumps(meta, indent=1)))

        n = len(data)
        h, c = denoiser(pipe).config.sample_size, denoiser(pipe).config.in_channels
        self.np_dtype = np.float32 if dtype == torch.float32 else np.float16  # bf16: stored as fp16 (numpy)
        self.dtype = dtype
        unique = sorted(set(data.prompts) | {""})
        ids = {p: i for i, p in enumerate(unique)}
        self.empty_id = ids[""]
        self.pipe = pipe  # expand_text's sizes
        self.prompt_ids = torch.tensor([ids[p] for p in data.prompts])
        progress = self.folder / "progress.json"
        done = json.loads(progress.read_text())["done"] if progress.is_file() else -1
        if done < 0:  # a new cache: the text features first (one row per distinct prompt), then the latents
            np.save(self.folder / "prompt_ids.npy", self.prompt_ids.numpy())
            with torch.no_grad():
                shape = (len(unique), *compact_text(pipe, text_features(pipe, [""])).shape[1:])  # SD: (77, 768)
            _create(self.folder / "text.npy", shape, self.np_dtype)
            self.text = _Rows(self.folder / "text.npy")
            for i in tqdm(range(0, len(unique), batch), desc="encoding prompts (once)", leave=False,
                          **hide_bar(len(unique) <= batch)):
                with torch.no_grad():
                    t = compact_text(pipe, text_features(pipe, unique[i:i + batch]))
                self.text.write(i, t.float().cpu().numpy())
            _create(self.folder / "latents.npy", (n, c, h, h), self.np_dtype)
            _create(self.folder / "logvar.npy", (n, c, h, h), self.np_dtype)
            done = 0
        self.latents = _Rows(self.folder / "latents.npy")
        self.logvar = _Rows(self.folder / "logvar.npy")
        self.text = _Rows(self.folder / "text.npy")
        if done < n:
            bar = tqdm(range(done, n, batch), desc="encoding targets with the VAE (once)", leave=False, **hide_bar())
            for i in bar:
                idx = range(i, min(i + batch, n))
                x = data.batch(idx, sources=False)["targets"].to(device, dtype) / 127.5 - 1
                sf = pipe.vae.config.scaling_factor
                with torch.no_grad():
                    post = pipe.vae.encode(x).latent_dist
                self.latents.write(i, scale_latents(pipe.vae, post.mean).float().cpu().numpy().astype(self.np_dtype))
                self.logvar.write(i, (post.logvar + 2 * math.log(sf)).float().cpu().numpy().astype(self.np_dtype))
                atomic_write(progress, lambda p, k=idx.stop: p.write_text(json.dumps({"done": k})))
        self.size = n

    def latents_for(self, idx, device, generator: torch.Generator | None = None, mean: bool = False) -> torch.Tensor:
        """(B, 4, h, w) scaled latents of pairs `idx`: a draw from each one's VAE posterior, mean + std x
        eps with eps ~ N(0, 1) from `generator` (CPU); without a generator, or with mean=True, the
        posterior's mean (mean=True still takes eps from the generator, so what it draws next is the same)."""
        mu = torch.from_numpy(self.latents.read(idx)).to(device, self.dtype)
        std = None if generator is None or mean else \
            torch.from_numpy(self.logvar.read(idx)).to(device, torch.float32).mul(0.5).exp().to(self.dtype)
        return posterior_draw(mu, std, generator, use_mean=mean)

    def text_for(self, prompt_ids: torch.Tensor, device) -> torch.Tensor:
        """(B, L, D) text features of the pairs' prompts, as zc.sd3.text_features gives them."""
        return expand_text(self.pipe, torch.from_numpy(self.text.read(prompt_ids.tolist())).to(device, self.dtype))


def _create(path: Path, shape, dtype) -> None:
    """An .npy file of `shape`, its data zero-filled lazily (a sparse file): rows are written later."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)


class _Rows:
    """Row access to an .npy file by positioned reads and writes (no mapping, no whole-file load)."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            np.lib.format.read_magic(f)
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            self.offset = f.tell()
        self.path, self.shape, self.dtype = path, shape, dtype
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    def read(self, idx) -> np.ndarray:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            rows = [os.pread(fd, self.row_bytes, self.offset + int(i) * self.row_bytes) for i in idx]
        finally:
            os.close(fd)
        return np.frombuffer(b"".join(rows), dtype=self.dtype).reshape(len(rows), *self.shape[1:]).copy()

    def write(self, start: int, rows: np.ndarray) -> None:
        with open(self.path, "r+b") as f:
            f.seek(self.offset + start * self.row_bytes)
            f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
