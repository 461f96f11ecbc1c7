from zc import claims

from pathlib import Path

SETTINGS = ("none", "insufficient", "conflicting", "perfect")
RESULTS_NONE = Path("/nonexistent")  # no stored benchmarks


def summary(**runs):
    return [{"name": n, "group": g, "seeds": 2, **dict(zip(SETTINGS, v))} for n, (g, v) in runs.items()]


def verdict(rows, start):
    return next(r["verdict"] for r in rows if r["claim"].startswith(start))


def test_verdicts_follow_the_numbers(tmp_path):
    good = summary(**{"ControlNet": ("reference", (0.8, 0.8, 0.7, 0.9)),
                      "Gaussian-init convs": ("zero convolution", (0.3, 0.3, 0.3, 0.6)),
                      "ControlNet-lite": ("architecture", (0.2, 0.3, 0.4, 0.8)),
                      "prompt dropout 0%": ("prompt dropout", (0.4, 0.5, 0.6, 0.9)),
                      "1k pairs": ("dataset size", (0.8, 0.8, 0.7, 0.85))})
    rows = claims.paper_claims(good, results=tmp_path)  # tmp_path: no stored benchmarks
    assert verdict(rows, "zero convs") == "reproduced"
    assert verdict(rows, "ControlNet-lite") == "reproduced"
    assert verdict(rows, "50% prompt dropout") == "reproduced"
    assert verdict(rows, "training does not collapse") == "reproduced"
    assert verdict(rows, "sudden convergence") == "not tested"
    assert verdict(rows, "training costs") == "not tested"
    assert verdict(rows, "a ControlNet transfers") == "not tested"

    bad = summary(**{"ControlNet": ("reference", (0.3, 0.3, 0.3, 0.6)),
                     "Gaussian-init convs": ("zero convolution", (0.8, 0.8, 0.7, 0.5)),
                     "ControlNet-lite": ("architecture", (0.35, 0.3, 0.4, 0.8)),
                     "1k pairs": ("dataset size", (0.1, 0.1, 0.1, 0.2))})
    rows = claims.paper_claims(bad, results=tmp_path)
    assert verdict(rows, "zero convs") == "not reproduced"  # better in 1 of 4
    tie = summary(**{"ControlNet": ("reference", (0.8, 0.8, 0.8, 0.8)),
                     "Gaussian-init convs": ("zero convolution", (0.795, 0.795, 0.7, 0.7))})
    assert verdict(claims.paper_claims(tie, results=tmp_path), "zero convs") == "partly"  # 2 wins, 2 ties
    assert verdict(rows, "ControlNet-lite") == "not reproduced"
    assert verdict(rows, "training does not collapse") == "not reproduced"
    assert verdict(rows, "50% prompt dropout") == "not tested"


def test_convergence_and_transfer_rules(tmp_path):
    curves = [{"name": "ControlNet", "seed": 0, "step": s, "iou": v} for s, v in ((100, 0.2), (200, 0.75), (300, 0.8))]
    curves += [{"name": "ControlNet", "seed": 1, "step": s, "iou": v} for s, v in ((100, 0.2), (200, 0.3), (300, 0.4))]
    row = claims.convergence(curves, tmp_path)
    assert row["verdict"] == "partly" and "step 200" in row["measured"] and "never" in row["measured"]
    transfer = [{"sd": "base", "controlnet": "none", "shape_iou": 0.1, "shading": 0.0},
                {"sd": "base", "controlnet": "ControlNet", "shape_iou": 0.9, "shading": 0.0},
                {"sd": "variant", "controlnet": "none", "shape_iou": 0.1, "shading": 0.3},
                {"sd": "variant", "controlnet": "ControlNet", "shape_iou": 0.85, "shading": 0.25}]
    rows = claims.paper_claims([], transfer=transfer, results=tmp_path)
    assert verdict(rows, "a ControlNet transfers") == "reproduced"
    transfer[3]["shading"] = 0.15  # half the style is lost under control
    assert verdict(claims.paper_claims([], transfer=transfer, results=tmp_path), "a ControlNet transfers") == "partly"
    transfer[3]["shading"] = 0.02  # all of it
    assert verdict(claims.paper_claims([], transfer=transfer, results=tmp_path), "a ControlNet transfers") == "not reproduced"


def test_guidance_rule():
    def g(rw_none):
        return [{"mode": m, "prompt": p, "shape_iou": v, "fill_accuracy": 0.9} for m, p, v in
                (("CFG", "none", 0.8), ("CFG", "perfect", 0.9), ("CFG-RW", "none", rw_none), ("CFG-RW", "perfect", 0.6),
                 ("guess mode", "none", 0.85), ("guess mode", "perfect", 0.8))]
    assert verdict(claims.paper_claims([], guidance=g(0.4), results=RESULTS_NONE), "CFG resolution") == "not reproduced"
    assert verdict(claims.paper_claims([], guidance=g(0.85), results=RESULTS_NONE), "CFG resolution") == "reproduced"
