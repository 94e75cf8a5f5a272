"""Connected components and grey morphology, checked against brute force on small random images."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.components import box_blur, closing, dilate, fill_holes, label, max_filter, min_filter


def _flood(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels by a plain flood fill: the independent implementation."""
    h, w = mask.shape
    labels = np.zeros((h, w), int)
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not labels[y, x]:
                n += 1
                labels[y, x] = n
                stack = [(y, x)]
                while stack:
                    cy, cx = stack.pop()
                    for yy in range(max(cy - 1, 0), min(cy + 2, h)):
                        for xx in range(max(cx - 1, 0), min(cx + 2, w)):
                            if mask[yy, xx] and not labels[yy, xx]:
                                labels[yy, xx] = n
                                stack.append((yy, xx))
    return labels, n


@pytest.mark.parametrize("seed", range(40))
def test_label_matches_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(1, 25)), int(rng.integers(1, 25)))) < rng.uniform(0.1, 0.7)
    c = label(mask)
    expected, n = _flood(mask)
    assert c.n == n
    assert (c.labels[~mask] == 0).all() and (c.labels[mask] > 0).all()
    # the same partition: each of our labels is exactly one of the flood fill's
    assert len(set(zip(c.labels[mask].tolist(), expected[mask].tolist()))) == n
    for i in range(n):
        ys, xs = np.nonzero(c.labels == i + 1)
        assert c.area[i] == len(ys)
        assert (c.top[i], c.bottom[i], c.left[i], c.right[i]) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)


def test_label_joins_diagonal_neighbours_and_sums():
    mask = np.array([[1, 0, 0, 1],
                     [0, 1, 0, 1],
                     [0, 0, 0, 0],
                     [1, 1, 0, 0]], bool)
    c = label(mask)
    assert c.n == 3
    values = np.arange(16, dtype=float).reshape(4, 4)
    assert sorted(c.sums(values).tolist()) == sorted([0 + 5, 3 + 7, 12 + 13])
    assert c.mask(np.array([True, False, False])).sum() == c.area[0]


def test_fill_holes_fills_only_enclosed_background():
    ring = np.zeros((7, 9), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False            # a hole
    ring[2:5, 7] = True               # a bar beside it, nothing enclosed
    filled = fill_holes(ring)
    assert filled[1:6, 1:6].all() and filled.sum() == ring.sum() + 9


@pytest.mark.parametrize("seed", range(20))
def test_max_min_filters_and_box_blur_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((int(rng.integers(1, 15)), int(rng.integers(1, 15))))
    k = int(rng.integers(1, 12))
    h, w = a.shape
    lo, hi = k // 2, k - k // 2
    window = lambda y, x: a[max(0, y - lo):y + hi, max(0, x - lo):x + hi]  # noqa: E731
    assert np.array_equal(max_filter(a, k), [[window(y, x).max() for x in range(w)] for y in range(h)])
    assert np.array_equal(min_filter(a, k), [[window(y, x).min() for x in range(w)] for y in range(h)])
    r = k // 2
    padded = np.pad(a, r, mode="edge")
    mean = [[padded[y:y + 2 * r + 1, x:x + 2 * r + 1].mean() for x in range(w)] for y in range(h)]
    assert np.allclose(box_blur(a, r), mean, atol=1e-6)


def test_closing_removes_thin_dark_strokes_and_keeps_wide_dark_regions():
    paper = np.ones((40, 60))
    paper[:, 40:] = 0.3               # a wide dark region (a desk)
    paper[10:30, 10:13] = 0.1         # a stroke 3 px wide
    out = closing(paper, 9)
    assert np.allclose(out[10:30, 10:13], 1.0)
    assert np.allclose(out[:, 40:], 0.3) and np.allclose(out[:, :36], 1.0)
    dot = np.zeros((5, 5), bool)
    dot[2, 2] = dot[0, 4] = True
    assert dilate(dot, 1).sum() == 9 + 4 - 1      # a 3×3 square, a corner's 2×2, one pixel shared
