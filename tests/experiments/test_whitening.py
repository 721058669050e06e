from __future__ import annotations

import pytest
import torch

from descend.experiments import whitening as exp
from experiments._tiny import outputs, tiny_args


def test_eccentricity_of_white_data_is_one_and_of_stretched_data_its_stretch():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    assert abs(exp.eccentricity(white, k=4) - 1) < 0.1
    stretched = white * torch.tensor([10.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert abs(exp.eccentricity(stretched, k=4) - 100) < 10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standardized_inputs_train_faster_and_tanh_beats_sigmoid(tmp_path, seed):
    assert exp.run(tiny_args(tmp_path, seed=seed, epochs=2, lr=[0.03, 0.3], eps=0.1)) == 0
    result = outputs(tmp_path, "whitening")
    runs = {(r["model"], r["preprocess"]): r for r in result["runs"]}
    assert set(runs) == {(m, p) for m in exp.MODELS for p in exp.METHODS}
    ecc = {p: runs[("softmax regression", p)]["eccentricity"] for p in exp.METHODS}
    assert ecc["zca"] < ecc["standardize"] < ecc["none"] and ecc["pca"] < ecc["standardize"]
    # Better conditioning: softmax regression's loss after one epoch (best of the swept rates).
    first = {p: min(s["history"][0]["train_loss"] for s in runs[("softmax regression", p)]["sweep"])
             for p in exp.METHODS}
    assert first["standardize"] < first["none"] - 0.1
    # Centred hidden units: tanh beats sigmoid after two epochs, whatever the preprocessing.
    final = lambda r: max(s["history"][-1]["val_accuracy"] for s in r["sweep"])  # noqa: E731
    for p in exp.METHODS:
        assert final(runs[("MLP, tanh units", p)]) > final(runs[("MLP, sigmoid units", p)]) + 0.05, p
    assert result["claim"] == exp.CLAIM
    assert (result["verdict"], result["verdict_evidence"]) == exp.verdict(result)
    assert (tmp_path / "whitening.png").stat().st_size > 10_000


def _results(ecc, loss, tanh_better):
    runs = []
    for m, p in [(m, p) for m in exp.MODELS for p in exp.METHODS]:
        acc = 0.9 if (m == "MLP, tanh units") == tanh_better else 0.8
        runs.append({"model": m, "preprocess": p, "eccentricity": ecc[p],
                     "sweep": [{"history": [{"train_loss": loss[p], "val_accuracy": acc}]}]})
    return {"runs": runs}


def test_verdict_reproduced_partly_and_not():
    ecc = {"none": 1e5, "center": 1e5, "standardize": 1e4, "pca": 10.0, "zca": 10.0}
    loss = {"none": 2.0, "center": 1.9, "standardize": 1.0, "pca": 0.9, "zca": 0.9}
    assert exp.verdict(_results(ecc, loss, True))[0] == "reproduced"
    assert exp.verdict(_results(ecc, {**loss, "pca": 1.5, "zca": 1.5}, True))[0] == "partly reproduced"
    flat = dict.fromkeys(exp.METHODS, 1e5)
    slow = {**dict.fromkeys(exp.METHODS, 2.0), "pca": 2.5, "zca": 2.5}
    status, evidence = exp.verdict(_results(flat, slow, False))
    assert status == "not reproduced" and "tanh beats sigmoid on 0 of 5" in evidence
