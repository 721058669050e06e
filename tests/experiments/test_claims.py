"""Every experiment states the text's claim it reproduces, judges it, and has a gallery entry
recorded from a real run (docs/gallery/NAME/entry.json, written by docs/gallery/record.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from descend import experiments

GALLERY = Path(__file__).resolve().parents[2] / "docs" / "gallery"
CITES = ("sec.", "ch.", "Algorithm", "eq.", "CS189", "NNDL", "Nielsen")
STATUSES = ("reproduced", "partly reproduced", "not reproduced")
KEYS = {"experiment", "claim", "verdict", "evidence", "command", "date", "machine", "seconds", "table", "figures"}

def test_the_experiments_are_found():
    assert len(experiments.names()) >= 14


@pytest.mark.parametrize("name", experiments.names())
def test_experiment_states_a_cited_claim_and_judges_it(name):
    module = experiments.load(name)
    claim = getattr(module, "CLAIM", None)
    assert isinstance(claim, str) and claim.strip(), f"{name} has no CLAIM: the text's claim it reproduces"
    assert any(c in claim for c in CITES), f"{name}'s CLAIM cites no text ({', '.join(CITES)}): {claim!r}"
    assert callable(getattr(module, "verdict", None)), f"{name} has no verdict(results) -> (status, evidence)"


@pytest.mark.parametrize("name", experiments.names())
def test_gallery_entry_is_recorded_from_a_run_of_the_current_claim(name):
    path = GALLERY / name / "entry.json"
    assert path.is_file(), (f"{name} has no gallery entry {path.relative_to(GALLERY.parents[1])}; record it with "
                            f"python docs/gallery/record.py {name} -- --seed 0 ...")
    entry = json.loads(path.read_text())
    assert KEYS <= set(entry), f"{path} lacks {sorted(KEYS - set(entry))}"
    assert entry["experiment"] == name
    assert entry["claim"] == getattr(experiments.load(name), "CLAIM", None), \
        f"{path}: the claim differs from {name}'s CLAIM; record the entry again"
    assert entry["verdict"] in STATUSES and entry["evidence"].strip()
    assert entry["command"].startswith(f"descend experiment {name}")
    assert entry["table"].strip() and entry["seconds"] > 0
    assert entry["figures"], f"{path} names no figure"
    for figure in entry["figures"]:
        png = path.parent / figure
        assert png.is_file(), f"{png} is missing"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size <= 250_000, png
