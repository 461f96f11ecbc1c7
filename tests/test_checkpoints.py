"""Which ControlNet a chapter gets for an SD (zc.study.checkpoints), the public-checkpoint path through a
local hub cache, and the training run a student can interrupt: killed, stopped or resumed with
other settings."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import huggingface_hub.constants as hub
import pytest
import torch

import zc
from zc import train as zt
from zc.sd import build_sd15_standin
from zc.study import checkpoints, zoo
from zc.training_utils import has_checkpoint, load_checkpoint, save_checkpoint
from zc.world import conditions


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return build_sd15_standin(tmp_path_factory.mktemp("sd") / "mini", scale="mini", dtype=torch.float32)


@pytest.fixture(scope="module")
def mini_pipe(mini):
    return zc.load_sd(mini)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty hub cache, offline: what a machine without network has."""
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("ZC_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("ZC_ZOO", raising=False)
    return tmp_path / "hub"


def test_tinysd_gets_the_shipped_controlnets(offline_hub):
    pipe = zc.load_sd()
    found = checkpoints.find(pipe, "fill50k", model="tinysd")
    assert found.source == "shipped" and Path(found.where) == zc.sd.FILL50K_CONTROLNET
    assert checkpoints.find(pipe, "scribble", model="tinysd-shaded").where == str(zoo.folder("scribble"))
    found, missing = checkpoints.available(pipe, "tinysd")
    assert list(found) == zoo.shipped() and not missing


def test_a_missing_controlnet_names_both_ways(mini, mini_pipe, offline_hub):
    with pytest.raises(FileNotFoundError) as e:
        checkpoints.find(mini_pipe, "fill50k", model=str(mini))
    text = str(e.value)
    assert "not in the hub cache" in text  # why the public one was not used
    assert "chapter 6" in text and str(checkpoints.run_folder(mini, "fill50k")) in text  # way 1: train it
    assert "lllyasviel/control_v11p_sd15_scribble" in text  # way 2: the public checkpoint
    with pytest.raises(FileNotFoundError, match="skeletons of people"):  # keypoints: no public model fits
        checkpoints.find(mini_pipe, "keypoints", model=str(mini))


def test_public_checkpoints_load_offline_from_a_hub_cache(mini, mini_pipe, offline_hub):
    checkpoints.standin_hub_cache(offline_hub, mini_pipe)
    repo = offline_hub / "models--lllyasviel--control_v11p_sd15_seg"
    assert (repo / "refs" / "main").is_file() and list((repo / "snapshots").glob("*/config.json"))
    found = checkpoints.find(mini_pipe, "silhouette", model=str(mini))
    assert found.source == "public" and found.where == "lllyasviel/control_v11p_sd15_seg"
    assert found.convert is checkpoints.to_ade20k
    expected = zc.ControlNet.from_pretrained(next((repo / "snapshots").iterdir()))
    assert all(torch.equal(v, found.controlnet.state_dict()[k]) for k, v in expected.state_dict().items())
    assert checkpoints.find(mini_pipe, "fill50k", model=str(mini)).where == "lllyasviel/control_v11p_sd15_scribble"
    found, missing = checkpoints.available(mini_pipe, str(mini))
    assert set(found) == {"outline", "silhouette", "lowres", "scribble"} and set(missing) == {"keypoints", "palette"}


def test_a_public_checkpoint_for_another_unet_is_refused_before_its_weights(mini, mini_pipe, offline_hub):
    checkpoints.standin_hub_cache(offline_hub, zc.load_sd(), ["lllyasviel/control_v11p_sd15_scribble"])  # TinySD's
    for f in offline_hub.rglob("diffusion_pytorch_model.safetensors"):
        f.unlink()  # only config.json is needed to refuse it
    with pytest.raises(FileNotFoundError, match="is for SD 1.5's UNet and this SD's differs"):
        checkpoints.find(mini_pipe, "outline", model=str(mini))


def test_chapter_6s_run_comes_before_the_public_one_and_an_explicit_one_first(mini, mini_pipe, offline_hub):
    checkpoints.standin_hub_cache(offline_hub, mini_pipe)
    torch.manual_seed(1)
    mine = zc.ControlNet.for_pipeline(mini_pipe)
    mine.save_pretrained(checkpoints.run_folder(mini, "fill50k") / "controlnet")
    assert checkpoints.run_folder(mini, "fill50k") == offline_hub.parent / "runs" / "mini" / "fill50k-controlnet"
    found = checkpoints.find(mini_pipe, "fill50k", model=str(mini))
    assert found.source == "trained" and "chapter 6 trained" in str(found)
    explicit = offline_hub.parent / "mine"
    mine.save_pretrained(explicit)
    assert checkpoints.find(mini_pipe, "fill50k", model=str(mini), explicit=explicit).source == "explicit"


def test_model_slugs():
    assert checkpoints.model_slug("stable-diffusion-v1-5/stable-diffusion-v1-5") == \
        "stable-diffusion-v1-5--stable-diffusion-v1-5"
    assert checkpoints.model_slug("tinysd") == "tinysd"
    assert checkpoints.model_slug("/data/models/my sd/") == "my-sd"


def test_silhouettes_become_ade20k_segmentation_maps():
    scenes = zoo.test_set("silhouette", 8, 64).scenes
    seg = checkpoints.to_ade20k(conditions.draw("silhouette", scenes, 64))
    colours = {tuple(c) for c in (seg * 255).round().int().permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    palette = {checkpoints.ADE20K[k] for k in ("wall", *checkpoints.KIND_CLASSES)}
    assert colours <= palette and checkpoints.ADE20K["wall"] in colours
    for i, k in enumerate(scenes.kind.tolist()):  # each shape in its kind's class colour, at its place
        centre = (scenes.center[i] * 64).long().tolist()
        pixel = tuple((seg[i, :, centre[1], centre[0]] * 255).round().int().tolist())
        assert pixel == checkpoints.ADE20K[checkpoints.KIND_CLASSES[k]]


# --- the training run a student interrupts ------------------------------------------------------------
CFG = dict(steps=6, batch=2, n_train=16, eval_every=3, eval_n=2, eval_steps=2, checkpoint_every=100, device="cpu")


def _weights(r):
    return {k: v.clone() for k, v in r.module.state_dict().items()}


def test_an_interrupted_kernel_keeps_its_steps_and_resumes_exactly(tmp_path, monkeypatch):
    pipe = zc.load_sd()
    straight = zt.train(zt.TrainConfig(out=str(tmp_path / "a"), **CFG), pipe=pipe)
    real = zt.step_generator

    def interrupt_at_step_4(seed, stage, step, *a):
        if stage == "controlnet" and step == 4:
            raise KeyboardInterrupt
        return real(seed, stage, step, *a)

    c = zt.TrainConfig(out=str(tmp_path / "b"), **CFG)
    monkeypatch.setattr(zt, "step_generator", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        zt.train(c, pipe=pipe)
    assert json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["step"] == 4  # no step lost
    monkeypatch.setattr(zt, "step_generator", real)
    resumed = zt.train(c, pipe=pipe)
    assert resumed.start_step == 4
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(resumed.snapshots) == sorted(straight.snapshots) == [1, 2, 3, 6]
    for s in (1, 2, 3):  # the evaluations before the interrupt come back from their PNG grids
        assert (resumed.snapshots[s] - straight.snapshots[s].clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6


def test_a_run_resumed_with_other_settings_is_refused(tmp_path):
    pipe = zc.load_sd()
    zt.train(zt.TrainConfig(out=str(tmp_path), **CFG), stop_after=2, pipe=pipe)
    with pytest.raises(ValueError, match=r"other settings \(batch: 2 there, 4 now\)"):
        zt.train(zt.TrainConfig(out=str(tmp_path), **{**CFG, "batch": 4}), pipe=pipe)
    with pytest.raises(ValueError, match="already at step 2, past steps=1"):  # fewer than done: weights gone
        zt.train(zt.TrainConfig(out=str(tmp_path), **{**CFG, "steps": 1}), pipe=pipe)
    zt.train(zt.TrainConfig(out=str(tmp_path), **{**CFG, "steps": 8}), pipe=pipe)  # more steps: allowed


def test_fp16_on_a_cpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fp16.*on a CPU"):
        zt.train(zt.TrainConfig(out=str(tmp_path), mixed_precision="fp16", **CFG), pipe=zc.load_sd())
    assert zc.sd.precision("cpu") == "no"


def test_bf16_only_on_cards_that_compute_in_it(monkeypatch):
    """A T4 (7.5) or V100 (7.0) trains in fp16: torch.cuda.is_bf16_supported() says True there too
    (emulated bf16, many times slower), so precision() must not ask it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 answers by default
    for capability, expected in [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((8, 9), "bf16"),
                                 ((9, 0), "bf16")]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert zc.sd.precision("cuda") == expected, capability
        assert zc.sd.precision("auto") == expected
    assert zc.sd.precision("cpu") == "no"


def test_cuda_where_torch_sees_no_gpu_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"'cuda' \(ZC_DEVICE\) but this torch sees no GPU.*set ZC_DEVICE=cpu"):
        zc.load_sd(device="cuda")
    with pytest.raises(ValueError, match="sees no GPU"):  # not a silent fall back to the CPU
        zt.train(zt.TrainConfig(out=str(tmp_path), **{**CFG, "device": "cuda"}))
    with pytest.raises(ValueError, match="sees no GPU"):
        zc.sd.precision("cuda:0")
    assert zc.sd.precision("auto") == "no"  # auto on a machine without a GPU: the CPU, no error


def test_a_large_sd_loaded_on_the_cpu_warns(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TinySD on the CPU is the book's default: no warning
        zc.load_sd()
    monkeypatch.setattr(zc.sd, "BIG_ON_CPU", 1_000_000)  # TinySD's 2.7M UNet counted as big
    with pytest.warns(UserWarning, match="on the CPU.*set ZC_DEVICE=cuda"):
        zc.load_sd()


def test_a_kill_between_the_checkpoint_swaps_renames_leaves_a_whole_checkpoint(tmp_path):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    save_checkpoint(tmp_path / "checkpoint", {"net": net}, opt, {"step": 5})
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.old")  # the state between the two renames
    assert has_checkpoint(tmp_path / "checkpoint")
    assert load_checkpoint(tmp_path / "checkpoint", {"net": net}, opt)["step"] == 5
    save_checkpoint(tmp_path / "checkpoint", {"net": net}, opt, {"step": 6})  # the next save completes the swap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_killed_training_process_resumes_to_the_uninterrupted_weights(tmp_path):
    """SIGKILL (a Colab disconnect): nothing is saved at the kill; the rerun resumes from the last
    periodic checkpoint and ends with the weights of a run never interrupted."""
    def cmd(out):
        return [sys.executable, "-m", "zc.train", "--preset", "tiny", "--steps", "60", "--checkpoint-every", "5",
                "--eval-every", "0", "--device", "cpu", "--out", str(out)]

    env = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run(cmd(tmp_path / "straight"), check=True, capture_output=True, env=env)
    p = subprocess.Popen(cmd(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = tmp_path / "killed" / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (state.is_file() and json.loads(state.read_text())["step"] >= 15):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "killed" / "controlnet").exists(), "the run finished before the kill: nothing tested"
    subprocess.run(cmd(tmp_path / "killed"), check=True, capture_output=True, env=env)
    a = zc.ControlNet.from_pretrained(tmp_path / "straight" / "controlnet").state_dict()
    b = zc.ControlNet.from_pretrained(tmp_path / "killed" / "controlnet").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_importing_zc_prints_no_library_notices():
    r = subprocess.run([sys.executable, "-c", "import zc; zc.load_sd()"], capture_output=True, text=True,
                       env={**os.environ, "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    assert r.returncode == 0, r.stderr
    assert "torchvision" not in r.stderr, r.stderr


def test_a_run_with_gradient_accumulation_resumes_to_the_uninterrupted_weights(tmp_path):
    """diffusers #3467 (book/troubleshooting.md): with accumulation a resume must land on the optimiser step it
    stopped at and read the same micro-batches as a run that never stopped; "auto" precision is "no" on a CPU."""
    pipe = zc.load_sd()
    cfg = {**CFG, "grad_accum": 2, "eval_every": 0, "mixed_precision": "auto"}
    straight = zt.train(zt.TrainConfig(out=str(tmp_path / "a"), **cfg), pipe=pipe)
    c = zt.TrainConfig(out=str(tmp_path / "b"), **cfg)
    assert zt.train(c, stop_after=3, pipe=pipe) is None
    assert json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["step"] == 3
    resumed = zt.train(c, pipe=pipe)
    assert resumed.start_step == 3 and [h["step"] for h in resumed.history] == list(range(cfg["steps"]))
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(p.dtype == torch.float32 for p in resumed.module.parameters())


def test_budgets_count_what_the_loop_does_and_say_what_they_assume():
    """The GPU student's budget (book/troubleshooting.md, chapters 6 and 13): evaluations counted from
    the run's config as the loop makes them (CFG's run evaluates at steps 1, 2, 3 and 6, the snapshots of
    the interrupted-run test), and a table that says its estimates' assumptions."""
    from zc.study import budget

    assert zt.evaluations(zt.TrainConfig(**CFG)) == 4
    assert zt.evaluations(zt.TrainConfig.preset("sd15")) == 29  # 20 every 500 steps + 9 dense before the first
    assert zt.evaluations(zt.TrainConfig.preset("sd15", eval_dense=False), start=5000) == 10
    text = budget.table(train_steps=100, batch=4, evals=2, checkpointing=True)
    assert "gradient checkpointing" in text and "not measured" in text
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "gradient checkpointing" not in budget.table(train_steps=100)
