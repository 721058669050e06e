"""The gallery's recorder (docs/gallery/record.py) and its Sphinx extension (docs/_ext/gallery.py)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from descend.experiments import lr_find

REPO = Path(__file__).resolve().parents[1]


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _module("gallery_record", REPO / "docs" / "gallery" / "record.py")


def test_printed_table_leaves_out_progress_claim_verdict_and_the_run_folder():
    stdout = ("Sweep\n| lr | val acc |\n|----|----|\n| 0.1 | 90% |\n  seed 0: val 90%\n"
              "claim: something (sec. 8.3.1)\nverdict: reproduced - numbers\nresults in /tmp/x\n")
    assert record.printed_table(stdout) == "Sweep\n| lr | val acc |\n|----|----|\n| 0.1 | 90% |"


def test_machine_names_cores_torch_and_threads():
    import torch

    text = record.machine()
    assert text.startswith(f"{os.cpu_count()}-core ")
    assert f"torch {torch.__version__.split('+')[0]}" in text and text.endswith(f"{torch.get_num_threads()} threads")


def test_record_runs_the_experiment_and_writes_its_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    args = ["--seed", "0", "--dataset", "digits", "--train-limit", "100", "--epochs", "1"]
    entry = record.record("lr-find", args, out_root=tmp_path)
    written = json.loads((tmp_path / "lr-find" / "entry.json").read_text())
    assert written == entry
    assert set(entry) == {"experiment", "claim", "verdict", "evidence", "command", "date", "machine", "seconds",
                          "cpu_seconds", "table", "figures"}
    assert 0 < entry["cpu_seconds"] and 0 < entry["seconds"]
    assert entry["claim"] == lr_find.CLAIM
    assert entry["verdict"] in ("reproduced", "partly reproduced", "not reproduced") and entry["evidence"]
    assert entry["command"] == "descend experiment lr-find " + " ".join(args)
    assert entry["figures"] == ["lr_find.png"]
    assert (tmp_path / "lr-find" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert entry["table"].startswith("chosen learning rate") and "| 0.001" in entry["table"]
    assert "claim:" not in entry["table"] and "results in" not in entry["table"]


def test_record_refuses_a_run_dir_of_its_own():
    with pytest.raises(SystemExit):
        record.main(["lr-find", "--", "--run-dir", "x"])


def _entry(name: str, **changes) -> dict:
    entry = {"experiment": name, "claim": "Claim with $x$ and a_b *stars* (sec. 8.4).", "verdict": "reproduced",
             "evidence": "val 90% | test 89%", "command": f"descend experiment {name} --seed 0",
             "date": "2026-12-06", "machine": "2-core CPU, torch 2.13.0, 2 threads", "seconds": 12.3,
             "table": "| a | b |\n|---|---|\n| ```x``` | 1 |", "figures": ["f.png"]}
    entry.update(changes)
    return entry


def _write(folder: Path, name: str, entry: dict, png: bool = True) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "entry.json").write_text(json.dumps(entry))
    if png:
        (folder / name / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n")


def test_extension_renders_valid_entries_and_leaves_out_broken_ones(tmp_path):
    pytest.importorskip("sphinx")
    gallery = _module("gallery_ext", REPO / "docs" / "_ext" / "gallery.py")
    _write(tmp_path, "good", _entry("good"))
    _write(tmp_path, "no-figure", _entry("no-figure"), png=False)
    _write(tmp_path, "bad-verdict", _entry("bad-verdict", verdict="maybe"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "entry.json").write_text("{")
    entries = gallery.load_entries(tmp_path)
    assert [e["experiment"] for _, e in entries] == ["good"]
    text = gallery.render(entries)
    assert "(gallery-good)=" in text and "![good: f.png](good/f.png)" in text
    assert r"\$x\$" in text and r"a\_b \*stars\*" in text and r"val 90% \| test 89%" in text
    assert "````text\n| a | b |" in text  # a fence longer than the table's own backticks
    assert "12 s wall time, 3 s of processor time" in gallery.render([(tmp_path / "good" / "entry.json",
                                                                       {**entries[0][1], "cpu_seconds": 3.2})])
    assert gallery.render([]) == "No runs are recorded yet.\n"


def test_gallery_page_builds_with_warnings_as_errors(tmp_path):
    """The recorded entries render into a page that Sphinx + MyST build with -W."""
    pytest.importorskip("myst_parser")
    from sphinx.cmd.build import build_main

    src = tmp_path / "docs"
    (src / "gallery").mkdir(parents=True)
    (src / "gallery" / "index.md").write_text((REPO / "docs" / "gallery" / "index.md").read_text())
    for entry in sorted((REPO / "docs" / "gallery").glob("*/entry.json")):
        (src / "gallery" / entry.parent.name).symlink_to(entry.parent, target_is_directory=True)
    (src / "index.md").write_text("# descend\n\n```{toctree}\ngallery/index\n```\n")
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'docs' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'gallery']\n"
        "myst_enable_extensions = ['dollarmath', 'colon_fence', 'deflist']\n")
    assert build_main(["-W", "-q", "-b", "html", str(src), str(tmp_path / "html")]) == 0
    page = (tmp_path / "html" / "gallery" / "index.html").read_text()
    for entry in sorted((REPO / "docs" / "gallery").glob("*/entry.json")):
        assert f'id="gallery-{entry.parent.name}"' in page
