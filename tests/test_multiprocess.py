"""Training under two processes (accelerate launch, gloo on the CPU): one writer, one log row per step,
the loss averaged over processes, and an interrupted run that resumes to the same weights."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zc
from zc import train as zt
from zc.world.pairs import PairedData

ARGS = ["--preset", "tiny", "--device", "cpu", "--steps", "4", "--batch", "2", "--eval-every", "2",
        "--eval-n", "2", "--eval-steps", "2", "--checkpoint-every", "100"]


def launch(*args):
    """The README's CPU command: two processes on one machine over gloo."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zc.train", *ARGS, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # its own process group, killed whole afterwards: a failed launch leaves no rank behind that
    # could hold the CPU (or a port) through the rest of the suite
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    return stdout


def log(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A fill50k folder: both processes (and the single-process reference runs) read the same pairs."""
    return PairedData.generate(8, size=64, seed=3).save(tmp_path_factory.mktemp("data"))


def test_two_processes_write_once_and_resume(tmp_path, data):
    a, b = tmp_path / "a", tmp_path / "b"
    launch("--data", str(data), "--out", str(a))
    rows = log(a)
    assert [r["step"] for r in rows if "loss" in r] == [0, 1, 2, 3]  # one row per step, not one per process
    assert [r["step"] for r in rows if "shape_iou" in r] == [1, 2, 4]  # evaluated once per evaluation step
    assert not list(tmp_path.rglob("*.tmp"))
    straight = zc.ControlNet.from_pretrained(a / "controlnet").state_dict()

    out = launch("--data", str(data), "--out", str(b), "--stop-after", "2")
    assert "stopped after 2 steps" in out and not (b / "controlnet").exists()
    launch("--data", str(data), "--out", str(b))
    resumed = zc.ControlNet.from_pretrained(b / "controlnet").state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert [r["loss"] for r in log(b) if "loss" in r] == [r["loss"] for r in rows if "loss" in r]

    # the logged loss is the mean of the two processes' losses: at step 0 the ControlNet is still the
    # identity (zero convs), so each process's loss is that of a single-process run drawing its batches
    pipe = zc.load_sd()
    single = [zt.train(zt.TrainConfig.preset("tiny", data=str(data), seed=s, steps=1, batch=2, eval_every=0, device="cpu",
                                             out=str(tmp_path / f"single{s}")), pipe=pipe).history[0]["loss"]
              for s in (0, 7919)]  # process 1 draws with seed + 7919
    assert rows[0]["loss"] == pytest.approx(sum(single) / 2, rel=1e-5)
    assert abs(single[0] - single[1]) > 1e-4  # the two processes did see different batches
