"""Where + which colours (issue #26): the benchmark's summaries over training seeds and by scene, its verdict
on the target, and zoo's chosen sampler settings against the stored table they were chosen from."""
import importlib.util
import json
from pathlib import Path

import pytest

from zc.study import zoo

BENCH = Path(__file__).parent.parent / "benchmarks"
STORED = BENCH / "results" / "cpu" / "zoo"


def bench(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(hits, colours):
    joint = [h * c for h, c in zip(hits, colours)]
    per = {"keypoint_accuracy": hits, "colour_accuracy": colours, "joint": joint}
    return {**{k: sum(v) / len(v) for k, v in per.items()}, "per_item": per}


def test_seeds_are_summarised_over_seeds_and_compared_by_scene():
    wc = bench("where_and_colours")
    seeds = [row([1, 1, 0, 1], [0.8, 0.6, 0.9, 1.0]), row([1, 0, 0, 1], [0.8, 0.8, 0.7, 1.0])]
    s = wc.seeds_summary(seeds)
    assert s["joint"]["mean"] == pytest.approx((0.6 + 0.45) / 2) and s["joint"]["seeds"] == 2
    assert s["joint"]["low"] < s["joint"]["mean"] < s["joint"]["high"]
    base = row([0, 1, 0, 0], [0.5, 0.5, 0.5, 0.5])
    d = wc.paired(seeds, base)  # per scene: mean over the seeds minus the baseline
    per_scene = [0.8 - 0, (0.6 + 0) / 2 - 0.5, 0 - 0, 1.0 - 0]
    assert d["joint"]["mean"] == pytest.approx(sum(per_scene) / 4) and d["joint"]["seeds"] == 4
    assert d["keypoint_accuracy"]["mean"] == pytest.approx((1 + (-0.5) + 0 + 1) / 4)


def test_the_verdict_needs_the_whole_interval_over_seeds_at_the_target():
    wc = bench("where_and_colours")
    v = lambda low, mean: wc.verdict({"joint": {"mean": mean, "low": low, "high": 1.0}})  # noqa: E731
    assert v(0.55, 0.7).startswith("met")
    assert v(0.45, 0.6).startswith("mean at or above")
    assert v(0.2, 0.45).startswith("not met")


def test_zoo_settings_are_the_stored_validation_tables_best():
    """zoo.TUNED and zoo.IP_SCALE come from benchmarks/where_and_colours_settings.py's stored table (validation
    scenes): changing either without rerunning it fails here."""
    st = bench("where_and_colours_settings")
    rows = json.loads((STORED / "where_and_colours_settings.json").read_text())["rows"]
    for design in st.GRID:
        b = st.best(rows, design)
        assert zoo.TUNED[design] == {k: b[k] for k in ("ip_scale", "conditioning_scale", "guidance_scale")}
    plain = [r for r in rows if r["conditioning_scale"] == 1.0 and r["guidance_scale"] == 5.0]
    assert zoo.IP_SCALE == st.best(plain, "separate")["ip_scale"]
    with pytest.raises(ValueError, match="no rows"):
        st.best(rows, "nonsense")


def test_the_stored_target_verdict_follows_its_numbers():
    stored = json.loads((STORED / "where_and_colours.json").read_text())["rows"]
    groups = [r for r in stored if "seeds" in r]
    assert len(groups) == 2 and all(g["seeds"]["joint"]["seeds"] == 3 for g in groups)  # three training seeds
    wc = bench("where_and_colours")
    assert all(g["verdict"] == wc.verdict(g["seeds"]) for g in groups)
