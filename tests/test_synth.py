"""Typed digits rendered from fonts: MNIST-shaped, seeded, and readable as digits."""

from __future__ import annotations

import numpy as np

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


def test_fonts_set_is_cached_and_the_cache_is_optional(monkeypatch, tmp_path):
    import digitnet.synth as synth

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(synth, "TRAIN_PER_CLASS", 2)
    monkeypatch.setattr(synth, "TEST_PER_CLASS", 1)
    first = synth.load_fonts_dataset()
    cached = list((tmp_path / "digitnet").glob("fonts-*.npz"))
    assert len(cached) == 1
    calls = []
    monkeypatch.setattr(synth, "font_digits", lambda *a, **k: calls.append(a))
    second = synth.load_fonts_dataset()
    assert calls == [] and np.array_equal(first.train_images, second.train_images)
    cached[0].write_bytes(b"garbage")                 # a damaged cache is rebuilt, not fatal
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(synth, "TRAIN_PER_CLASS", 2)
    monkeypatch.setattr(synth, "TEST_PER_CLASS", 1)
    assert np.array_equal(synth.load_fonts_dataset().train_images, first.train_images)
