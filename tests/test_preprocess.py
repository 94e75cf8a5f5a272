"""Reading images and MNIST-style preprocessing: person-made digits land centred, 20 px tall,
white on black, whatever their size, position and polarity."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from digit_images import make_image
from digitnet.errors import DataError
from digitnet.preprocess import MAX_PIXELS, load_image, resize_plain, to_mnist


def _centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    r = np.arange(x.shape[0])
    m = x.sum()
    return float(x.sum(axis=1) @ r / m), float(x.sum(axis=0) @ r / m)


def _as_gray(img: Image.Image) -> np.ndarray:
    """What load_image would give for a generated image, without a file."""
    if img.mode == "LA":
        white = Image.new("RGBA", img.size, "white")
        white.alpha_composite(img.convert("RGBA"))
        img = white
    return np.asarray(img.convert("L"), np.float32) / 255


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("GIF", ".gif"), ("TIFF", ".tif")])
def test_load_image_reads_every_format_as_unit_gray(tmp_path, fmt, suffix):
    a = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
    path = tmp_path / f"x{suffix}"
    Image.fromarray(a).save(path, fmt)
    gray = load_image(path)
    assert gray.dtype == np.float32 and gray.shape == (30, 40)
    assert np.abs(gray - a / 255).max() < (0.05 if fmt == "JPEG" else 1e-6)


def test_load_image_composites_alpha_onto_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)           # black everywhere …
    rgba[2:5, 2:5, 3] = 255                          # … but only opaque in a 3×3 square
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    gray = load_image(tmp_path / "a.png")
    assert gray[3, 3] == 0 and gray[0, 0] == 1 and gray[9, 9] == 1


def test_load_image_applies_exif_orientation(tmp_path):
    im = Image.new("L", (40, 20), 255)
    exif = Image.Exif()
    exif[0x0112] = 6                                  # "rotate 90° clockwise to display"
    im.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").shape == (40, 20)


@pytest.mark.parametrize("content, expected", [(b"not an image at all", "not an image"),
                                               (None, "no such file")])
def test_load_image_errors_are_one_line(tmp_path, content, expected):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as e:
        load_image(path)
    assert "\n" not in str(e.value)


def test_load_image_truncated_png(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.png"):
        load_image(tmp_path / "t.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width×height but holds no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def test_load_image_refuses_huge_images_before_decoding(tmp_path):
    side = int(MAX_PIXELS ** 0.5) + 100
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))   # would be "truncated" if it were decoded
    with pytest.raises(DataError, match="too large"):
        load_image(path)


@pytest.mark.parametrize("seed", range(24))
def test_to_mnist_centres_and_scales_person_made_digits(seed):
    rng = np.random.default_rng(seed)
    img, params = make_image(seed % 10, rng, kind="hand" if seed % 3 == 0 else None)
    x = to_mnist(_as_gray(img))
    assert x.dtype == np.float32 and x.shape == (28, 28)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    cy, cx = _centre_of_mass(x)
    assert abs(cy - 14) <= 1.0 and abs(cx - 14) <= 1.0, (cy, cx, params)
    ink = x > 0.3
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    assert 18 <= max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) <= 21, params
    # white ink on black: the frame's edge is background whatever the image's polarity
    edge = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    assert edge.mean() < 0.15 and x.mean() < 0.4, params


def test_to_mnist_polarity_does_not_matter():
    rng = np.random.default_rng(5)
    img, _ = make_image(3, rng, kind="hand")
    gray = _as_gray(img)
    light = to_mnist(gray)
    dark = to_mnist(1 - gray)
    assert np.abs(light - dark).mean() < 0.05


@pytest.mark.parametrize("size, at", [((300, 200), (10, 10)), ((60, 400), (20, 350)), ((40, 40), (5, 5))])
def test_to_mnist_ignores_where_the_digit_is(size, at):
    """The same stroke drawn at different places and canvas sizes gives the same 28×28."""
    h, w = size
    canvas = np.ones((h, w), np.float32)
    stroke = np.ones((30, 12), np.float32)
    stroke[:, 4:8] = 0                                # a dark vertical bar, a "1"
    y, x = at
    canvas[y:y + 30, x:x + 12] = stroke
    out = to_mnist(canvas)
    reference = np.ones((30, 12), np.float32)
    reference[:, 4:8] = 0
    assert np.abs(out - to_mnist(np.pad(reference, 20, constant_values=1))).max() < 1e-5
    cy, cx = _centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_to_mnist_refuses_blank_images(level):
    with pytest.raises(DataError, match="blank"):
        to_mnist(np.full((50, 40), level, np.float32))


def test_to_mnist_refuses_nan_and_bad_shapes():
    x = np.ones((20, 20), np.float32)
    x[3, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        to_mnist(x)
    with pytest.raises(DataError, match="shape"):
        to_mnist(np.ones((3, 20, 20), np.float32))


def test_to_mnist_keeps_aspect_ratio():
    canvas = np.zeros((200, 200), np.float32)
    canvas[20:180, 90:130] = 1                        # 160 tall, 40 wide
    ink = to_mnist(canvas) > 0.5
    height = np.ptp(np.flatnonzero(ink.any(axis=1))) + 1
    width = np.ptp(np.flatnonzero(ink.any(axis=0))) + 1
    assert height == 20 and 4 <= width <= 6


def test_resize_plain_does_not_invert_or_crop():
    gray = np.ones((100, 60), np.float32)
    gray[40:60, 20:40] = 0
    out = resize_plain(gray)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out[0, 0] == pytest.approx(1) and out[14, 14] == pytest.approx(0, abs=0.05)
    assert 0 <= out.min() and out.max() <= 1


def test_to_mnist_thins_bold_strokes_only():
    """A marker-thick ring comes out with MNIST-like strokes; a thin ring is not thinned."""
    from digitnet.preprocess import STROKE_MAX, _resize, _stroke_width

    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 100, xx - 100)
    bold = ((r > 45) & (r < 90)).astype(np.float32)       # stroke 45 of 180 px: 5 px at 20 px
    thin = ((r > 80) & (r < 90)).astype(np.float32)       # stroke 10 of 180 px: ~1 px at 20 px
    assert _stroke_width(to_mnist(bold)) <= STROKE_MAX + 0.3
    assert _stroke_width(to_mnist(thin)) >= 0.8
    assert _stroke_width(_resize(bold[10:190, 10:190], 20, 20)) > STROKE_MAX + 1   # bold before thinning


def test_step_panels_show_each_step_of_a_photo_and_two_of_a_clean_image():
    """--show's panels: a photo shows the image (the sheet outlined), the paper removed, the
    components kept and the 28×28; a clean image only the first and the last."""
    from digitnet.preprocess import step_panels

    rng = np.random.default_rng(4)
    img, _ = make_image(2, rng, kind="hand")
    clean = step_panels(_as_gray(img))
    assert [t for t, _ in clean] == ["image", "network saw"]
    assert np.array_equal(clean[-1][1], to_mnist(_as_gray(img)))
    yy, xx = np.mgrid[:300, :400].astype(np.float32)
    photo = 0.85 - 0.35 * xx / 400                        # uneven light: a photo
    photo[100:200, 190:205] *= 0.2                         # a 1
    panels = step_panels(photo, height=20)
    assert [t for t, _ in panels] == ["image", "paper removed", "kept", "network saw"]
    for title, a in panels[:-1]:
        assert a.shape[0] <= 20 and a.shape[1] <= 40 and 0 <= a.min() and a.max() <= 1, title
    kept = panels[2][1]
    assert kept.max() > 0.8 and kept[:, -5:].max() < 0.5   # the bar kept (averaged down), the dark right side not


def test_notes_say_what_the_photo_analysis_saw():
    canvas = np.ones((200, 300), np.float32)
    canvas[50:150, 60:75] = 0                              # a 1 …
    canvas[50:150, 120:135] = 0                            # … and another beside it: a second mark
    canvas[:, :] *= np.linspace(1, 0.7, 300)[None, :]      # uneven light: a photo
    notes = {}
    to_mnist(canvas, notes=notes)
    assert notes["other_marks"] == 1 and notes["parts"] == 1
    notes = {}
    resize_plain(canvas, notes=notes)
    assert notes == {}


@pytest.mark.parametrize("value", [1.0001, 255.0, 1e30, -0.5])
def test_grey_levels_outside_0_1_are_refused_in_one_line(value):
    """to_mnist takes grey levels in [0, 1]; 0-255 pixels or huge floats are a DataError naming
    the range found (they used to overflow the photo analysis's histogram: a RuntimeWarning)."""
    gray = np.zeros((40, 30), np.float64)
    gray[10:30, 12:18] = value
    with pytest.raises(DataError, match=r"expected grey levels in \[0, 1\], got values from"):
        to_mnist(gray)
