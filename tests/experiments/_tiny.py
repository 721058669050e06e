"""Arguments for running an initialization / strategy / heuristics experiment at a tiny size on the bundled digits (no MNIST needed)."""

from __future__ import annotations

import argparse
import json


def tiny_args(tmp_path, **kw) -> argparse.Namespace:
    ns = argparse.Namespace(run_dir=tmp_path, data_dir=None, seed=0, quiet=True, budget="cpu", dataset="digits",
                            train_limit=300, epochs=1)
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def outputs(tmp_path, name: str) -> dict:
    """The JSON an experiment wrote (and check that its Markdown report exists and has a table)."""
    md = (tmp_path / f"{name}.md").read_text()
    assert md.startswith("# ") and "|---" in md
    return json.loads((tmp_path / f"{name}.json").read_text())
