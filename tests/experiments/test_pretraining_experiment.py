from __future__ import annotations

import pytest

from descend.experiments import pretraining as exp
from experiments._tiny import outputs, tiny_args


def test_pretraining_runs_every_comparison(tmp_path):
    assert exp.run(tiny_args(tmp_path, train_limit=400, epochs=6, lr=0.05, sigmoid_lr=0.2)) == 0
    result = outputs(tmp_path, "pretraining")
    assert set(result["greedy"]) == {"direct", "greedy", "auxiliary heads"}
    stages = [h["stage"] for h in result["greedy"]["greedy"]["history"]]
    assert stages == [f"layer {k}" for k in range(1, 6)] + ["fine-tune"]  # 5 layers, 1 epoch each, then 6 - 5
    assert [h["stage"] for h in result["fitnets"]["FitNets hints"]["history"]] == ["hints"] + ["task"] * 5
    assert set(result["transfer"]) == {"from scratch", "transfer layer 1, frozen", "transfer layer 1, fine-tuned"}
    assert result["claim"] == exp.CLAIM
    assert (result["verdict"], result["verdict_evidence"]) == exp.verdict(result)
    assert (tmp_path / "pretraining.png").stat().st_size > 10_000


def _results(greedy, direct, hints, plain, frozen, tuned, scratch):
    final = lambda v: {"final": {"val": v, "test": v}}  # noqa: E731
    return {"greedy": {"greedy": final(greedy), "direct": final(direct)},
            "fitnets": {"FitNets hints": final(hints), "direct": final(plain)},
            "transfer": {"transfer layer 1, frozen": final(frozen), "transfer layer 1, fine-tuned": final(tuned),
                         "from scratch": final(scratch)}}


# At a test budget the deep sigmoid nets and the thin student learn nothing in a few epochs
# (chance accuracy either way), so the verdict is checked on given accuracies.
@pytest.mark.parametrize("accuracies, status", [
    ((0.90, 0.80, 0.85, 0.60, 0.88, 0.90, 0.85), "reproduced"),
    ((0.80, 0.80, 0.60, 0.60, 0.84, 0.90, 0.85), "partly reproduced"),  # only transfer (fine-tuned) helps
    ((0.80, 0.81, 0.60, 0.60, 0.80, 0.855, 0.85), "not reproduced"),   # ties within the margin
])
def test_verdict_counts_the_comparisons_won(accuracies, status):
    got, evidence = exp.verdict(_results(*accuracies))
    assert got == status
    assert evidence.startswith("final val acc: greedy")
