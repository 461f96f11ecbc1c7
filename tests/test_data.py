"""The data path at any scale: pairs made or read per batch (memory O(batch)), and the frozen SD's
encodings cached once on disk, refused when they belong to other data or another model."""
import json
import resource

import pytest
import torch
from PIL import Image

import zc
from zc import train as zt
from zc.latent_cache import LatentCache
from zc.world.pairs import PairedData


@pytest.fixture(scope="module")
def pipe():
    return zc.load_sd()


def test_a_large_generated_set_costs_nothing_until_read():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    big = PairedData.generate(50_000, size=512, seed=0)  # the real fill50k's size: 78.6 GB if held as pixels
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(big) == 50_000 and grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"
    b = big.batch([3, 49_999])
    assert b["targets"].shape == b["sources"].shape == (2, 3, 512, 512) and b["targets"].dtype == torch.uint8
    again = PairedData.generate(50_000, size=512, seed=0).batch([49_999])  # deterministic by (seed, index)
    assert torch.equal(again["sources"][0], b["sources"][1]) and again["prompts"][0] == b["prompts"][1]
    with pytest.raises(ValueError, match="too many to stack"):
        big.targets


def test_batches_equal_items_and_the_dataloader_reads_whole_batches():
    ds = PairedData.generate(10, seed=2)
    b = ds.batch([4, 1])
    item = ds[1]
    assert torch.equal(b["sources"][1].float() / 255, item["conditioning"]) and b["prompts"][1] == item["prompt"]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=lambda x: x)
    first = next(iter(loader))  # __getitems__: one call per batch
    assert first["targets"].shape == (4, 3, 64, 64)


def test_a_folder_is_read_lazily(tmp_path, monkeypatch):
    PairedData.generate(40, seed=3).save(tmp_path)
    import zc.world.pairs as f

    reads = []
    original = f._rgb
    monkeypatch.setattr(f, "_rgb", lambda x: reads.append(x) or original(x))
    ds = PairedData.load(tmp_path)
    assert len(ds) == 40 and len(reads) == 2  # only the first pair, for its size
    ds.batch([7, 8], targets=False)
    assert len(reads) == 4 and all("source" in str(r) for r in reads[2:])


def test_datasets_library_dataset_is_indexed_not_copied():
    datasets = pytest.importorskip("datasets")
    src = PairedData.generate(6, seed=4)
    hf = datasets.Dataset.from_dict({
        "image": [Image.fromarray(t.permute(1, 2, 0).numpy()) for t in src.targets],
        "conditioning_image": [Image.fromarray(s.permute(1, 2, 0).numpy()) for s in src.sources],
        "text": src.prompts}).cast_column("image", datasets.Image()).cast_column("conditioning_image", datasets.Image())
    ds = PairedData.from_columns(hf)
    assert ds.rows is hf and ds.prompts == src.prompts
    assert torch.equal(ds.batch([5, 0])["targets"], src.targets[[5, 0]])
    assert ds.fingerprint()["columns"] == hf._fingerprint


class Interrupted(Exception):
    pass


