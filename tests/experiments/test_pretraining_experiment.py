from __future__ import annotations

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
