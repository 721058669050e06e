from __future__ import annotations

import torch

from descend.experiments import whitening as exp
from experiments._tiny import outputs, tiny_args


def test_eccentricity_of_white_data_is_one_and_of_stretched_data_its_stretch():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    assert abs(exp.eccentricity(white, k=4) - 1) < 0.1
    stretched = white * torch.tensor([10.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert abs(exp.eccentricity(stretched, k=4) - 100) < 10


def test_whitening_experiment_compares_every_preprocessing(tmp_path):
    assert exp.run(tiny_args(tmp_path, lr=[0.1], eps=0.1)) == 0
    runs = outputs(tmp_path, "whitening")["runs"]
    assert {(r["model"], r["preprocess"]) for r in runs} == {(m, p) for m in exp.MODELS for p in exp.METHODS}
    ecc = {r["preprocess"]: r["eccentricity"] for r in runs}
    assert ecc["zca"] < ecc["none"] and ecc["pca"] < ecc["none"]  # whitening reduces the eccentricity
