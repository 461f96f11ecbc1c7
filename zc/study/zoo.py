"""The zoo's trained ControlNets: one per condition of conditions.py, trained on TinySD by
scripts/train_zoo.sh and shipped in zc/weights/<condition>-controlnet, and the measurements made with
them (benchmarks/zoo.py stores them; the conditions chapter computes them live).

    cn = zoo.load("scribble")                           # a zc.ControlNet
    row = zoo.benchmark(pipe, "scribble", n=32)         # its score without / with control, ceiling
    rows = zoo.composition(pipe, n=16)                  # keypoints (where) + palette (colours), no prompt
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch

from ..controlled_unet import samples_in_guess_mode
from ..controlnet import ControlNet
from ..controls.ip_adapter import IPAdapter
from ..resources import WEIGHTS
from ..sample import as_controls, sample
from ..sd import image_size
from ..world import conditions, metrics, shapes
from ..world.pairs import PairedData

__all__ = ["TEST_SEED", "IP_SCALE", "TUNED", "folder", "shipped", "adapter_folder", "load_adapter", "load",
    "test_set", "benchmark", "SPATIAL", "one_network_folder", "one_network", "together", "disagreeing",
    "train_minutes", "with_adapter_folder", "composition", "joint_items", "joint_score", "format_table",
    "format_composition"]

TEST_SEED = 2024  # held-out scenes of the zoo's tables (training evaluates on seed + 10000)
IP_SCALE = 0.5  # the palette IP-Adapter's λ beside a ControlNet at control 1 and CFG 5: the best joint on
# validation scenes (TEST_SEED + 1; benchmarks/results/cpu/zoo/where_and_colours_settings.txt); alone 1.0, as trained
TUNED = {  # where + which colours: each design's best joint on those validation scenes over λ, control and CFG
    "separate": dict(ip_scale=0.75, conditioning_scale=2.0, guidance_scale=3.0),  # trained apart
    "trained with": dict(ip_scale=1.0, conditioning_scale=1.5, guidance_scale=3.0),  # with_adapter_folder
}


def folder(name: str) -> Path:
    """zc/weights/<name>-controlnet, or <$ZC_ZOO>/<name>-controlnet: ControlNets trained on another SD
    (python -m zc.train --sd <that SD> --condition <name> ...), for the chapters run with ZC_SD."""
    conditions.get(name)
    return Path(os.environ.get("ZC_ZOO") or WEIGHTS) / f"{name}-controlnet"


def shipped() -> list[str]:
    """The conditions with a shipped ControlNet, in the registry's order (dense to sparse)."""
    return [n for n in conditions.CONDITIONS if (folder(n) / "config.json").is_file()]


def adapter_folder(name: str) -> Path:
    """zc/weights/<name>-ip-adapter (or under $ZC_ZOO): the condition as a global control (ip_adapter.py)."""
    conditions.get(name)
    return Path(os.environ.get("ZC_ZOO") or WEIGHTS) / f"{name}-ip-adapter"


def load_adapter(name: str, device="cpu") -> IPAdapter:
    if not (adapter_folder(name) / "config.json").is_file():
        raise FileNotFoundError(f"no shipped IP-Adapter for {name!r} in {adapter_folder(name)}: train it with "
                                f"scripts/train_zoo.sh {name}-ip-adapter")
    return IPAdapter.from_pretrained(adapter_folder(name)).to(device).eval()


def load(name: str, device="cpu") -> ControlNet:
    if not (folder(name) / "config.json").is_file():
        raise FileNotFoundError(f"no shipped ControlNet for {name!r} in {folder(name)}: train it with "
                                f"scripts/train_zoo.sh {name} (shipped: {shipped()})")
    return ControlNet.from_pretrained(folder(name)).to(device).eval()


def test_set(name: str, n: int, size: int = 64, seed: int = TEST_SEED) -> PairedData:
    """Held-out scenes of every kind (colour pairs never trained on) with `name`'s condition."""
    return PairedData.generate(n, size=size, seed=seed, split="test", condition=name, kinds=shapes.KINDS)


def _sample(pipe, cn, prompts, cond, steps, seed=0):
    return sample(pipe, cn, prompts, cond if cn is not None else None, num_inference_steps=steps,
                  generator=torch.Generator().manual_seed(seed))


