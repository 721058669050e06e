"""descend predict: inputs (files, folders, globs, .npy in batches), top-k, CSV/JSON, weights, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from descend import build, cli, runs
from descend import config as cfg
from descend.data import photo
from descend.errors import CheckpointError, ConfigError, DataError, DataNotFound, DescendError
from descend.io import atomic_write_json, atomic_write_text
from descend.predict import expand_inputs, open_array, predict_files
from descend.train.checkpoint import save_weights

OVERRIDES = ["model.conv=[4]", "model.hidden=[16]", "model.convs_per_pool=1"]


def make_run(run_dir: Path, seed: int = 0) -> torch.nn.Module:
    """A run directory as descend train leaves it, holding an untrained small network."""
    config = cfg.load(None, OVERRIDES + [f"seed={seed}"])
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / runs.CONFIG, cfg.to_toml(config))
    atomic_write_json(run_dir / runs.META, {"input_shape": [1, 28, 28], "classes": [str(i) for i in range(10)],
                                            "num_classes": 10})
    torch.manual_seed(seed)
    model = build.build_model(config, (1, 28, 28), 10)
    save_weights(run_dir / "model.safetensors", model)
    return model.eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    make_run(run_dir)
    return run_dir


def digit_picture(path: Path, seed: int, fmt: str = "PNG") -> None:
    """A dark ring or bar on light paper, somewhere on a page."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(80, 200, 2)
    im = Image.new("L", (int(cols), int(rows)), int(rng.integers(170, 246)))
    h, w = int(rows * 0.5), int(cols * 0.3)
    top, left = int(rng.integers(0, rows - h)), int(rng.integers(0, cols - w))
    draw = ImageDraw.Draw(im)
    if seed % 2:
        draw.ellipse([left, top, left + w, top + h], outline=30, width=6)
    else:
        draw.line([(left + w // 2, top), (left + w // 2, top + h)], fill=30, width=6)
    im.save(path, fmt)


def probabilities(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(-1)


# ------------------------------------------------------------------------------ inputs
def test_files_folders_and_globs(tmp_path, run):
    for i in range(3):
        digit_picture(tmp_path / f"d{i}.png", i)
    digit_picture(tmp_path / "d3.jpg", 3, "JPEG")
    np.save(tmp_path / "batch.npy", np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in expand_inputs([tmp_path])] == ["batch.npy", "d0.png", "d1.png", "d2.png", "d3.jpg"]
    assert [p.name for p in expand_inputs([str(tmp_path / "d*.png")])] == ["d0.png", "d1.png", "d2.png"]
    assert [p.name for p in expand_inputs([tmp_path / "d3.jpg", str(tmp_path / "*.npy")])] == ["d3.jpg", "batch.npy"]
    rows = predict_files(run, expand_inputs([tmp_path]))
    assert [r["file"] for r in rows] == [f"{tmp_path / 'batch.npy'}[0]", f"{tmp_path / 'batch.npy'}[1]",
                                         *(str(tmp_path / n) for n in ("d0.png", "d1.png", "d2.png", "d3.jpg"))]
    with pytest.raises(DataNotFound, match="no file matches"):
        expand_inputs([str(tmp_path / "*.bmp")])
    with pytest.raises(DataNotFound, match="does not exist"):
        expand_inputs([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFound, match="holds no pictures"):
        expand_inputs([tmp_path / "empty"])


def test_top_k_are_the_models_softmax_in_order(tmp_path, run):
    model, _ = runs.load_model(run)
    for i in range(3):
        digit_picture(tmp_path / f"d{i}.png", i)
    files = sorted(tmp_path.glob("*.png"))
    rows = predict_files(run, files, top_k=4)
    # oracle: the network's softmax on the pictures normalized by descend.data.photo
    x = torch.stack([photo.to_mnist(photo.load_picture(f)) for f in files])[:, None]
    expected = probabilities(model, x)
    for row, p in zip(rows, expected):
        top = row["top_k"]
        assert [t["class"] for t in top] == p.argsort(descending=True)[:4].tolist()
        assert [t["probability"] for t in top] == pytest.approx(p.sort(descending=True).values[:4].tolist(), abs=1e-6)
        assert (row["class"], row["label"], row["probability"]) == (top[0]["class"], top[0]["label"], top[0]["probability"])
    with pytest.raises(ConfigError, match="--top-k 11"):
        predict_files(run, files, top_k=11)


def test_batched_npy_is_memory_mapped_and_equals_one_batch(tmp_path, run):
    rng = np.random.default_rng(0)
    marks = rng.random((25, 21, 21)) ** 8
    x = np.zeros((25, 28, 28), np.uint8)  # dark fields, bright marks centred on (14, 14): MNIST format
    x[:, 4:25, 4:25] = ((marks + marks[:, ::-1, ::-1]) / 2 * 255).astype(np.uint8)
    x[3] = 255 - x[3]  # one light picture: normalized like a photo
    np.save(tmp_path / "x.npy", x)
    assert isinstance(open_array(tmp_path / "x.npy"), np.memmap)
    one = predict_files(run, [tmp_path / "x.npy"], top_k=3, batch_size=1000)
    for batch_size in (1, 7):  # the same rows (to float rounding: convolutions differ with the batch size)
        rows = predict_files(run, [tmp_path / "x.npy"], top_k=3, batch_size=batch_size)
        assert [(r["file"], [t["class"] for t in r["top_k"]]) for r in rows] == [
            (r["file"], [t["class"] for t in r["top_k"]]) for r in one]
        assert [t["probability"] for r in rows for t in r["top_k"]] == pytest.approx(
            [t["probability"] for r in one for t in r["top_k"]], abs=1e-6)
    # oracle: the network itself on the pictures (as they are, but the light one normalized)
    model, _ = runs.load_model(run)
    inputs = torch.from_numpy(x).float()[:, None] / 255
    inputs[3, 0] = photo.to_mnist(inputs[3, 0])
    p = probabilities(model, inputs)
    assert [r["probability"] for r in one] == pytest.approx(p.max(1).values.tolist(), abs=1e-6)
    # float (n, 1, rows, cols) in [0, 1] gives the same; floats outside [0, 1] are refused
    np.save(tmp_path / "f.npy", x[:, None].astype(np.float32) / 255)
    assert [r["class"] for r in predict_files(run, [tmp_path / "f.npy"], batch_size=4)] == [r["class"] for r in one]
    np.save(tmp_path / "g.npy", x.astype(np.float32))
    with pytest.raises(DataError, match=r"scale the pixels to \[0, 1\]"):
        predict_files(run, [tmp_path / "g.npy"])


# ------------------------------------------------------------------------------ the command
def test_cli_csv_json_and_text(tmp_path, run, capsys):
    for i in range(3):
        digit_picture(tmp_path / f"d{i}.png", i)
    rows = predict_files(run, sorted(tmp_path.glob("*.png")), top_k=2)

    assert cli.main(["predict", str(run), str(tmp_path), "--top-k", "2", "--output", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text()) == rows
    assert cli.main(["predict", str(run), str(tmp_path / "*.png"), "--top-k", "2", "-o", str(tmp_path / "p.csv")]) == 0
    table = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert [t["file"] for t in table] == [r["file"] for r in rows]
    assert [(t["label"], float(t["probability"]), t["label_2"], float(t["probability_2"])) for t in table] == [
        (r["label"], r["probability"], r["top_k"][1]["label"], r["top_k"][1]["probability"]) for r in rows]
    capsys.readouterr()
    assert cli.main(["predict", str(run), str(tmp_path / "d0.png"), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "file,label,class,probability"
    assert cli.main(["predict", str(run), str(tmp_path / "d0.png"), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tmp_path / 'd0.png'}: ") and line.count("%") == 3
    assert cli.main(["predict", str(run), str(tmp_path / "d0.png"), "--output", str(tmp_path / "p.txt")]) == 2
    assert "name a .csv or .json file" in capsys.readouterr().err
    # --as-is takes the picture unchanged: a 100-pixel page is not a 28x28 MNIST digit
    assert cli.main(["predict", str(run), str(tmp_path / "d0.png"), "--as-is"]) == 2
    assert "drop --as-is" in capsys.readouterr().err
    np.save(tmp_path / "m.npy", np.zeros((28, 28), np.uint8))  # MNIST format, but normalized on request:
    assert cli.main(["predict", str(run), str(tmp_path / "m.npy"), "--preprocess"]) == 2  # a blank page has no digit
    assert "no digit" in capsys.readouterr().err
    assert cli.main(["predict", str(run), str(tmp_path / "m.npy")]) == 0


def test_weights_best_or_last(tmp_path, run):
    digit_picture(tmp_path / "d.png", 1)
    with pytest.raises(CheckpointError, match="no best.safetensors.*--weights last"):
        predict_files(run, [tmp_path / "d.png"], weights="best")
    other = tmp_path / "other"
    best = make_run(other / "tmp", seed=5)  # different weights, saved as best
    make_run(other / "run")
    save_weights(other / "run" / "best.safetensors", best)
    x = photo.to_mnist(photo.load_picture(tmp_path / "d.png"))[None, None]
    for weights, model in (("best", best), ("last", runs.load_model(other / "run")[0])):
        row = predict_files(other / "run", [tmp_path / "d.png"], top_k=10, weights=weights)[0]
        p = probabilities(model, x)[0]
        assert [t["probability"] for t in row["top_k"]] == pytest.approx(p.sort(descending=True).values.tolist(), abs=1e-6)


def png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, content, fragment", [
    ("huge.png", png_header(20_000, 20_000), "over the limit of 150 megapixels"),
    ("cut.png", None, "truncated or damaged"),
    ("text.jpg", b"hello", "not a picture Pillow can read"),
    ("cut.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 28, 28), }" + b" " * 46
     + b"\n" + b"\x00" * 100, "not a readable .npy"),
    ("obj.npy", None, "not a readable .npy"),
])
def test_bad_files_exit_2_with_one_line(tmp_path, run, capsys, name, content, fragment):
    path = tmp_path / name
    if name == "cut.png":
        digit_picture(path, 0)
        path.write_bytes(path.read_bytes()[:-200])
    elif name == "obj.npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # must not be unpickled
    else:
        path.write_bytes(content)
    assert cli.main(["predict", str(run), str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------ fuzzing
def valid_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    page = np.full((60, 48), 215, np.uint8)
    page[10:50, 20:27] = 35
    page = np.clip(page + rng.normal(0, 6, page.shape), 0, 255).astype(np.uint8)
    files = {}
    for fmt, ext in (("PNG", ".png"), ("JPEG", ".jpg")):
        buf = io.BytesIO()
        Image.fromarray(page).save(buf, fmt)
        files[ext] = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, (rng.random((3, 28, 28)) ** 6 * 255).astype(np.uint8))
    files[".npy"] = buf.getvalue()
    return files


def test_fuzzed_files_end_in_a_prediction_or_a_descend_error(tmp_path, run):
    """Mutated PNG/JPEG/.npy bytes (header fields, sizes, cut short, flipped bytes) never
    raise anything but a descend error; the share that got past the first check is reported."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    originals = valid_files()
    outcomes = {"predicted": 0, "refused later": 0, "refused at the first check": 0}

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(ext=st.sampled_from(sorted(originals)), cut=st.integers(0, 400),
                      edits=st.lists(st.tuples(st.integers(0, 160), st.integers(0, 255)), max_size=6),
                      truncate=st.booleans())
    def check(ext, cut, edits, truncate):
        data = bytearray(originals[ext])
        for at, value in edits:  # the headers lie in the first 160 bytes: sizes, dtype, shape, chunk lengths
            if at < len(data):
                data[at] = value
        if truncate:
            data = data[: max(0, len(data) - cut)]
        path = tmp_path / f"fuzz{ext}"
        path.write_bytes(bytes(data))
        try:
            rows = predict_files(run, [path], top_k=2)
        except DescendError as exc:  # the first check: is it a picture / an .npy array at all
            first = "not a picture Pillow can read" in str(exc) or "not a readable .npy" in str(exc)
            outcomes["refused at the first check" if first else "refused later"] += 1
            return
        outcomes["predicted"] += 1
        assert rows and all(0 <= r["probability"] <= 1 and r["label"] in [str(i) for i in range(10)] for r in rows)

    check()
    total = sum(outcomes.values())
    past = total - outcomes["refused at the first check"]
    print(f"fuzzed inputs: {outcomes}; past the first check: {past}/{total} = {past / total:.0%}")
    assert all(outcomes.values())  # every path was exercised
