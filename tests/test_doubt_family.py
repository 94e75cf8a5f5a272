"""Doubt over whole families of inputs that are not one readable digit, not only the bench's
examples: blank images, pure noise, letters, two digits side by side, a very faint digit, and
files that are not images at all. Each gets an answer flagged with a clear reason, or an error
row with one; the command line says a broken file in one line on stderr, with no traceback."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import cli_helpers
from digitnet import doubt
from digitnet.datasets import load_dataset
from digitnet.modelfile import default_model_path, load_model
from digitnet.predict import predict_inputs


@pytest.fixture(scope="module")
def model():
    return load_model(default_model_path())


@pytest.fixture(scope="module")
def digits():
    """MNIST test digits (the embedded set), ink bright, float 0-1."""
    return load_dataset("embedded").test_images[:10].astype(np.float32) / 255


def _png(path: Path, a: np.ndarray) -> str:
    Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return str(path)


def _rows(model, tmp_path, images: dict) -> dict:
    """predict's rows for images (name -> grey array) saved as PNG files, by name."""
    paths = [_png(tmp_path / f"{name}.png", a) for name, a in images.items()]
    return {Path(r.input).stem: r for r in predict_inputs(model, paths)}


def _lit(h: int, w: int) -> np.ndarray:
    """Paper lit unevenly, as in a photo: 0.9 falling to 0.6 across the frame."""
    return np.tile(np.linspace(0.9, 0.6, w, dtype=np.float32), (h, 1))


def test_blank_images_are_no_digit(model, tmp_path):
    rows = _rows(model, tmp_path, {"white": np.ones((80, 60)), "black": np.zeros((80, 60)),
                                   "grey-small": np.full((28, 28), 0.5), "lit-paper": _lit(300, 400)})
    for name, r in rows.items():
        assert r.error is not None and r.error.startswith("no digit found: the image is blank"), (name, r.error)


def test_noise_is_no_digit(model, tmp_path):
    rng = np.random.default_rng(5)
    rows = _rows(model, tmp_path, {"uniform": rng.random((200, 200)), "small": rng.random((28, 28)),
                                   "gaussian": 0.5 + 0.25 * rng.standard_normal((300, 400)),
                                   "grainy-paper": 0.9 + 0.02 * rng.standard_normal((400, 300))})
    for name, r in rows.items():
        assert r.error is not None and r.error.startswith("no digit found: only noise"), (name, r.error)


LETTERS = {   # pen strokes in a unit box: letters no digit is shaped like
    "K": [[(0.2, 0), (0.2, 1)], [(0.8, 0), (0.2, 0.55)], [(0.35, 0.45), (0.85, 1)]],
    "M": [[(0.1, 1), (0.1, 0), (0.5, 0.6), (0.9, 0), (0.9, 1)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.4), (0.75, 1), (1, 0)]],
    "X": [[(0.1, 0), (0.9, 1)], [(0.9, 0), (0.1, 1)]],
    "H": [[(0.15, 0), (0.15, 1)], [(0.85, 0), (0.85, 1)], [(0.15, 0.5), (0.85, 0.5)]],
    "E": [[(0.85, 0), (0.15, 0), (0.15, 1), (0.85, 1)], [(0.15, 0.5), (0.7, 0.5)]],
    "N": [[(0.15, 1), (0.15, 0), (0.85, 1), (0.85, 0)]],
    "R": [[(0.2, 1), (0.2, 0), (0.7, 0), (0.8, 0.25), (0.7, 0.5), (0.2, 0.5)], [(0.45, 0.5), (0.85, 1)]],
}


def _letter(strokes, size: int = 200, width: int = 14) -> np.ndarray:
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    for s in strokes:
        draw.line([(30 + x * (size - 60), 30 + y * (size - 60)) for x, y in s], fill=0, width=width, joint="curve")
    return np.asarray(im, np.float32) / 255