def test_cache_builds_once_resumes_and_refuses_other_data_or_models(pipe, tmp_path):
    data = PairedData.generate(12, seed=5)
    whole = LatentCache(tmp_path / "whole", data, pipe, "cpu", torch.float32, batch=4)

    class Flaky:  # dies on the second batch of targets, like a killed job
        def __init__(self):
            self.calls = 0

        def __getattr__(self, name):
            return getattr(data, name)

        def __len__(self):
            return len(data)

        def batch(self, idx, **kw):
            self.calls += 1
            if self.calls == 2:
                raise Interrupted
            return data.batch(idx, **kw)

    with pytest.raises(Interrupted):
        LatentCache(tmp_path / "cut", Flaky(), pipe, "cpu", torch.float32, batch=4)
    assert json.loads((tmp_path / "cut" / "progress.json").read_text())["done"] == 4
    resumed = LatentCache(tmp_path / "cut", data, pipe, "cpu", torch.float32, batch=4)
    idx = list(range(12))
    assert torch.equal(resumed.latents_for(idx, "cpu"), whole.latents_for(idx, "cpu"))
    with torch.no_grad():
        direct = pipe.vae.encode(data.targets.float() / 127.5 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
    torch.testing.assert_close(whole.latents_for(idx, "cpu"), direct, rtol=1e-5, atol=1e-5)
    ids = whole.prompt_ids[[0, 1]]
    text = zc.tinysd.encode_prompts(pipe.tokenizer, pipe.text_encoder, data.prompts[:2])
    torch.testing.assert_close(whole.text_for(ids, "cpu"), text.detach(), rtol=1e-5, atol=1e-5)

    with pytest.raises(ValueError, match="made from other data"):
        LatentCache(tmp_path / "whole", PairedData.generate(12, seed=6), pipe, "cpu", torch.float32)
    with pytest.raises(ValueError, match="made from other model"):
        LatentCache(tmp_path / "whole", data, zc.load_sd("tinysd-shaded"), "cpu", torch.float32)


def test_training_on_the_fly_matches_the_cache(pipe, tmp_path, monkeypatch):
    for var in ("ZC_RUNS", "ZC_CACHE"):  # the default: the cache inside the run's folder
        monkeypatch.delenv(var, raising=False)
    kw = dict(steps=3, batch=2, n_train=8, eval_every=0, device="cpu")
    cached = zt.train(zt.TrainConfig(out=str(tmp_path / "a"), **kw), pipe=pipe)
    fly = zt.train(zt.TrainConfig(out=str(tmp_path / "b"), encode="fly", **kw), pipe=pipe)
    assert (tmp_path / "a" / "cache" / "latents.npy").is_file() and not (tmp_path / "b" / "cache").exists()
    a = [h["loss"] for h in cached.history if "loss" in h]
    b = [h["loss"] for h in fly.history if "loss" in h]
    assert a == pytest.approx(b, rel=1e-4)
    reuse = zt.train(zt.TrainConfig(out=str(tmp_path / "c"), cache=str(tmp_path / "a" / "cache"), **kw), pipe=pipe)
    assert [h["loss"] for h in reuse.history if "loss" in h] == a and not (tmp_path / "c" / "cache").exists()


def test_runs_on_a_drive_keep_their_cache_on_local_disk_named_by_its_contents(pipe, tmp_path, monkeypatch):
    """$ZC_RUNS (Colab: Google Drive) gets the checkpoints and the ControlNet; the latent cache (hundreds of MB
    at 512 px) goes to $ZC_CACHE (else the temp folder), in a folder named by its data and encoders: the same
    data finds it again, other data gets its own."""
    monkeypatch.setenv("ZC_RUNS", str(tmp_path / "drive"))
    monkeypatch.setenv("ZC_CACHE", str(tmp_path / "local"))
    kw = dict(steps=2, batch=2, n_train=8, eval_every=0, device="cpu")
    first = zt.train(zt.TrainConfig(out=str(tmp_path / "drive" / "a"), **kw), pipe=pipe)
    assert (tmp_path / "drive" / "a" / "controlnet").is_dir() and not (tmp_path / "drive" / "a" / "cache").exists()
    (folder,) = (tmp_path / "local").iterdir()
    assert (folder / "latents.npy").is_file()
    again = zt.train(zt.TrainConfig(out=str(tmp_path / "drive" / "b"), **kw), pipe=pipe)
    assert [p.name for p in (tmp_path / "local").iterdir()] == [folder.name]  # found again, not rebuilt elsewhere
    assert [h["loss"] for h in again.history] == [h["loss"] for h in first.history]
    zt.train(zt.TrainConfig(out=str(tmp_path / "drive" / "c"), **{**kw, "n_train": 12}), pipe=pipe)
    assert len(list((tmp_path / "local").iterdir())) == 2  # other data: its own folder, no stale-cache error


def test_training_on_a_folder(pipe, tmp_path):
    PairedData.generate(8, seed=7).save(tmp_path / "data")
    r = zt.train(zt.TrainConfig(out=str(tmp_path / "o"), data=str(tmp_path / "data"), steps=2, batch=2,
                                eval_every=2, eval_n=2, eval_steps=2, device="cpu"), pipe=pipe)
    assert len([h for h in r.history if "loss" in h]) == 2 and (tmp_path / "o" / "controlnet").is_dir()


def test_training_draws_each_steps_latents_from_the_vae_posterior(pipe, tmp_path, monkeypatch):
    """Two steps on the same pair see different latents, spread as the VAE's posterior (TinySD was
    trained on draws, not on the mean); the cache and the model's own posterior agree."""
    from diffusers import DDPMScheduler

    seen = []
    real = DDPMScheduler.add_noise

    def record(self, original_samples, noise, timesteps):
        seen.append(original_samples.detach().clone())
        return real(self, original_samples, noise, timesteps)

    monkeypatch.setattr(DDPMScheduler, "add_noise", record)
    r = zt.train(zt.TrainConfig(out=str(tmp_path), steps=4, batch=16, n_train=1, eval_every=0, device="cpu"), pipe=pipe)
    draws = torch.cat(seen)  # (64, 4, h, w): one pair, 64 draws
    data = PairedData.generate(1, size=64, seed=0)
    with torch.no_grad():
        post = pipe.vae.encode(data.targets.float() / 127.5 - 1).latent_dist
    sf = pipe.vae.config.scaling_factor
    assert not torch.equal(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), post.mean[0] * sf, atol=4 * (post.std * sf).max().item() / 8, rtol=0)
    ratio = draws.std(0) / (post.std[0] * sf)  # per element, over 64 draws
    assert 0.85 < ratio.median() < 1.15, ratio.median()
    assert r.history[-1]["step"] == 3


