"""descend.data.photo: pictures of digits made into MNIST digits (LeCun et al. 1998, sec. III-A)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from descend.data import photo
from descend.errors import DataError, DataNotFound
from reference.otsu import otsu_threshold as otsu_reference


# ------------------------------------------------------------------------------ pictures
def stroke_mask(kind: str, rows: int, cols: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    """A drawn digit-like shape as ink coverage (rows, cols) in {0, 1}, inside the given box."""
    im = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(im)
    line = max(2, min(height, width) // 7)
    b, r = top + height - 1, left + width - 1
    if kind == "seven":
        draw.line([(left, top + line // 2), (r - line // 2, top + line // 2), (left + width // 3, b)], fill=255, width=line)
    elif kind == "zero":
        draw.ellipse([left, top, r, b], outline=255, width=line)
    elif kind == "one":
        draw.line([(left + width // 2, top), (left + width // 2, b)], fill=255, width=line)
        draw.line([(left, top + height // 4), (left + width // 2, top)], fill=255, width=line)
    else:  # "four"
        draw.line([(left + 2 * width // 3, top), (left + 2 * width // 3, b)], fill=255, width=line)
        draw.line([(left, top + 2 * height // 3), (r, top + 2 * height // 3)], fill=255, width=line)
        draw.line([(left, top + 2 * height // 3), (left + 2 * width // 3, top)], fill=255, width=line)
    return (np.asarray(im) > 127).astype(np.float64)


def on_paper(mask: np.ndarray, ink: float = 30, paper: float = 220, gradient: float = 0.0, noise: float = 0.0,
             seed: int = 0) -> np.ndarray:
    """Dark ink on light paper, grey levels 0-255 (float), with a brightness gradient and noise."""
    rng = np.random.default_rng(seed)
    rows, cols = mask.shape
    page = paper + (ink - paper) * mask
    page += gradient * np.linspace(-0.5, 0.5, cols)[None, :] + gradient * np.linspace(-0.5, 0.5, rows)[:, None] / 2
    page += rng.normal(0, noise, page.shape) if noise else 0
    return np.clip(page, 0, 255)


def gray(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32) / 255.0)


SHAPES = [  # kind, canvas rows, cols, box top, left, height, width
    ("seven", 300, 220, 40, 20, 160, 110),
    ("zero", 180, 260, 90, 170, 80, 60),
    ("one", 400, 300, 10, 200, 300, 60),
    ("four", 120, 140, 5, 5, 70, 90),
    ("seven", 90, 70, 30, 25, 50, 30),
]


# ------------------------------------------------------------------------------ Otsu
def test_otsu_matches_the_literal_transcription_of_otsu_1979():
    rng = np.random.default_rng(0)
    images = [rng.random((40, 30)), rng.normal(0.3, 0.1, (64, 64)), np.concatenate(
        [rng.normal(0.2, 0.05, 500), rng.normal(0.7, 0.1, 300)]).reshape(40, 20), on_paper(
        stroke_mask("zero", 60, 60, 10, 10, 40, 30), noise=6) / 255]
    for x in images:
        assert float(photo.otsu_threshold(torch.from_numpy(x))) == pytest.approx(otsu_reference(x), abs=1e-12)
    # a batch gives each image's own threshold
    batch = torch.from_numpy(np.stack([rng.random((16, 16)) ** p for p in (0.5, 1, 2)]))
    assert photo.otsu_threshold(batch).tolist() == pytest.approx([otsu_reference(b) for b in batch.numpy()])


def test_otsu_matches_scikit_image():
    filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(1)
    for x in [rng.random((50, 50)), rng.gamma(2.0, 0.1, (33, 71)), on_paper(
            stroke_mask("four", 80, 80, 5, 5, 70, 70), gradient=25, noise=6, seed=3) / 255,
              rng.integers(0, 256, (32, 32)).astype(np.float64) / 255]:
        assert float(photo.otsu_threshold(torch.from_numpy(x))) == pytest.approx(filters.threshold_otsu(x), abs=1e-12)
    assert float(photo.otsu_threshold(torch.full((5, 5), 0.25))) == 0.25  # one grey level: that level


# ------------------------------------------------------------------------------ MNIST's normalization
@pytest.mark.parametrize("kind, rows, cols, top, left, height, width", SHAPES)
def test_digit_box_is_size_normalized_to_20_and_centred_by_centre_of_mass(kind, rows, cols, top, left, height, width):
    mask = stroke_mask(kind, rows, cols, top, left, height, width)
    out = photo.to_mnist(gray(on_paper(mask, gradient=20, noise=6))).numpy()
    assert out.shape == (28, 28) and out.min() >= 0 and out.max() <= 1
    com = ndimage.center_of_mass(out)  # oracle: SciPy, in pixel indices like MNIST's own digits
    assert abs(com[0] - 14) <= 0.5 and abs(com[1] - 14) <= 0.5, com
    # the bilevel digit fits the 20x20 box, its longer side filling it, its aspect ratio kept
    on = np.argwhere(out > 0.5)
    h, w = np.ptp(on[:, 0]) + 1, np.ptp(on[:, 1]) + 1
    drawn = np.argwhere(mask > 0)
    dh, dw = np.ptp(drawn[:, 0]) + 1, np.ptp(drawn[:, 1]) + 1
    assert max(h, w) <= 20 and max(h, w) >= 18, (h, w)
    assert h / w == pytest.approx(dh / dw, rel=0.25)


def test_dark_ink_on_light_paper_is_inverted():
    mask = stroke_mask("seven", 200, 150, 30, 30, 120, 80)
    dark_on_light = photo.to_mnist(gray(on_paper(mask, ink=40, paper=210)))
    light_on_dark = photo.to_mnist(gray(on_paper(mask, ink=210, paper=40)))
    assert float(dark_on_light.median()) == 0 and float(dark_on_light.max()) == 1  # white ink on black
    torch.testing.assert_close(dark_on_light, light_on_dark, atol=1e-5, rtol=0)


def test_uneven_light_noise_specks_and_colour_change_little():
    mask = stroke_mask("four", 260, 240, 60, 50, 150, 110)
    clean = photo.to_mnist(gray(on_paper(mask)))
    page = on_paper(mask, ink=65, paper=175, gradient=25, noise=6, seed=1)
    page[5:8, 5:8] = 40  # specks far from the digit
    page[240:243, 230:233] = 40
    page[20:22, 200:203] = 50
    rgb = np.stack([page * 0.9, page, np.minimum(page * 1.1, 255)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    buf.seek(0)
    noisy = photo.to_mnist(photo.load_picture(buf))
    assert float((noisy - clean).abs().mean()) < 0.03
    on = (noisy > 0.5).nonzero()
    assert int((on[:, 0].max() - on[:, 0].min())) + 1 <= 20  # the specks did not stretch the box


def test_mnist_format_left_as_it_is_and_forceable(mnist_dir):
    from descend.data.mnist import load_idx_arrays

    x = load_idx_arrays("mnist", mnist_dir, download=False)[2][:500].to(torch.float32) / 255
    assert bool(photo.is_mnist_format(x).all())
    assert torch.equal(photo.prepare(x), x)  # used unchanged, bit for bit
    assert torch.equal(photo.prepare(x[:3], mode="as-is"), x[:3])
    redone = photo.prepare(x[:20], mode="preprocess")  # the converse: normalized again
    assert not torch.equal(redone, x[:20])
    for img in redone:
        com = ndimage.center_of_mass(img.numpy())
        assert abs(com[0] - 14) <= 0.5 and abs(com[1] - 14) <= 0.5
    # a digit moved off-centre is not MNIST format: it is centred again
    moved = torch.roll(x[:5], shifts=(3, -3), dims=(1, 2))
    assert not bool(photo.is_mnist_format(moved).any())
    for img in photo.prepare(moved):
        com = ndimage.center_of_mass(img.numpy())
        assert abs(com[0] - 14) <= 0.5 and abs(com[1] - 14) <= 0.5
    # a 28x28 picture of dark ink on light paper is not MNIST format: it is inverted and normalized
    light = 1 - x[:4]
    assert not bool(photo.is_mnist_format(light).any())
    assert float(photo.prepare(light).median()) == 0
    with pytest.raises(DataError, match="drop --as-is"):
        photo.prepare(torch.zeros(1, 50, 40), mode="as-is")


def test_uniform_picture_is_a_data_error():
    with pytest.raises(DataError, match="no digit"):
        photo.to_mnist(torch.full((40, 40), 0.8))


# ------------------------------------------------------------------------------ reading files
def test_exif_orientation_is_honoured(tmp_path):
    mask = stroke_mask("seven", 120, 90, 10, 10, 90, 60)
    upright = Image.fromarray(on_paper(mask).astype(np.uint8))
    upright.save(tmp_path / "upright.png")
    # the camera stored the pixels turned 90 degrees and the EXIF tag that turns them back
    for orientation, stored in ((6, upright.transpose(Image.Transpose.ROTATE_90)),
                                (8, upright.transpose(Image.Transpose.ROTATE_270)),
                                (3, upright.transpose(Image.Transpose.ROTATE_180))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored.save(tmp_path / f"o{orientation}.png", exif=exif)
        assert torch.equal(photo.load_picture(tmp_path / f"o{orientation}.png"), photo.load_picture(tmp_path / "upright.png"))
    assert not torch.equal(photo.to_mnist(photo.load_picture(tmp_path / "o6.png")),
                           photo.to_mnist(gray(np.asarray(upright.transpose(Image.Transpose.ROTATE_90), np.float64))))


def test_transparent_drawing_is_flattened_onto_a_contrasting_sheet(tmp_path):
    mask = stroke_mask("zero", 100, 100, 20, 20, 60, 50)
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[..., 3] = (mask * 255).astype(np.uint8)  # black ink, transparent elsewhere
    Image.fromarray(rgba).save(tmp_path / "ink.png")
    on_white = gray(on_paper(mask, ink=0, paper=255))
    torch.testing.assert_close(photo.load_picture(tmp_path / "ink.png"), on_white)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (its data is one empty row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


def test_huge_truncated_and_foreign_files_are_data_errors(tmp_path):
    (tmp_path / "huge.png").write_bytes(png_header(20_000, 20_000))  # 400 megapixels, never decoded
    with pytest.raises(DataError, match="over the limit of 150 megapixels"):
        photo.load_picture(tmp_path / "huge.png")
    (tmp_path / "big.png").write_bytes(png_header(12_000, 10_000))  # 120 Mpx: under Pillow's limit, over ours
    with pytest.raises(DataError, match="120 megapixels, over the limit of 100 megapixels"):
        photo.load_picture(tmp_path / "big.png", max_pixels=100_000_000)

    mask = stroke_mask("one", 64, 64, 5, 20, 50, 20)
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(on_paper(mask, noise=6).astype(np.uint8)).save(buf, fmt)
        (tmp_path / "cut").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        with pytest.raises(DataError, match="truncated or damaged"):
            photo.load_picture(tmp_path / "cut")
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(DataError, match="not a picture"):
        photo.load_picture(tmp_path / "notes.png")
    with pytest.raises(DataNotFound):
        photo.load_picture(tmp_path / "missing.png")