def test_letters_are_unlike_the_digits(model, tmp_path):
    """Every letter here is flagged as unlike the training digits. (Not every letter is: an A
    reads as a 4 and a T as a 7 that the typicality rule accepts; benchmarks/photo_bench.py
    measures the share on its letters.)"""
    rows = _rows(model, tmp_path, {k: _letter(v) for k, v in LETTERS.items()})
    for name, r in rows.items():
        assert r.error is None and r.warning and doubt.REASONS["unlike"] in r.warning, (name, r.label, r.warning)


def test_two_digits_side_by_side_are_several_marks(model, digits, tmp_path):
    images = {}
    for i in range(0, 10, 2):
        canvas = np.ones((60, 100), np.float32)
        canvas[16:44, 10:38] -= digits[i]
        canvas[16:44, 42:70] -= digits[i + 1]
        images[f"clean-{i}"] = canvas
        photo = _lit(300, 400)                          # the same two, written on unevenly lit paper
        big = [np.asarray(Image.fromarray(d).resize((112, 112)), np.float32) for d in digits[i:i + 2]]
        photo[90:202, 70:182] *= 1 - 0.8 * big[0]
        photo[90:202, 200:312] *= 1 - 0.8 * big[1]
        images[f"photo-{i}"] = photo
    for name, r in _rows(model, tmp_path, images).items():
        assert r.warning and r.warning.startswith(doubt.REASONS["marks"]), (name, r.label, r.warning)


@pytest.mark.parametrize("contrast", [0.03, 0.06])
def test_a_very_faint_digit_is_too_faint_not_read(model, digits, tmp_path, contrast):
    """A digit a few percent darker than the paper, on clean paper and in a photo: "blank or its
    ink too faint", with how much it stands out; a little darker and it is read."""
    photo = _lit(300, 400)
    photo[75:225, 125:275] *= 1 - contrast * np.asarray(Image.fromarray(digits[1]).resize((150, 150)), np.float32)
    rows = _rows(model, tmp_path, {"clean": 1 - contrast * np.pad(digits[0], 30), "photo": photo})
    for name, r in rows.items():
        says = "its ink too faint (the strongest mark stands out from the paper by"
        assert r.error is not None and says in r.error, (name, r.error)
    r = _rows(model, tmp_path, {"readable": 1 - 0.15 * np.pad(digits[0], 30)})["readable"]
    assert r.error is None and r.label == 7


def _png_bytes(w: int, h: int, rows: int) -> bytes:
    """A greyscale PNG whose header says w×h, with the data of its first ``rows`` rows only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = zlib.compress((b"\x00" + b"\xff" * w) * rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, content, says", [
    ("truncated.png", lambda good: good[: len(good) // 2], "corrupt or truncated image"),
    ("header-only.png", lambda good: good[:30], "not an image Pillow can read"),
    ("scrambled.png", lambda good: good[:60] + bytes(b ^ 0x5A for b in good[60:-20]) + good[-20:], "corrupt"),
    ("bomb.png", lambda good: _png_bytes(20000, 20000, 4),
     "refused as a decompression bomb (400 megapixels; the limit is 100)"),
])
def test_a_broken_or_hostile_file_is_one_line_on_stderr(tmp_path, name, content, says):
    """A real run: exit code 1, the file named with the reason in one line on stderr, no traceback."""
    good = tmp_path / "good.png"
    img = np.full((60, 40), 255, np.uint8)
    img[10:50, 18:23] = 0
    Image.fromarray(img).save(good)
    bad = tmp_path / name
    bad.write_bytes(content(good.read_bytes()))
    r = cli_helpers.run(["predict", bad, "--format", "csv"])
    assert r.returncode == 1
    assert r.stderr.decode().count("\n") == 1 and "Traceback" not in r.stderr.decode()
    assert r.stderr.decode().startswith(f"digitnet: error: {bad}: ") and says in r.stderr.decode(), r.stderr
