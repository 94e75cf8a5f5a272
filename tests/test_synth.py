"""Typed digits rendered from fonts: MNIST-shaped, seeded, and readable as digits."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.synth import font_digits, font_files, render_digit


def test_font_digits_are_mnist_shaped_and_seeded():
    a_images, a_labels = font_digits(3, seed=1)
    b_images, _ = font_digits(3, seed=1)
    assert a_images.shape == (30, 28, 28) and a_images.dtype == np.uint8
    assert np.array_equal(a_images, b_images)
    assert a_labels.tolist() == sorted(a_labels.tolist()) and set(a_labels.tolist()) == set(range(10))
    # white ink on black, centred like MNIST: dark border, ink in the middle
    assert a_images[:, :2, :].max() == 0 or a_images[:, :, :2].mean() < 5
    assert all(img[8:20, 8:20].mean() > img.mean() for img in a_images)


def test_builtin_font_needs_no_font_files():
    img = render_digit(7, None, np.random.default_rng(0))
    assert img.shape == (28, 28) and img.max() == 1.0
    images, labels = font_digits(2, seed=0, fonts=[])
    assert images.shape == (20, 28, 28) and images.reshape(20, -1).max(1).min() > 0


def test_font_files_are_fonts():
    assert all(p.suffix.lower() in (".ttf", ".otf") for p in font_files())


def test_shipped_fonts_set_is_the_rendered_one():
    """The shipped set is what scripts/build_fonts.py renders: ten balanced classes of
    MNIST-shaped typed digits; a few re-rendered here match it bit for bit when the machine
    has the same fonts (this one does: the set was made here)."""
    from digitnet.datasets import load_dataset
    from digitnet.synth import SEED, TEST_PER_CLASS, TRAIN_PER_CLASS

    fonts = load_dataset("fonts")
    assert fonts.train_images.shape == (10 * TRAIN_PER_CLASS, 28, 28)
    assert fonts.test_images.shape == (10 * TEST_PER_CLASS, 28, 28)
    assert np.bincount(fonts.train_labels).tolist() == [TRAIN_PER_CLASS] * 10
    from importlib import resources

    with resources.as_file(resources.files("digitnet") / "resources" / "fonts-digits.npz") as p:
        names = [str(n) for n in np.load(p)["fonts"]]
    by_name = {p.name: p for p in font_files()}
    if not all(n in by_name for n in names[:-1]):
        pytest.skip("this machine lacks some of the fonts the shipped set was rendered from")
    test_images, test_labels = font_digits(TEST_PER_CLASS, SEED + 1, [by_name[n] for n in names[:-1]])
    assert np.array_equal(test_images, fonts.test_images)
    assert np.array_equal(test_labels, fonts.test_labels)
