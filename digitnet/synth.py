"""Typed digits: a synthetic data set rendered from the fonts on this machine.

MNIST holds pen strokes only; the digits people hand to ``predict`` are often typed or
printed, with serifs, flags and feet ("1" with a base, an open "6") that no MNIST digit has.
Mixing typed digits into training (``--data embedded+fonts``) teaches the network those
shapes. Each digit is drawn in a random font file at a random size, slant and weight, then
put through exactly the preprocessing ``predict`` uses (``preprocess.to_mnist``), so it is
stored as the network will see a typed digit. Seeded: the same fonts give the same set.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from digitnet.errors import DataError

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts")
# Families whose digit code points are not ordinary digits.
SKIP = ("symbol", "emoji", "dingbat", "math", "music", "wingding")
TRAIN_PER_CLASS, TEST_PER_CLASS = 300, 50
SEED = 20261126


def font_files() -> list[Path]:
    """TrueType/OpenType files under the usual font folders that can draw digits, sorted."""
    found = set()
    for root in FONT_DIRS:
        if root.is_dir():
            found.update(p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf")
                         and not any(s in p.name.lower() for s in SKIP))
    return sorted(found)


def render_digit(digit: int, font_path: Path | None, rng: np.random.Generator) -> np.ndarray:
    """One typed digit, MNIST-style: float32 (28, 28) in [0, 1]. ``font_path`` None uses
    Pillow's built-in font."""
    from PIL import Image, ImageDraw, ImageFont

    from digitnet.preprocess import to_mnist

    size = int(rng.integers(40, 90))
    font = ImageFont.truetype(str(font_path), size) if font_path else ImageFont.load_default(size)
    canvas = Image.new("L", (3 * size, 3 * size), 0)
    stroke = int(rng.integers(0, 3)) if rng.random() < 0.4 else 0     # faux-bold
    ImageDraw.Draw(canvas).text((size, size // 2), str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    shear = rng.uniform(-0.3, 0.3)
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, (1, shear, -shear * 1.5 * size, 0, 1, 0),
                              resample=Image.Resampling.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR)
    return to_mnist(np.asarray(canvas, np.float32) / 255.0)


def font_digits(per_class: int, seed: int, fonts: list[Path] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` typed digits of each class: uint8 images (n, 28, 28) and labels (n,)."""
    fonts = font_files() if fonts is None else fonts
    choices: list[Path | None] = [*fonts, None]         # Pillow's own font is always there
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    images = np.empty((len(labels), 28, 28), np.uint8)
    for i, d in enumerate(labels):
        font = choices[int(rng.integers(len(choices)))]
        try:
            images[i] = np.rint(render_digit(int(d), font, rng) * 255)
        except (OSError, DataError):                  # a font that cannot draw this digit
            images[i] = np.rint(render_digit(int(d), None, rng) * 255)
    return images, labels


def _cache_key(fonts: list[Path]) -> str:
    """What the rendered set depends on: the font files, the counts, the seed, the code."""
    import PIL

    from digitnet import __version__

    h = hashlib.sha256(f"{__version__} {PIL.__version__} {TRAIN_PER_CLASS} {TEST_PER_CLASS} {SEED}".encode())
    h.update(Path(__file__).read_bytes())
    for f in fonts:
        st = f.stat()
        h.update(f"{f} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cache_path(key: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "digitnet" / f"fonts-{key}.npz"


def load_fonts_dataset():
    """The ``fonts`` data set: typed digits, 300 per class to train on and 50 to test.

    Rendering takes a few seconds, so the result is kept in the user cache directory, keyed
    by the font files and this code; a cache that cannot be read or written is ignored."""
    from digitnet.atomic import atomic_write
    from digitnet.datasets import DIGIT_NAMES, make_dataset

    fonts = font_files()
    source = f"rendered from {len(fonts)} font files and Pillow's built-in font"
    cache = _cache_path(_cache_key(fonts))
    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = [z[k] for k in ("train_images", "train_labels", "test_images", "test_labels")]
        return make_dataset("fonts", *arrays, DIGIT_NAMES, source)
    except (OSError, ValueError, KeyError, DataError):
        pass
    train_images, train_labels = font_digits(TRAIN_PER_CLASS, SEED, fonts)
    test_images, test_labels = font_digits(TEST_PER_CLASS, SEED + 1, fonts)
    dataset = make_dataset("fonts", train_images, train_labels, test_images, test_labels, DIGIT_NAMES, source)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache) as f:
            np.savez(f, train_images=train_images, train_labels=train_labels,
                     test_images=test_images, test_labels=test_labels)
    except OSError:
        pass
    return dataset