def benchmark(pipe, name: str, n: int = 64, steps: int = 20, seed: int = 0) -> dict:
    """`name`'s score (and every measure) on n held-out scenes: TinySD alone and with the ControlNet,
    each under an empty and the full prompt, and the ground truth's (the ceiling)."""
    size = image_size(pipe)
    test, cn = test_set(name, n, size), load(name, pipe.device)
    key = conditions.get(name).score
    row = {"condition": name, "score": key, "about": conditions.get(name).about, "n": n, "measures": {}}
    for prompt in ("empty", "full"):
        prompts = [""] * n if prompt == "empty" else test.prompts
        for who, net in (("none", None), ("control", cn)):
            m = conditions.measure(_sample(pipe, net, prompts, test.conditions(), steps, seed), test.scenes)
            row["measures"][f"{who}_{prompt}"] = m
            row[f"{who}_{prompt}"] = m[key]
    row["measures"]["ceiling"] = conditions.measure(test.targets.float() / 255, test.scenes)
    row["ceiling"] = row["measures"]["ceiling"][key]
    return row


SPATIAL = "outline+silhouette+lowres+scribble+keypoints"  # the one network's stack (scripts/train_zoo.sh spatial)


def one_network_folder() -> Path:
    """zc/weights/spatial-controlnet (or under $ZC_ZOO): one ControlNet for every spatial condition."""
    return Path(os.environ.get("ZC_ZOO") or WEIGHTS) / "spatial-controlnet"


def one_network(pipe, controlnet: ControlNet, stack: str = SPATIAL, given: list[list[str]] | None = None,
                n: int = 64, steps: int = 20, seed: int = 0) -> list[dict]:
    """One network for several conditions, given any subset of them: for each subset in `given`
    (default: each member alone), the stack's image with the other members zeroed (what condition
    dropout trained it on), an empty prompt, and every member's own measure on n held-out scenes.
    Rows {given, <measure>: score}; compare each member alone with its separate ControlNet (together)."""
    names = conditions.members(stack)
    rows = together(pipe, given or [[m] for m in names], controlnet, stack, n, steps, seed)
    return [{k: v for k, v in r.items() if k not in ("prompt", "n", "per_item")} for r in rows]


def together(pipe, given: list[list[str]], network: ControlNet | None = None, stack: str = SPATIAL, n: int = 64,
             steps: int = 20, seed: int = 0, prompt: str = "empty") -> list[dict]:
    """Each subset of conditions in `given`, given together on the n held-out scenes of test_set(stack):
    by one network trained on `stack` (`network`: the stack's image with the other members zeroed, what
    condition dropout trained it on) or, with network None, by the zoo's separate ControlNets, their
    residuals summed (paper §3.4). prompt: "empty" or "full" (the scenes' captions). Rows {given, prompt,
    n, <each member's measure>: mean, per_item: {measure: one value per scene}}: both designs see the same
    scenes, condition images and noise, so their per-scene differences pair."""
    if prompt not in ("empty", "full"):
        raise ValueError(f"prompt must be 'empty' or 'full', got {prompt!r}")
    names = conditions.members(stack)
    if network is not None and network.config.conditioning_channels != 3 * len(names):
        raise ValueError(f"the network reads {network.config.conditioning_channels} channels, the stack {stack!r} "
                         f"{3 * len(names)}: pass the stack it was trained on")
    size = image_size(pipe)
    test = test_set(stack, n, size)
    full = test.conditions()  # (n, 3k, H, W): member i in channels 3i..3i+2
    prompts = [""] * n if prompt == "empty" else test.prompts
    keys = list(dict.fromkeys(conditions.get(c).score for c in names))
    separate: dict[str, ControlNet] = {}
    rows = []
    for subset in given:
        unknown = [m for m in subset if m not in names]
        if unknown or not subset:
            raise ValueError(f"{unknown or 'an empty subset'}: not in the stack {stack!r}; give members of it")
        if network is not None:
            keep = torch.tensor([m in subset for m in names]).repeat_interleave(3)  # (3k,)
            nets, cond = network, full * keep[None, :, None, None].to(full.dtype)
        else:
            for m in subset:  # each separate ControlNet loaded once, however many subsets name it
                if m not in separate:
                    separate[m] = load(m, pipe.device)
            nets = [separate[m] for m in subset]
            cond = [full[:, 3 * names.index(m):3 * names.index(m) + 3] for m in subset]
            nets, cond = (nets[0], cond[0]) if len(nets) == 1 else (nets, cond)
        m = conditions.measure(_sample(pipe, nets, prompts, cond, steps, seed), test.scenes, per_item=True)
        rows.append({"given": "+".join(subset), "prompt": prompt, "n": n,
                     **{k: sum(m[k]) / n for k in keys}, "per_item": {k: m[k] for k in keys}})
    return rows


