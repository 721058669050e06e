from __future__ import annotations

import pytest

from descend.experiments import init_depth as exp
from experiments._tiny import outputs, tiny_args


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_init_depth_shows_vanishing_and_preserved_signals(tmp_path, seed):
    assert exp.run(tiny_args(tmp_path, seed=seed, lr=0.01, depth=20, width=48)) == 0
    result = outputs(tmp_path, "init_depth")
    runs = {(r["activation"], r["scheme"]): r for r in result["runs"]}
    assert len(runs) == 2 * len(exp.SCHEMES)
    assert (tmp_path / "init_depth.png").stat().st_size > 10_000
    # U(-1/sqrt(m), 1/sqrt(m)) has a third of the scale-preserving variance: tanh signals vanish.
    vanishing = runs[("tanh", "uniform 1/sqrt(m)")]["activation_std"]
    assert len(vanishing) == 20 and vanishing[-1] < 1e-3 * vanishing[0]
    # He's sqrt(2) and LSUV keep the ReLU net's scale through all 20 layers.
    for scheme in ("He", "LSUV", "orthogonal + gain"):
        kept = runs[("relu", scheme)]["activation_std"]
        assert 0.2 < kept[-1] / kept[0] < 5, scheme
    # ... and the tanh net whose signal is kept learns in one epoch; the vanishing one does not.
    for scheme in exp.PRESERVING:
        assert runs[("tanh", scheme)]["val_accuracy"] > runs[("tanh", "uniform 1/sqrt(m)")]["val_accuracy"] + 0.05
    assert result["claim"] == exp.CLAIM
    assert (result["verdict"], result["verdict_evidence"]) == exp.verdict(result)


def _runs(vanishing_ratio, kept_ratio, vanishing_acc, kept_acc):
    runs = [{"activation": "tanh", "scheme": "uniform 1/sqrt(m)", "activation_std": [1.0, vanishing_ratio],
             "val_accuracy": vanishing_acc}]
    runs += [{"activation": a, "scheme": s, "activation_std": [1.0, kept_ratio], "val_accuracy": kept_acc}
             for a in ("tanh", "relu") for s in exp.PRESERVING]
    return {"runs": runs}


def test_verdict_reproduced_partly_and_not():
    assert exp.verdict(_runs(1e-5, 0.8, 0.10, 0.85))[0] == "reproduced"
    assert exp.verdict(_runs(1e-5, 0.8, 0.10, 0.15))[0] == "partly reproduced"  # kept, but no better learning
    status, evidence = exp.verdict(_runs(0.5, 50.0, 0.10, 0.15))
    assert status == "not reproduced" and "L2/L1 = 0.5" in evidence
