"""Doubt: each rule fires on what it is for and not on clean digits; predict carries the reasons
in ``Row.warning`` and the csv/tsv/jsonl ``warning`` field, and the table flags them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitnet import doubt
from digitnet.datasets import load_dataset
from digitnet.modelfile import default_model_path, load_model
from digitnet.predict import predict_inputs



@pytest.fixture(scope="module")
def model():
    return load_model(default_model_path())


@pytest.fixture(scope="module")
def mnist_test():
    d = load_dataset("embedded")
    return d.test_images[:300].astype(np.float32) / 255, d.test_labels[:300]


def test_hog_puts_a_vertical_edge_in_the_horizontal_gradient_bin_of_its_cell():
    """Worked by hand: a step from black to white between columns 9 and 10 has a gradient
    along x only (orientation 0, bin 0), in the cells of column 1 (pixels 7-13), rows 0-3."""
    x = np.zeros((28, 28), np.float32)
    x[:, 10:] = 1
    h = doubt.hog(x[None])[0].reshape(4, 4, doubt.HOG_BINS)
    assert np.allclose(np.linalg.norm(h), 1)
    assert np.allclose(h[:, 1, 0], 0.5)            # four equal cells, unit length overall
    h[:, 1, 0] = 0
    assert np.allclose(h, 0)


def test_hog_is_indifferent_to_brightness_and_notes_direction():
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28)).astype(np.float32)
    assert np.allclose(doubt.hog(x), doubt.hog(0.5 * x), atol=1e-6)
    bar = np.zeros((28, 28), np.float32)
    bar[4:24, 12:16] = 1
    assert doubt.hog(bar[None])[0] @ doubt.hog(bar.T[None])[0] < 0.2    # upright vs lying: unlike


def test_training_digits_are_typical_and_noise_is_not(mnist_test):
    features, labels = doubt.reference()
    assert features.shape == (len(labels), 16 * doubt.HOG_BINS) and np.all(np.diff(labels) >= 0)
    images, answers = mnist_test
    unlike = doubt.unlikeness(images, answers)
    assert np.mean(unlike > doubt.UNLIKE) < 0.05
    noise = np.random.default_rng(1).random((20, 28, 28)).astype(np.float32)
    assert (doubt.unlikeness(noise, np.arange(20) % 10) > doubt.UNLIKE).all()
    # the class matters: 1s are nearer the training 1s than the training 0s
    ones = images[answers == 1][:10]
    wrong, right = doubt.unlikeness(ones, np.zeros(len(ones), int)), doubt.unlikeness(ones, np.ones(len(ones), int))
    assert (wrong > right).all() and wrong.mean() > right.mean() + 0.05


class Shifty:
    """A stand-in model: its answer is the column of the ink's centre over 3 (columns 0-2 say
    0, 3-5 say 1, …), so moving an input one pixel sideways can change it: the shift rule's
    own test."""

    class_names = tuple(str(d) for d in range(10))

    def scores(self, x):
        x = np.asarray(x, np.float64).reshape(len(x), 28, 28)
        col = (x.sum(axis=1) * np.arange(28)).sum(axis=1) / np.maximum(x.sum(axis=(1, 2)), 1e-9)
        p = np.full((len(x), 10), 0.0005)
        p[np.arange(len(x)), np.clip((col // 3).astype(int), 0, 9)] = 0.9955
        return p


def test_an_answer_that_moves_with_the_input_is_flagged():
    m = Shifty()
    on_edge = np.zeros((1, 28, 28), np.float32)
    on_edge[0, 8:20, 14:16] = 1                   # centre 14.5: says 4, one pixel right 15.5 says 5
    inside = np.zeros((1, 28, 28), np.float32)
    inside[0, 8:20, 12:16] = 1                    # centre 13.5: says 4 one pixel either way
    w = doubt.warnings(m, np.concatenate([on_edge, inside]), m.scores(np.concatenate([on_edge, inside])))
    assert w[0] == doubt.REASONS["shift"] and w[1] is None


def test_each_image_rule_names_its_reason(model, mnist_test):
    images, _ = mnist_test
    digit = images[0]
    empty = np.zeros((28, 28), np.float32)
    empty[14, 14] = 0.5
    full = np.full((28, 28), 0.8, np.float32)
    batch = np.stack([digit, digit, empty, full])
    notes = [{}, {"other_marks": 1}, {}, {}]
    w = doubt.warnings(model, batch, model.scores(batch), notes)
    assert w[0] is None
    assert doubt.REASONS["marks"] in w[1]
    assert doubt.REASONS["empty"] in w[2]
    assert doubt.REASONS["full"] in w[3]


def test_arrays_skip_the_typicality_search(model, mnist_test, monkeypatch):
    """Rows of an array file (notes None) are not searched for (their data set can be large);
    image files are."""
    calls = []
    real = doubt.unlikeness
    monkeypatch.setattr(doubt, "unlikeness", lambda x, a: calls.append(len(x)) or real(x, a))
    images = mnist_test[0][:5]
    doubt.warnings(model, images, model.scores(images), [None] * 5)
    assert calls == []
    doubt.warnings(model, images, model.scores(images), [None, {}, None, {}, {}])
    assert calls == [3]


def test_clean_digits_are_rarely_flagged_and_noise_always(model, mnist_test):
    images, _ = mnist_test
    w = doubt.warnings(model, images, model.scores(images), [{}] * len(images))
    assert np.mean([x is not None for x in w]) <= 0.05
    noise = np.random.default_rng(2).random((30, 28, 28)).astype(np.float32)
    w = doubt.warnings(model, noise, model.scores(noise), [{}] * 30)
    assert all(x is not None for x in w)


def _png(path: Path, a: np.ndarray) -> str:
    Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).save(path)
    return str(path)


def _two_digits(images) -> np.ndarray:
    """Two MNIST digits side by side, dark on light, as a person would write a number."""
    canvas = np.ones((60, 100), np.float32)
    canvas[16:44, 10:38] -= images[0]
    canvas[16:44, 40:68] -= images[1]
    return np.clip(canvas, 0, 1)


def test_predict_rows_carry_the_warning_of_their_own_image(model, mnist_test, tmp_path):
    """The preprocessing's notes reach the row of their own image, also when an unreadable
    file sits between two images (its row takes no notes)."""
    images, _ = mnist_test
    a = _png(tmp_path / "a-two.png", _two_digits(images))
    (tmp_path / "b-broken.png").write_bytes(b"not an image")
    c = _png(tmp_path / "c-one.png", 1 - np.pad(images[0], 20))
    rows = list(predict_inputs(model, [a, str(tmp_path / "b-broken.png"), c]))
    assert [r.error is not None for r in rows] == [False, True, False]
    assert doubt.REASONS["marks"] in rows[0].warning
    assert rows[1].warning is None and rows[2].warning is None


def test_the_samples_are_not_flagged(model, samples):
    rows = list(predict_inputs(model, [str(samples)]))
    assert len(rows) == 30 and not any(r.warning for r in rows)


def test_cli_writes_the_warning(mnist_test, tmp_path):
    from typer.testing import CliRunner

    from digitnet.cli import app

    images, _ = mnist_test
    two = _png(tmp_path / "two.png", _two_digits(images))
    one = _png(tmp_path / "one.png", 1 - np.pad(images[0], 20))
    runner = CliRunner()
    out = runner.invoke(app, ["predict", two, one, "--format", "csv"]).output
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["warning"].startswith(doubt.REASONS["marks"]) and rows[1]["warning"] == ""
    out = runner.invoke(app, ["predict", two, one, "--format", "jsonl"]).output
    objs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert doubt.REASONS["marks"] in objs[0]["warning"] and objs[1]["warning"] is None
    out = runner.invoke(app, ["predict", two, one]).output
    assert "?" in out.splitlines()[1] and "?" not in out.splitlines()[2]
    assert "doubtful: 1 answer" in " ".join(out.split())