def disagreeing(pipe, first: str = "keypoints", second: str = "scribble", networks: dict | None = None,
                n: int = 16, steps: int = 20, seed: int = 0, stack: str | None = None
                ) -> tuple[list[dict], dict, "shapes.Scenes"]:
    """Two spatial conditions that disagree: `first` drawn for the held-out scenes, `second` for the same
    scenes mirrored left-right (another place, unless a shape sits in the middle). `networks`: {label:
    (controlnet(s), "separate" | "stack")}; "separate": a list of two ControlNets, one per condition
    (residuals summed); "stack": one network for the stack first+second, or for `stack` (e.g. SPATIAL:
    the two in their slots, the other members zeroed). Rows {design, iou_first,
    iou_second}: the drawn shape's IoU with each condition's shape (empty prompt); and the images."""
    size = image_size(pipe)
    test = test_set(first, n, size)
    a = test.scenes
    b = shapes.Scenes(a.kind, a.fill, a.bg, torch.stack([1 - a.center[:, 0], a.center[:, 1]], 1), a.radius, a.seed)
    ca, cb = conditions.draw(first, a, size), conditions.draw(second, b, size)
    truth = [shapes.coverage(s, size) > 0.5 for s in (a, b)]
    rows, images = [], {}
    for label, (nets, how) in (networks or {}).items():
        if how not in ("separate", "stack"):
            raise ValueError(f"{label}: how must be 'separate' or 'stack', got {how!r}")
        cond = [ca, cb] if how == "separate" else _in_stack(stack or f"{first}+{second}", {first: ca, second: cb})
        x = _sample(pipe, nets, [""] * n, cond, steps, seed)
        drawn = conditions.shape_regions(x)
        images[label] = x
        rows.append({"design": label, **{f"iou_{w}": metrics.iou(drawn, t).mean().item()
                                         for w, t in zip(("first", "second"), truth)}})
    return rows, images, b


def _in_stack(stack: str, given: dict) -> torch.Tensor:
    """A stack's condition image with `given` {member: (n, 3, H, W)} in their slots, the rest zeroed."""
    names = conditions.members(stack)
    if set(given) - set(names):
        raise ValueError(f"{sorted(set(given) - set(names))} not in the stack {stack!r}")
    first = next(iter(given.values()))
    return torch.cat([given.get(m, torch.zeros_like(first)) for m in names], dim=1)


def train_minutes(run: Path) -> float | None:
    """Minutes of a stored training run: time.json (written by zc.train), else the time between its
    config.json (written first) and log.jsonl (written last)."""
    run = Path(run)
    if (run / "time.json").is_file():
        return json.loads((run / "time.json").read_text())["seconds"] / 60
    if (run / "config.json").is_file() and (run / "log.jsonl").is_file():
        return ((run / "log.jsonl").stat().st_mtime - (run / "config.json").stat().st_mtime) / 60
    return None


def with_adapter_folder(where: str = "keypoints", colours: str = "palette") -> Path:
    """zc/weights/<where>-with-<colours>-controlnet (or under $ZC_ZOO): `where`'s ControlNet trained on with
    `colours`' IP-Adapter attached and locked (scripts/train_zoo.sh keypoints-with-palette)."""
    conditions.get(where), conditions.get(colours)
    return Path(os.environ.get("ZC_ZOO") or WEIGHTS) / f"{where}-with-{colours}-controlnet"


