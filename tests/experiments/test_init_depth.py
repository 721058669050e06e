from __future__ import annotations

from descend.experiments import init_depth as exp
from experiments._tiny import outputs, tiny_args


def test_init_depth_shows_vanishing_and_preserved_signals(tmp_path):
    assert exp.run(tiny_args(tmp_path, lr=0.01, depth=20, width=48)) == 0
    runs = {(r["activation"], r["scheme"]): r for r in outputs(tmp_path, "init_depth")["runs"]}
    assert len(runs) == 2 * len(exp.SCHEMES)
    assert (tmp_path / "init_depth.png").stat().st_size > 0
    # U(-1/sqrt(m), 1/sqrt(m)) has a third of the scale-preserving variance: tanh signals vanish.
    vanishing = runs[("tanh", "uniform 1/sqrt(m)")]["activation_std"]
    assert len(vanishing) == 20 and vanishing[-1] < 1e-3 * vanishing[0]
    # He's sqrt(2) and LSUV keep the ReLU net's scale through all 20 layers.
    for scheme in ("He", "LSUV", "orthogonal + gain"):
        kept = runs[("relu", scheme)]["activation_std"]
        assert 0.2 < kept[-1] / kept[0] < 5, scheme
