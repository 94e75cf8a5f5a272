"""Typed digits: a synthetic data set rendered from the fonts on this machine.

MNIST holds pen strokes only; the digits people hand to ``predict`` are often typed or
printed, with serifs, flags and feet ("1" with a base, an open "6") that no MNIST digit has.
Mixing typed digits into training (``--data embedded+fonts``) teaches the network those
shapes. Each digit is drawn in a random font file at a random size, slant and weight, then
put through exactly the preprocessing ``predict`` uses (``preprocess.to_mnist``), so it is
stored as the network will see a typed digit. Seeded: the same fonts give the same set.

The ``fonts`` data set is rendered once with this module (``scripts/build_fonts.py``) and
shipped in ``digitnet/resources``, because the result depends on the fonts a machine has.
"""

from __future__ import annotations

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