def test_latent_mean_option_trains_on_the_mean_with_the_same_other_draws(pipe, tmp_path, monkeypatch):
    from diffusers import DDPMScheduler

    seen = {}
    real = DDPMScheduler.add_noise

    for latent in ("sample", "mean"):
        rows = seen.setdefault(latent, [])
        monkeypatch.setattr(DDPMScheduler, "add_noise",
                            lambda self, x, n, t, rows=rows: (rows.append((x.clone(), n.clone(), t.clone())),
                                                              real(self, x, n, t))[1])
        zt.train(zt.TrainConfig(out=str(tmp_path / latent), steps=2, batch=4, n_train=4, eval_every=0, device="cpu",
                                latent=latent, cache=str(tmp_path / "cache")), pipe=pipe)
    (xs, ns, ts), (xm, nm, tm) = seen["sample"][1], seen["mean"][1]
    assert torch.equal(ns, nm) and torch.equal(ts, tm)  # the same noise and timesteps: only the latent differs
    assert not torch.equal(xs, xm)
    with pytest.raises(ValueError, match="latent must be"):
        zt.train(zt.TrainConfig(out=str(tmp_path / "x"), steps=1, latent="median", device="cpu"), pipe=pipe)


def test_a_cache_of_means_only_is_refused(pipe, tmp_path):
    data = PairedData.generate(4, seed=5)
    LatentCache(tmp_path / "c", data, pipe, "cpu", torch.float32, batch=4)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    del meta["stores"]  # what zc before the fix wrote: no log-variance, means only
    (tmp_path / "c" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="older zc that kept only the VAE posterior's mean"):
        LatentCache(tmp_path / "c", data, pipe, "cpu", torch.float32, batch=4)


def test_step_batches_iid_and_epochs():
    from zc.train import StepBatches

    n, batch = 12, 4
    epochs = list(StepBatches(n, batch, seed=0, start=0, stop=6, mode="epochs"))
    first, second = sum(epochs[:3], []), sum(epochs[3:], [])
    assert sorted(first) == list(range(n)) and sorted(second) == list(range(n))  # each pair once per epoch
    assert first != second  # every epoch its own shuffle
    # a resumed sampler (start=4) reads exactly the batches an uninterrupted one reads there
    assert list(StepBatches(n, batch, seed=0, start=4, stop=6, mode="epochs")) == epochs[4:]
    straddle = list(StepBatches(10, 4, seed=1, start=0, stop=5, mode="epochs"))  # batches cross epoch ends
    assert sorted(sum(straddle, [])[:10]) == list(range(10)) and all(len(b) == 4 for b in straddle)
    iid = sum(StepBatches(n, batch, seed=0, start=0, stop=30), [])
    assert len(set(iid)) == n and max(iid.count(i) for i in range(n)) > 10  # with replacement: repeats
    with pytest.raises(ValueError, match="batches must be"):
        StepBatches(n, batch, 0, 0, 1, mode="sorted")

