"""digitnet predict --show: under each answer, the preprocessing's steps as labelled terminal
pictures side by side (a photo: image, paper removed, kept, network saw), plain characters
with NO_COLOR or in a pipe, colour on a terminal."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cli_helpers
from digitnet.cli import app

PHOTO_PANELS = ["image", "paper removed", "kept", "network saw"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    """A generated photo of a 3 on a sheet lying on a desk, lit unevenly (tests/test_photos.py's scene)."""
    from test_photos import THREE, photo_of, strokes

    path = tmp_path_factory.mktemp("show") / "photo.png"
    gray = photo_of([(strokes(THREE), 0)], gradient=0.3)
    Image.fromarray((gray * 255).round().astype(np.uint8)).save(path)
    return str(path)


def titles_in_order(text: str, titles: list[str]) -> bool:
    """True when every title appears in ``text``, in this order."""
    at = [text.find(t) for t in titles]
    return -1 not in at and at == sorted(at)


def test_a_photo_shows_each_step_in_plain_text(photo, tmp_path):
    one = np.zeros((1, 28, 28), np.uint8)
    one[0, 8:20, 12:16] = 255                                                    # a 1, as MNIST stores it
    np.save(tmp_path / "one.npy", one)
    r = CliRunner().invoke(app, ["predict", photo, str(tmp_path / "one.npy"), "--show"], env={"NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output
    photo_part, array_part = r.output.split("one.npy[0]")
    assert titles_in_order(photo_part, PHOTO_PANELS)
    assert "paper removed" not in array_part and "network saw" in array_part     # an array row: the 28×28 only
    assert "@" in photo_part and "@" in array_part
    assert r.output.count("input") == 2                                          # each answer with its header


def test_a_clean_image_shows_the_image_and_the_28x28(tmp_path):
    img = np.full((60, 40), 255, np.uint8)
    img[10:50, 18:23] = 0
    Image.fromarray(img).save(tmp_path / "one.png")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "one.png"), "--show"], env={"NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    assert titles_in_order(r.output, ["image", "network saw"]) and "paper removed" not in r.output


def test_a_doubtful_answer_says_why_above_its_steps(tmp_path):
    """Two digits side by side: the reason under the row, the steps after it."""
    from digitnet.datasets import load_dataset

    x = load_dataset("embedded").test_images[:2]
    canvas = np.full((60, 100), 255, np.uint8)
    canvas[16:44, 10:38] -= x[0]
    canvas[16:44, 40:68] -= x[1]
    Image.fromarray(canvas).save(tmp_path / "two.png")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "two.png"), "--show"], env={"NO_COLOR": "1"})
    lines = r.output.splitlines()
    why = next(i for i, line in enumerate(lines) if line.startswith("? several separate marks"))
    assert why < next(i for i, line in enumerate(lines) if line.startswith("image"))


def test_the_console_script_in_a_pipe_and_on_a_terminal(photo):
    """A real run: in a pipe with NO_COLOR, plain characters only; on a terminal, colour."""
    r = cli_helpers.run(["predict", photo, "--show"])
    out = r.stdout.decode()
    assert r.returncode == 0 and "\x1b" not in out and titles_in_order(out, PHOTO_PANELS)
    code, text = cli_helpers.run_in_terminal(["predict", photo, "--show"], 160, NO_COLOR="")
    assert code == 0 and "\x1b[" in text and titles_in_order(text, PHOTO_PANELS)


def test_each_image_is_prepared_once_and_its_steps_come_from_that_pass(photo, monkeypatch):
    """--show draws the steps the answer's own preprocessing made: one pass per image (the
    file is not read and prepared a second time for the pictures)."""
    from digitnet import preprocess

    calls = []
    real = preprocess.PREPROCESSORS["mnist"]
    monkeypatch.setitem(preprocess.PREPROCESSORS, "mnist", lambda *a, **k: calls.append(1) or real(*a, **k))
    r = CliRunner().invoke(app, ["predict", photo, photo, "--show"], env={"NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    assert len(calls) == 2
    first, second = r.output.split("photo.png")[1:3]
    assert titles_in_order(first, PHOTO_PANELS) and titles_in_order(second, PHOTO_PANELS)


def test_image_bytes_on_stdin_show_their_steps(photo):
    """An image piped in has no file to read again, and still shows every step."""
    with open(photo, "rb") as f:
        data = f.read()
    r = CliRunner().invoke(app, ["predict", "-", "--show"], input=data, env={"NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    assert titles_in_order(r.output, PHOTO_PANELS)
