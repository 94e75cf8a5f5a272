"""Doubt: when an answer should not be trusted, and the reason, in a few words.

A network's top score is no guarantee: as 3Blue1Brown's video shows, it is confident on pure
noise. ``warnings`` looks at what else there is, per input, and names the reasons found:

- what the preprocessing saw in the image (``photo.Found.notes``): other marks as large as a
  quarter of the digit beside it (two digits, a digit and a letter);
- the 28×28 the network saw: almost no ink, or a nearly full box;
- typicality: the input's histograms of gradient orientation (HOG: 4×4 cells × 9 directions,
  which way the strokes run where) are far from all training digits of the class the network
  answered (1 - the mean cosine similarity of the 5 nearest among the embedded MNIST and the
  typed digits). Letters, scribbles and noise are; digits, photographed or not, are not.
  Digit models and image files only (an array row is already in the network's format, and
  arrays can be large: the search costs 1.6 MFLOP a row);
- the answer: below LOW_CONFIDENCE, or a different answer once the input moves one pixel.

Measured with benchmarks/photo_bench.py (its output gives each reason's count): ink touching
the image's edge, several blobs in the 28×28 and ink wider than tall were tried too and left
out: on clean digits they cost more false alarms (a tightly cropped digit touches the edge;
2.3% of the clean set) than they caught out-of-distribution inputs the other rules missed
(under 1% each). NumPy only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

LOW_CONFIDENCE = 0.6       # an answer below this is flagged whatever else holds
SHIFT_CONFIDENCE = 0.5     # the answer's score when the input moves one pixel must stay above this
INK = 0.3                  # a pixel of the 28×28 is ink above this
LITTLE_INK, FULL_BOX = 0.03, 0.35   # ink's mean over the field: below, almost none; above, a filled box
UNLIKE = 0.25              # 1 - mean cosine similarity to the 5 nearest training digits of the class
NEAREST = 5
HOG_CELL, HOG_BINS = 7, 9
DIGITS = tuple(str(d) for d in range(10))
REFERENCE_VERSION = 1

# The reasons, in the order they are reported.
REASONS = {
    "marks": "several separate marks",
    "empty": "almost no ink",
    "full": "a nearly full box",
    "unlike": "unlike the digits it was trained on",
    "shift": "the answer changes when moved by one pixel",
    "low": "low confidence",
}


def hog(images: np.ndarray) -> np.ndarray:
    """Histograms of gradient orientation of images (k, 28, 28): (k, 16·9), unit length.
    Per 7×7 cell, the gradient magnitudes summed into 9 bins of orientation (0-180°)."""
    x = np.asarray(images, np.float32).reshape(-1, 28, 28)
    k = len(x)
    gy = np.zeros_like(x)
    gx = np.zeros_like(x)
    gy[:, 1:-1] = x[:, 2:] - x[:, :-2]                                   # (k, 28, 28) central differences
    gx[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    magnitude = np.hypot(gx, gy)
    orientation = np.mod(np.arctan2(gy, gx), np.pi)
    b = np.minimum((orientation * (HOG_BINS / np.pi)).astype(np.int64), HOG_BINS - 1)
    n = 28 // HOG_CELL
    cell = (np.arange(28) // HOG_CELL)
    cell_index = cell[:, None] * n + cell[None, :]                       # (28, 28) which cell a pixel is in
    slot = (np.arange(k)[:, None, None] * n * n + cell_index[None]) * HOG_BINS + b   # (k, 28, 28)
    h = np.bincount(slot.ravel(), weights=magnitude.ravel(), minlength=k * n * n * HOG_BINS)
    h = h.reshape(k, n * n * HOG_BINS).astype(np.float32)
    return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-6)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "digitnet"


_REFERENCE: tuple[np.ndarray, np.ndarray] | None = None


def reference() -> tuple[np.ndarray, np.ndarray]:
    """HOG features (n, 144) float32 of the training digits shipped with digitnet (the embedded
    MNIST and the typed digits' train splits), sorted by label, and their labels (n,). Made once
    and kept in the user's cache folder (a cache that cannot be written is only slower)."""
    global _REFERENCE
    if _REFERENCE is not None:
        return _REFERENCE
    from digitnet.datasets import load_dataset, shipped_file

    files = [shipped_file(name) for name in ("embedded", "fonts")]
    key = hashlib.sha1(repr([REFERENCE_VERSION, HOG_CELL, HOG_BINS] +
                            [(f.name, f.stat().st_size) for f in map(Path, map(str, files))]).encode()).hexdigest()[:12]
    path = _cache_dir() / f"doubt-reference-{key}.npz"
    try:
        with np.load(path) as z:
            _REFERENCE = (z["features"].astype(np.float32), z["labels"])
            return _REFERENCE
    except (OSError, KeyError, ValueError):
        pass
    parts = [load_dataset(name) for name in ("embedded", "fonts")]
    images = np.concatenate([p.train_images for p in parts]).astype(np.float32) / 255
    labels = np.concatenate([p.train_labels for p in parts])
    order = np.argsort(labels, kind="stable")
    _REFERENCE = (hog(images[order]), labels[order])
    try:
        from digitnet.atomic import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.savez(f, features=_REFERENCE[0].astype(np.float16), labels=_REFERENCE[1])
    except OSError:
        pass
    return _REFERENCE


def unlikeness(images: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """1 - the mean cosine similarity of each image's HOG to its NEAREST nearest training digits
    of the answered class: (k,) in [0, 1]. Images (k, 28, 28), answers (k,) digit labels."""
    features, labels = reference()
    h = hog(images)                                                      # (k, 144)
    out = np.zeros(len(h), np.float32)
    for c in np.unique(answers):
        rows = np.flatnonzero(answers == c)
        ref = features[labels == c]                                      # (n_c, 144)
        sim = h[rows] @ ref.T                                            # (r, n_c)
        top = np.partition(sim, sim.shape[1] - NEAREST, axis=1)[:, -NEAREST:]
        out[rows] = 1 - top.mean(axis=1)
    return out


def _shifted(images: np.ndarray) -> np.ndarray:
    """The images moved one pixel right, left, down and up (zeros come in): (4, k, H, W)."""
    out = np.zeros((4, *images.shape), images.dtype)
    out[0, :, :, 1:] = images[:, :, :-1]
    out[1, :, :, :-1] = images[:, :, 1:]
    out[2, :, 1:] = images[:, :-1]
    out[3, :, :-1] = images[:, 1:]
    return out


def image_reasons(images: np.ndarray, notes: list[dict | None]) -> list[list[str]]:
    """Reasons (REASONS keys) per image that the preprocessing's notes and the images (k, H, W)
    the network saw give by themselves."""
    mean = images.reshape(len(images), -1).mean(axis=1)                       # (k,)
    inked = (images > INK).reshape(len(images), -1).any(axis=1)               # (k,)
    why: list[list[str]] = [["marks"] if n and n.get("other_marks") else [] for n in notes]
    for i in np.flatnonzero((mean < LITTLE_INK) | ~inked):
        why[i].append("empty")
    for i in np.flatnonzero(mean > FULL_BOX):
        why[i].append("full")
    return why


def warnings(model, images: np.ndarray, probs: np.ndarray, notes: list[dict | None] | None = None) -> list[str | None]:
    """One warning per input (None when nothing is doubtful): the reasons, in REASONS' order,
    joined by "; ". ``images`` (k, H, W) what the network saw, ``probs`` (k, n_classes) its
    scores, ``notes`` the preprocessing's notes per image (None for array rows)."""
    k = len(images)
    if k == 0:
        return []
    notes = notes or [None] * k
    answers = probs.argmax(axis=1)
    reasons = image_reasons(images, notes)
    # typicality, for digit models and image files (an array row is already the network's
    # format, and its data set may be large: the search costs 1.6 MFLOP a row)
    pictures = np.flatnonzero([n is not None for n in notes])
    if tuple(model.class_names) == DIGITS and images.shape[1:] == (28, 28) and len(pictures):
        far = unlikeness(images[pictures], answers[pictures]) > UNLIKE
        for i in pictures[far]:
            reasons[i].append("unlike")
    # one pixel left, right, up, down: does the answer hold?
    # (array rows answered at 99.9% or more are not moved: on the bench's 2,000 MNIST digits
    # none of them changed answer, and an IDX file can hold 60,000 rows)
    unsure = np.flatnonzero((probs.max(axis=1) < 0.999) | np.array([n is not None for n in notes]))
    if len(unsure):
        moved = _shifted(images[unsure])                                  # (4, u, H, W)
        p = model.scores(moved.reshape(4 * len(unsure), *images.shape[1:])).reshape(4, len(unsure), -1)
        held = p[:, np.arange(len(unsure)), answers[unsure]].min(axis=0)  # (u,)
        for i in unsure[held < SHIFT_CONFIDENCE]:
            reasons[i].append("shift")
    for i in np.flatnonzero(probs.max(axis=1) < LOW_CONFIDENCE):
        reasons[i].append("low")
    order = list(REASONS)
    return ["; ".join(REASONS[r] for r in sorted(set(why), key=order.index)) if why else None for why in reasons]
