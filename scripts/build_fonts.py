"""Render digitnet's ``fonts`` data set once and ship it, so ``make train`` gives the same
numbers on every machine (the rendering depends on the fonts a machine has installed).

Usage (``make fonts`` runs exactly this)::

    python scripts/build_fonts.py digitnet/resources/fonts-digits.npz

Typed digits, 300 per class to train on and 50 per class to test, each drawn in a random font
file of this machine (and Pillow's built-in font) at a random size, slant and weight, then
put through ``preprocess.to_mnist`` exactly as ``predict`` does (see ``digitnet.synth``).
The font files used are listed in the archive's ``fonts`` entry.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digitnet.synth import SEED, TEST_PER_CLASS, TRAIN_PER_CLASS, font_digits, font_files  # noqa: E402


def main(out: str) -> None:
    fonts = font_files()
    train_images, train_labels = font_digits(TRAIN_PER_CLASS, SEED, fonts)
    test_images, test_labels = font_digits(TEST_PER_CLASS, SEED + 1, fonts)
    np.savez_compressed(out, train_images=train_images, train_labels=train_labels.astype(np.uint8),
                        test_images=test_images, test_labels=test_labels.astype(np.uint8),
                        fonts=np.array([p.name for p in fonts] + ["Pillow built-in"]))
    print(f"{out}: {len(train_labels)} train / {len(test_labels)} test digits from {len(fonts)} font files")


if __name__ == "__main__":
    main(sys.argv[1])