def composition(pipe, n: int = 32, steps: int = 20, seed: int = 0, where: str = "keypoints",
                colours: str = "palette", guess_mode: bool = False, return_images: bool = False,
                trained_with: list | None = None, per_item: bool = False):
    """Paper §3.4: two ControlNets trained separately, used together with an empty prompt. `where`
    fixes position and size, `colours` the fill and background colours. Rows: TinySD alone, each
    ControlNet alone, both (their residuals summed), each with every measure and "joint": the mean
    over images of keypoint hit x colour accuracy (both constraints at once). A pooled ControlNet
    alone samples in guess mode (as in diffusers); guess_mode=True puts the pair there too.
    Where `colours` has a shipped IP-Adapter (adapter_folder), more rows: it alone, and `where`'s
    ControlNet with it (the colours as tokens, the place as residuals) at scale 1, at IP_SCALE and at
    TUNED["separate"]'s settings; and per ControlNet trained with that adapter attached (`trained_with`:
    folders; default the shipped with_adapter_folder, if any), a row with the adapter at scale 1 as in
    its training and one at TUNED["trained with"]'s settings (", tuned"; the row has "settings").
    per_item: each row also gets "per_item" {measure: one value per scene, "joint": hit x colour}."""
    size = image_size(pipe)
    test = test_set(where, n, size)
    c_where, c_col = test.conditions(), conditions.draw(colours, test.scenes, size)
    a, b = load(where, pipe.device), load(colours, pipe.device)
    empty = [""] * n
    runs = {"TinySD alone": (None, None, None), f"{where} only": (a, c_where, None),
            f"{colours} only": (b, c_col, None), f"{where} + {colours}": ([a, b], [c_where, c_col], None)}
    if (adapter_folder(colours) / "config.json").is_file():
        ipa = load_adapter(colours, pipe.device)

        def at(scale):  # the adapter at λ = scale
            scaled = copy.deepcopy(ipa)
            scaled.set_scale(scale)
            return scaled

        def tuned(design):  # the adapter at the design's λ, and its sampler settings
            t = TUNED[design]
            return at(t["ip_scale"]), {k: v for k, v in t.items() if k != "ip_scale"}

        runs |= {f"{colours} IP-Adapter only": (None, None, ipa),
                 f"{where} + {colours} IP-Adapter": (a, c_where, ipa),
                 f"{where} + {colours} IP-Adapter x{IP_SCALE}": (a, c_where, at(IP_SCALE)),
                 f"{where} + {colours} IP-Adapter, tuned": (a, c_where, *tuned("separate"))}
        if trained_with is None:
            trained_with = [with_adapter_folder(where, colours)] * (with_adapter_folder(where, colours)
                                                                     / "config.json").is_file()
        for i, f in enumerate(trained_with):
            label = f"{where} trained with {colours} IP-Adapter" + (f" [{i}]" if len(trained_with) > 1 else "")
            net = ControlNet.from_pretrained(f).to(pipe.device).eval()
            runs[label] = (net, c_where, ipa)
            runs[label + ", tuned"] = (net, c_where, *tuned("trained with"))
    elif trained_with:
        raise FileNotFoundError(f"trained_with needs the {colours} IP-Adapter they were trained with, in "
                                f"{adapter_folder(colours)}")
    rows, images = [], {}
    for label, (nets, cond, ipa, *settings) in runs.items():
        gm = samples_in_guess_mode(nets, guess_mode)
        kw = settings[0] if settings else {}  # a tuned row's control and CFG scales
        controls = as_controls(nets, cond) + ([(ipa, c_col)] if ipa is not None else [])
        x = sample(pipe, controls, empty, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                   guess_mode=gm, **kw)
        images[label] = x
        m = conditions.measure(x, test.scenes, per_item=True)
        mean = {k: sum(v) / len(v) for k, v in m.items()}
        joint = joint_score(m)
        rows.append({"run": label, "guess_mode": gm, "joint": joint, **({"settings": kw} if kw else {}),
                     **{k: mean[k] for k in ("keypoint_accuracy", "centre_error", "colour_accuracy",
                                             "fill_accuracy", "background_accuracy", "shape_iou")}})
        if per_item:
            rows[-1]["per_item"] = {"keypoint_accuracy": list(m["keypoint_accuracy"]),
                                    "colour_accuracy": list(m["colour_accuracy"]), "joint": joint_items(m)}
    return (rows, images, test) if return_images else rows


def joint_items(per_item: dict) -> list[float]:
    """Both constraints at once, per image: keypoint hit x colour accuracy (measure(..., per_item=True) lists)."""
    return [h * c for h, c in zip(per_item["keypoint_accuracy"], per_item["colour_accuracy"])]


def joint_score(per_item: dict) -> float:
    """The mean over images of joint_items: 0 for TinySD alone, 1 at the ceiling."""
    joint = joint_items(per_item)
    return sum(joint) / len(joint)


def format_table(rows: list[dict], header: bool = True) -> str:
    head = (f"{'condition':11s} {'judged by':18s} {'no CN':>6s} {'+CN':>6s} {'no CN':>6s} {'+CN':>6s} {'ceil.':>6s}"
            f" {'converged':>9s} {'train':>6s}\n{'':31s}{'(empty prompt)':>14s} {'(full prompt)':>13s}"
            f" {'':6s} {'at step':>9s} {'min':>6s}")
    lines = [head] if header else []
    for r in rows:
        conv = r.get("convergence_step")
        minutes = r.get("train_minutes")
        lines.append(f"{r['condition']:11s} {conditions.name(r['score']):18s} {r['none_empty']:6.3f} {r['control_empty']:6.3f} "
                     f"{r['none_full']:6.3f} {r['control_full']:6.3f} {r['ceiling']:6.3f} "
                     f"{('never' if conv is None else str(conv)) if 'convergence_step' in r else '-':>9s} "
                     f"{(f'{minutes:6.1f}' if minutes else '     -')}")
    return "\n".join(lines)


def format_composition(rows: list[dict]) -> str:
    labels = [r["run"] + (" (guess mode)" if r.get("guess_mode") else "") for r in rows]
    w = max([34, *map(len, labels)])
    lines = [f"{'empty prompt':{w}s} {'keypoint acc.':>13s} {'centre err px':>13s} {'colour acc.':>11s} {'joint':>6s}"]
    for r, label in zip(rows, labels):
        lines.append(f"{label:{w}s} {r['keypoint_accuracy']:13.3f} {r['centre_error']:13.1f} "
                     f"{r['colour_accuracy']:11.3f} {r.get('joint', float('nan')):6.3f}")
    return "\n".join(lines)
