"""Finding the digit in a photo of paper: the steps before MNIST's crop-scale-centre.

A phone photo of a digit is not a clean image: the desk shows around the sheet, light falls
unevenly (a gradient, vignetting, a shadow), the paper may be ruled, squared or a sticky note,
and there is noise and JPEG. ``find_ink`` turns such a photo into ink-bright pixels holding the
digit only:

1. **Work copy**: the image reduced (box filter) to at most WORK_SIDE px on its longer side.
   A drawing (most pixels exactly the level of the frame's edge: the drawing page, a paint
   program) stops here: it is clean, and only its components are found, for the notes.
2. **Polarity**: a photo is dark ink on paper. Light ink on a dark ground is a drawing: a
   dark frame edge of one level all round (no desk texture, vignetting or gradient) holding
   thin bright strokes; and any image under SHEET_MIN_SIDE a side goes by its edge, as before.
3. **Sheet**: in a photo, the largest bright region (Otsu's threshold after a small closing,
   so lines and strokes do not cut it), holes filled, when it is large, nearly convex, has
   straight edges in two directions and is brighter than the desk. It is trusted only when
   the heaviest ink lies on it (a shadow's straight edge can make a lit part look like one).
4. **Background**: the paper's brightness under the light, by a grey closing (dark details
   narrower than the window vanish; shadows, gradients and the desk stay), divided out:
   ``darkness = 1 - image / background``, so a shadow across the digit is no ink. The window
   grows with the strokes (3 stroke widths), and a stroke still wider comes out hollow: its
   middle is filled from a window 2.5 times as wide.
5. **Threshold**: ink is darker than INK_SHARE of the strongest ink and NOISE_SIGMAS of the
   paper's noise.
6. **Lines**: ruled and squared lines (and a table's edge) are thin straight runs of ink
   across the sheet: a Hough transform within LINE_ANGLE of horizontal and vertical finds
   them; their pixels go, except where ink darker than the line crosses them.
7. **Components**: the main one (heavy, near the middle, clear of the frame's and sheet's
   edges, not a frame around others) and the parts of the same digit (a stroke broken by a
   pixel, a 5's separate bar, a 4's other stroke); the rest is dropped, and a mark a quarter
   as heavy as the digit beside it is noted (two digits, a letter and a digit).

Nothing is found (NoInk, "no digit found") on blank paper: only the desk at the frame's edge,
only ink fainter than FAINT, or a sheet with nothing on it; nor in noise (nothing stands out
from the grain by more than NOISE_SIGMAS of it, and the grain is as strong as faint ink). Its
reason (NO_INK) ends up in the error "no digit found: …". A drawing or a scan (an even frame
edge, a flat background, no sheet, no lines) is reported ``clean``, and ``preprocess.to_mnist``
then takes exactly the path it always took, all its ink kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from digitnet.components import Components, box_blur, closing, dilate, fill_holes, label

WORK_SIDE = 640            # the analysis runs on at most this many pixels on the longer side
EVEN_BORDER = 0.12         # the frame's edge is one colour when its interquartile range is below this
DRAWN = 0.5                # a drawing: at least this share of its pixels exactly the edge's level
DRIFT = 0.025              # a drawing's edge drifts less than this in level (a photo's desk more)
LIGHT_STROKE = 0.3         # a light digit's strokes are at most this share of the side wide
SHEET_MIN_SIDE = 100       # photos are at least this many pixels a side (sheets are looked for there)
SHEET_MIN_AREA = 0.12      # a sheet covers at least this share of the frame …
SHEET_MAX_AREA = 0.97      # … and leaves at least 3% of it to the desk
SHEET_PAPER = 0.85         # paper (not ink) makes at least this share of a sheet
SHEET_CONVEX = 0.93        # a sheet fills at least this share of its convex hull
SHEET_CONTRAST = 0.08      # and is brighter than the desk by at least this much
SHEET_EDGE = 0.5           # its outline runs straight for this share of its size in two directions
CLOSING = 0.12             # background window: this share of the shorter side
FLAT = 0.08                # a background varying by less than this is flat (a clean image)
DESK = 0.2                 # ink at the frame's edge covering this share of a photo is a desk or shadow
MIN_INK = 0.08             # ink in a photo (smoothed) is at least this much darker than the paper
FAINT = 0.2                # ink in a photo is this much darker than the paper (90% of its pixels) …
SPOT = 0.0005              # … and covers at least this share of it (a digit is more than a speck)
INK_SHARE = 0.35           # ink is darker than this share of the strongest ink …
NOISE_SIGMAS = 4.0         # … and darker than this many standard deviations of the paper's noise
LINE_ANGLE = 20.0          # lines are within this many degrees of horizontal or vertical
LINE_COVER = 0.6           # and have ink on this share of their chord through the sheet
LINE_SPREAD = 0.85         # spread over this share of the chord
LINE_THICK = 0.012         # and are at most this share of the frame thick (at least 3 px)
SPECK = 0.02               # components lighter than this share of the heaviest are specks
BROKEN = 0.08              # parts this close (share of the digit's height) are one broken stroke
JOIN_GAP = 0.3             # a part joins the digit within this share of the digit's height …
TALLER = 1.6               # … making it at most this much taller …
DIGIT_ASPECT = 1.15        # … while the group stays no wider than this times its height
STROKE, THICK = 0.35, 0.3  # relative thickness (width / length) of a stroke (below), of a region (above)
OTHER_MARK = 0.25          # a dropped component this heavy (share of the digit) is another mark
GRAIN = 0.05               # pixel-to-pixel noise above this is noise, not a photo (the photo set's: under 0.02)


@dataclass
class Found:
    """What ``find_ink`` found in a (work-size) image.

    ``ink`` float32 (h, w) in [0, 1], ink bright, only the digit's pixels (None when ``clean``:
    the caller keeps its old path); ``clean``: a drawing or a scan; the masks (bool (h, w)) of
    the ``sheet`` (None when there is none), the ``kept`` and ``dropped`` components and the
    removed ``lines``; ``darkness`` the image after background removal; ``notes``: what the
    doubt rules read (``touches_edge``, ``other_marks``, ``parts``, ``dark_paper``)."""

    clean: bool
    ink: np.ndarray | None
    work: np.ndarray
    darkness: np.ndarray
    sheet: np.ndarray | None
    kept: np.ndarray
    dropped: np.ndarray
    lines: np.ndarray
    notes: dict = field(default_factory=dict)


class NoInk(Exception):
    """Nothing stands out from the paper. ``even``: the image looked like a drawing or a scan
    (an even frame edge, flat background, no sheet), whose plain path may still find ink.
    ``why``, a key of NO_INK: what there was instead of ink; ``strength``: how much the
    strongest mark stands out from the paper, for "faint"."""

    def __init__(self, even: bool, why: str = "blank", strength: float = 0.0):
        super().__init__(NO_INK[why].format(strength=strength, ink=MIN_INK))
        self.even = even
        self.why = why


# What ``find_ink`` saw when it found no digit, in the words of the error "no digit found: …".
NO_INK = {
    "blank": "the image is blank (no ink stands out from the paper)",
    "faint": "the image is blank or its ink too faint (the strongest mark stands out from the paper by "
             "{strength:.1%}; ink, by at least {ink:.0%})",
    "specks": "only marks too faint or too small to be a digit's ink",
    "noise": "only noise (grain all over the image, nothing standing out from it)",
}


def work_copy(gray: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """gray (H, W) reduced by a whole factor (box filter) to at most ``side`` px on the longer side."""
    factor = math.ceil(max(gray.shape) / side)
    if factor <= 1:
        return gray
    return np.asarray(Image.fromarray(gray, mode="F").reduce(factor), np.float32)


def grain(a: np.ndarray) -> float:
    """The noise from one pixel to the next of an image (H, W): the robust standard deviation
    of horizontal neighbours' differences, over sqrt 2. Near 0 in a photo (its pixels vary
    smoothly, even reduced from a noisy sensor), 0.2-0.3 in pure noise."""
    d = np.abs(np.diff(a, axis=1)) if a.shape[1] > 1 else np.zeros(1, np.float32)
    return 1.4826 * float(np.median(d)) / math.sqrt(2)


def otsu(a: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256 bins)."""
    hist = np.bincount(np.clip((a.ravel() * 255).astype(np.int64), 0, 255), minlength=256).astype(np.float64)
    levels = np.arange(256)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return (int(np.argmax(between)) + 0.5) / 255


def _hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of a mask's pixels (from each row's leftmost and rightmost pixel)."""
    rows = np.flatnonzero(mask.any(axis=1))
    left = mask[rows].argmax(axis=1)
    right = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    pts = sorted(set(zip(np.r_[left, right + 1].tolist(), np.r_[rows, rows].tolist())) |
                 set(zip(np.r_[left, right + 1].tolist(), np.r_[rows + 1, rows + 1].tolist())))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    hull = []
    for seq in (pts, pts[::-1]):                        # Andrew's monotone chain, lower then upper
        part = []
        for p in seq:
            while len(part) >= 2 and cross(part[-2], part[-1], p) <= 0:
                part.pop()
            part.append(p)
        hull += part[:-1]
    x, y = np.array(hull, float).T
    return 0.5 * abs(float(x @ np.roll(y, -1) - y @ np.roll(x, -1)))


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a 4-neighbour outside it (its 1-px outline)."""
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def _strokes(mask: np.ndarray, c: Components | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per component of ``mask``: stroke width 2·area / outline (px) and that width relative
    to the component's bounding box's longer side (strokes 0.05-0.25, a sheet or a loop's
    inside 0.3-0.5)."""
    c = label(mask) if c is None else c
    outline = c.sums(_outline(mask).astype(np.float32))
    width = 2 * c.area / np.maximum(outline, 1.0)
    return width, width / np.maximum(np.maximum(c.bottom - c.top, c.right - c.left), 1)


def _edge_drift(work: np.ndarray) -> float:
    """How much the frame's edge drifts in level as one walks around it (smoothed over a
    twentieth of its length, 10th to 90th percentile): 0 for a drawing's flat background,
    however noisy; a desk's texture, vignetting or a gradient make it 0.01-0.6."""
    ring = np.concatenate([work[0, :], work[:, -1], work[-1, ::-1], work[::-1, 0]]).astype(np.float64)
    n = max(3, len(ring) // 20)
    smooth = np.convolve(np.r_[ring[-n:], ring, ring[:n]], np.ones(n) / n, mode="same")[n:-n]
    lo, hi = np.percentile(smooth, [10, 90])
    return float(hi - lo)


def _bright_thickness(work: np.ndarray) -> float:
    """Stroke width (2·area / outline) of the largest bright region of the image blurred over
    2% of its side (ruled lines and ink blend into the paper), over the shorter side: a light
    digit's strokes give at most 0.3, a sheet of paper 0.17-1."""
    h, w = work.shape
    blurred = box_blur(work, max(1, int(0.02 * min(h, w))))
    bright = blurred > otsu(blurred)
    c = label(bright)
    if c.n == 0:
        return 0.0
    region = c.labels == int(np.argmax(c.area)) + 1
    return 2 * float(region.sum()) / max(float(_outline(region).sum()), 1.0) / min(h, w)


def stroke_width(paper: np.ndarray) -> float:
    """The width (px) of the widest thin dark stroke clear of the frame's edge (Otsu's dark side:
    shadows and desk are thick or reach the edge), 0 when there is none."""
    dark = paper <= otsu(paper)
    c = label(dark)
    if c.n == 0:
        return 0.0
    width, rel = _strokes(dark, c)
    h, w = dark.shape
    inside = (c.top > 0) & (c.left > 0) & (c.bottom < h) & (c.right < w) & (rel < STROKE) & (c.area >= 0.0005 * dark.size)
    return float(width[np.argmax(np.where(inside, c.area, -1))]) if inside.any() else 0.0


def _straight_edges(region: np.ndarray) -> int:
    """How many directions (at least 30° apart) hold a straight stretch of the region's outline
    (within 3 px) at least SHEET_EDGE of the region's size and a quarter of the frame's shorter
    side long: 2 or more for a sheet seen at any angle (the frame's edge counts where the sheet
    runs off it), fewer for a glyph's curves."""
    ys, xs = np.nonzero(_outline(region))
    ys, xs = ys.astype(np.float32), xs.astype(np.float32)
    need = max(SHEET_EDGE * math.sqrt(region.sum()), 0.25 * min(region.shape))
    found: list[float] = []
    offset = int(math.hypot(*region.shape)) + 2
    for deg in np.arange(0, 180, 0.5):
        if any(min(abs(deg - f), 180 - abs(deg - f)) < 30 for f in found):
            continue
        a = math.radians(deg)
        rho = ((xs * math.cos(a) + ys * math.sin(a) + offset) // 3).astype(np.int64)
        if np.bincount(rho).max() >= need:
            found.append(float(deg))
    return len(found)


def find_sheet(work: np.ndarray) -> np.ndarray | None:
    """The sheet of paper in a photo (bool (h, w)), or None when there is no distinct sheet:
    the largest region brighter than Otsu's threshold, holes filled, when it covers
    SHEET_MIN_AREA…SHEET_MAX_AREA of the frame, is mostly paper, nearly convex with straight
    edges, and brighter than what surrounds it. (A bold white digit on black is bright, large
    and may be convex too, but its outline is curved; a white bar, taken for a sheet, holds
    no ink, and the plain path reads it.)"""
    # a small closing first: ruled lines and pen strokes darker than Otsu's threshold would
    # cut the paper into strips
    smooth = closing(work, max(3, int(0.015 * min(work.shape)) | 1))
    bright = smooth > otsu(smooth)
    c = label(bright)
    if c.n == 0:
        return None
    biggest = int(np.argmax(c.area))
    region = c.labels == biggest + 1
    sheet = fill_holes(region)
    area = int(sheet.sum())
    if not SHEET_MIN_AREA <= area / sheet.size <= SHEET_MAX_AREA:
        return None
    holes = area - int(c.area[biggest])                 # ink, lines: the dark inside
    if holes > (1 - SHEET_PAPER) * area or area < SHEET_CONVEX * _hull_area(sheet):
        return None
    if np.median(work[sheet]) - np.median(work[~sheet]) < SHEET_CONTRAST:
        return None
    if _straight_edges(sheet) < 2:
        return None
    return sheet


def find_lines(mask: np.ndarray, darkness: np.ndarray, region: np.ndarray, ink: float) -> np.ndarray:
    """Pixels of ruled/squared lines in mask (bool (h, w)): straight runs within LINE_ANGLE of
    horizontal or vertical that cross ``region`` (the sheet, or the frame) from side to side:
    ink on at least LINE_COVER of the line's chord through the region, spread over LINE_SPREAD
    of it, and thin. A digit's straight stroke stops inside the sheet; a pixel darker than the
    line by a quarter of ``ink`` (a stroke crossing it) stays."""
    ys, xs = np.nonzero(mask)
    out = np.zeros(mask.shape, bool)
    if len(ys) == 0:
        return out
    h, w = mask.shape
    g = max(1, min(h, w) // 160)                        # the region, sampled every g px, measures chords
    ry, rx = np.nonzero(region[::g, ::g])
    ry, rx = (ry * g).astype(np.float32), (rx * g).astype(np.float32)
    ys_f, xs_f = ys.astype(np.float32), xs.astype(np.float32)
    offset = int(math.hypot(h, w)) + 2
    n_bins = 2 * offset + 2
    shortest = 0.3 * min(h, w)
    on_line = np.zeros(len(ys), bool)
    levels = []
    for vertical in (False, True):
        for deg in np.arange(-LINE_ANGLE, LINE_ANGLE + 0.01, 0.5):
            a = math.radians(deg)
            cos, sin = math.cos(a), math.sin(a)
            # across: distance from the origin across the line (y for horizontal lines, x for
            # vertical ones); along: the position along it
            if vertical:
                across, along = xs_f * cos + ys_f * sin, ys_f * cos - xs_f * sin
                chord_across = rx * cos + ry * sin
            else:
                across, along = ys_f * cos - xs_f * sin, xs_f * cos + ys_f * sin
                chord_across = ry * cos - rx * sin
            rho = np.rint(across).astype(np.int64) + offset
            votes = np.bincount(rho, minlength=n_bins)
            chord = np.bincount(np.rint(chord_across).astype(np.int64) + offset, minlength=n_bins).astype(np.float64)
            if g > 1:                                   # g samples per g bins of width 1 px ≈ chord / g each
                chord = np.convolve(chord, np.ones(g), mode="same")
            chord = chord * g
            hit = (votes >= LINE_COVER * chord) & (chord >= shortest)
            if not hit.any():
                continue
            sub = hit[rho]
            first = np.full(n_bins, np.iinfo(np.int64).max)
            last = np.full(n_bins, np.iinfo(np.int64).min)
            pos = np.rint(along[sub]).astype(np.int64)
            np.minimum.at(first, rho[sub], pos)
            np.maximum.at(last, rho[sub], pos)
            hit &= (last - first) >= LINE_SPREAD * chord
            # a line is thin: a few bins, with little ink 2-3 px to either side (inside a bold
            # stroke that spans the sheet, the neighbouring bins are as full)
            edges = np.diff(np.r_[0, hit.astype(np.int8), 0])
            starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            thick = max(3, int(LINE_THICK * min(h, w) + 1))
            line_bins = np.zeros_like(hit)
            for s0, e0 in zip(starts, ends):
                beside = max(votes[max(0, s0 - 3):max(0, s0 - 1)].sum(), votes[e0 + 1:e0 + 3].sum()) / 2
                if e0 - s0 <= thick and beside < 0.5 * votes[s0:e0].min():
                    line_bins[max(0, s0 - 1):e0 + 1] = True   # one bin more each side: the line's soft edge
            if line_bins.any():
                here = line_bins[rho]
                on_line |= here
                levels.append(float(np.median(darkness[ys[here], xs[here]])))
    if not on_line.any():
        return out
    level = float(np.median(levels))
    crossing = darkness[ys, xs] > level + 0.25 * ink
    keep = on_line & ~crossing
    out[ys[keep], xs[keep]] = True
    return out


def _gap(c: Components, i: int, box: tuple[int, int, int, int]) -> int:
    """Chebyshev gap in px between component i's bounding box and ``box`` (top, bottom, left, right)."""
    t, b, l, r = box
    dy = max(0, t - c.bottom[i], c.top[i] - b)
    dx = max(0, l - c.right[i], c.left[i] - r)
    return max(dy, dx)


def select_digit(c: Components, mass: np.ndarray, touching: np.ndarray, centre: tuple[float, float],
                 size: float) -> tuple[np.ndarray, dict]:
    """Which components make the digit: bool (n,) and notes.

    The main component is the heaviest (mass discounted by distance from ``centre``, in units of
    ``size``) of those clear of the edges (of all, if none is). Others join when they are
    a broken stroke's gap away (BROKEN), or within JOIN_GAP of the group's height, making it
    at most TALLER times taller, above or below it or leaving it at most DIGIT_ASPECT as wide
    as tall."""
    heavy = mass >= SPECK * mass.max()
    cy = (c.top + c.bottom) / 2
    cx = (c.left + c.right) / 2
    dist = np.hypot(cy - centre[0], cx - centre[1]) / size
    score = mass * np.clip(1 - dist, 0.2, 1)
    # a component around another heavy one is a frame (a sheet's or note's outline), not a digit
    big = np.flatnonzero(mass >= 0.2 * mass.max())
    encloses = np.zeros(c.n, bool)
    for i in big:
        inner = (c.top[big] > c.top[i]) & (c.bottom[big] < c.bottom[i]) & (c.left[big] > c.left[i]) & (c.right[big] < c.right[i])
        encloses[i] = inner.any()
    pool = heavy & ~touching & ~encloses
    main = int(np.argmax(np.where(pool if pool.any() else heavy & ~encloses if (heavy & ~encloses).any() else heavy, score, -1)))
    keep = np.zeros(c.n, bool)
    keep[main] = True
    box = [int(c.top[main]), int(c.bottom[main]), int(c.left[main]), int(c.right[main])]
    changed = True
    while changed:
        changed = False
        for i in np.flatnonzero(heavy & ~keep & ~touching & ~encloses):
            height = box[1] - box[0]
            if c.top[i] <= box[0] and c.bottom[i] >= box[1] and c.left[i] <= box[2] and c.right[i] >= box[3]:
                continue                                # around the digit: a frame, never a part of it
            gap = _gap(c, i, tuple(box))
            merged = [min(box[0], c.top[i]), max(box[1], c.bottom[i]), min(box[2], c.left[i]), max(box[3], c.right[i])]
            # a stroke broken by a pixel or two joins whatever its shape; a part further off
            # (a 5's bar, a 4's other stroke) joins while it does not dwarf the digit (the
            # sheet's edge beside it does) and it sits over the digit or leaves it digit-shaped
            # (a second digit beside it does not)
            if gap > max(2, BROKEN * height):
                if gap > JOIN_GAP * height or merged[1] - merged[0] > TALLER * height:
                    continue
                over = min(box[3], c.right[i]) > max(box[2], c.left[i])
                if not over and merged[3] - merged[2] > DIGIT_ASPECT * (merged[1] - merged[0]):
                    continue
            keep[i] = True
            box = [int(v) for v in merged]
            changed = True
    digit_mass = float(mass[keep].sum())
    height = box[1] - box[0]
    near = np.array([_gap(c, i, tuple(box)) <= height for i in range(c.n)], bool)
    others = ~keep & (mass >= OTHER_MARK * digit_mass) & near & ~touching & ~encloses
    notes = {"parts": int(keep.sum()), "other_marks": int(others.sum()),
             "touches_edge": bool(touching[keep].any()), "box": tuple(box)}
    return keep, notes


def find_ink(gray: np.ndarray) -> Found:
    """Find the digit in a greyscale image (H, W) in [0, 1], 1 = white; see the module's steps.
    Works on ``work_copy(gray)``; the masks and ``ink`` are that size. Raises NoInk when
    nothing stands out from the paper."""
    work = work_copy(gray)
    h, w = work.shape
    border = np.concatenate([work[0], work[-1], work[1:-1, 0], work[1:-1, -1]])
    paper_level = float(np.median(border))
    q1, q3 = np.percentile(border, [25, 75])
    even = (q3 - q1) < EVEN_BORDER
    if q3 - q1 <= 1 / 255 and float((np.abs(work - paper_level) <= 1 / 255).mean()) >= DRAWN:
        return _drawing(work, paper_level)
    # (a sheet is looked for in a photo-sized image only: in a small drawing, a bold glyph's
    # outline is as straight as a sheet's)
    sheet = None if (even and paper_level > 0.5) or min(h, w) < SHEET_MIN_SIDE else find_sheet(work)
    # polarity: light ink on dark paper only in a drawing: a dark frame edge of one level all
    # round (no desk texture, vignetting or gradient) and thin bright strokes (not a sheet);
    # a photo is dark ink on paper
    # (an image under SHEET_MIN_SIDE a side is no photo: its edge alone decides, as it always did)
    dark_paper = paper_level <= 0.5 and sheet is None and (
        min(h, w) < SHEET_MIN_SIDE or (_edge_drift(work) < DRIFT and _bright_thickness(work) < LIGHT_STROKE))
    paper = 1.0 - work if dark_paper else work          # (h, w), paper bright, ink dark

    # background: a grey closing removes the ink (narrower than the window) and keeps the
    # light and the desk (wider); flat when it hardly varies over everything but the ink
    # (a desk or a shadow at the frame's edge counts). The window is wider than the ink's
    # strokes (a marker close up) and narrower than the light's changes.
    k = max(5, int(min(max(CLOSING * min(h, w), 3 * stroke_width(paper)), 0.3 * min(h, w))) | 1)
    background = box_blur(closing(paper, k), k // 6)
    paper_px = ~dilate(_ink_like(paper <= otsu(paper)), k // 6 + 2)
    if paper_px.sum() < 0.05 * paper_px.size:
        paper_px[:] = True
    levels = np.percentile(background[paper_px], [1, 50, 99])
    flat = (levels[2] - levels[0]) < FLAT
    if flat:
        background = np.full((h, w), float(levels[1]), np.float32)
    darkness = np.clip(1 - paper / np.maximum(background, 1e-3), 0, 1)
    if not flat:
        darkness = _fill_hollow_strokes(paper, darkness, k, min(h, w))

    smooth = box_blur(darkness, 1)
    strongest = float(smooth[2:-2, 2:-2].max()) if min(h, w) > 8 else float(smooth.max())
    on_paper = paper_px & (paper > otsu(paper))         # the paper itself (not the desk): its noise
    raw = (1 - paper / np.maximum(background, 1e-3))[on_paper if on_paper.any() else paper_px]
    noise = 1.4826 * float(np.median(np.abs(raw - np.median(raw))))
    plain = even and flat and sheet is None            # looks like a drawing or a scan, not a photo
    if strongest < NOISE_SIGMAS * noise and NOISE_SIGMAS * noise >= MIN_INK:
        raise NoInk(plain, "noise")                     # pure noise, or a grainy sheet with nothing on it
    if strongest < MIN_INK:
        raise NoInk(plain, "faint", strongest)
    threshold = max(INK_SHARE * strongest, NOISE_SIGMAS * noise / 3)    # the smoothed image's noise is a third
    mask = smooth > threshold

    frame_edge = np.zeros((h, w), bool)
    frame_edge[:1], frame_edge[-1:], frame_edge[:, :1], frame_edge[:, -1:] = True, True, True, True
    centre = ((h - 1) / 2, (w - 1) / 2)
    found = _components(mask, darkness, sheet, frame_edge, strongest, centre)
    if found is None:                                   # the sheet held no digit: it was a lit part of the paper
        sheet = None
        found = _components(mask, darkness, None, frame_edge, strongest, centre)
    if found is None:
        raise NoInk(plain)
    c, keep, notes, lines, mass = found
    kept = c.mask(keep)
    if not even and notes["touches_edge"] and kept.mean() > DESK:
        # the only "ink" is the desk or a shadow around the paper, or noise all over
        raise NoInk(plain, "noise" if grain(work) > GRAIN else "blank")
    notes["dark_paper"] = bool(dark_paper)
    clean = even and flat and sheet is None and not lines.any()    # a drawing or a scan: keep all its ink
    if clean:
        return Found(True, None, work, darkness, None, kept, c.mask(~keep), lines, notes)
    if float(np.percentile(darkness[kept], 90)) < FAINT or kept.sum() < SPOT * kept.size:
        raise NoInk(plain, "specks")                     # only paper's texture, a shadow's edge, a line's remnant
    # the digit's ink: its components and a margin for their anti-aliased edges, lines taken out
    strong = float(np.percentile(darkness[kept], 75))   # the stroke's core saturates: pen and paper texture go
    floor = threshold / 2
    footprint = dilate(kept, max(2, int(0.004 * max(h, w) + 1))) & ~lines
    ink = np.clip((darkness - floor) / max(strong - floor, 1e-3), 0, 1) * footprint
    return Found(False, ink.astype(np.float32), work, darkness, sheet, kept, c.mask(~keep), lines, notes)


def _drawing(work: np.ndarray, level: float) -> Found:
    """A drawing (most pixels exactly the frame edge's level: the drawing page, a paint
    program): clean, so the plain path reads it; only its components are found, for the notes.
    A few milliseconds where the photo analysis takes a hundred."""
    ink = np.abs(work - np.float32(level))
    contrast = float(ink.max())
    if contrast < 0.08:
        raise NoInk(True)
    c = label(ink > INK_SHARE * contrast)
    h, w = work.shape
    touching = (c.top == 0) | (c.left == 0) | (c.bottom == h) | (c.right == w)
    keep, notes = select_digit(c, c.sums(ink), touching, ((h - 1) / 2, (w - 1) / 2), math.hypot(h, w) / 2)
    notes["dark_paper"] = level <= 0.5
    nothing = np.zeros((h, w), bool)
    return Found(True, None, work, ink / contrast, None, c.mask(keep), c.mask(~keep), nothing, notes)


def _ink_like(dark: np.ndarray) -> np.ndarray:
    """The dark side of Otsu's threshold without what is background: thick regions reaching
    the frame's edge that cover more than a tenth of it (a desk, a shadow, paper in shade).
    What is left is ink, whose background the flatness test must not judge."""
    c = label(dark)
    h, w = dark.shape
    at_edge = (c.top == 0) | (c.left == 0) | (c.bottom == h) | (c.right == w)
    _, rel = _strokes(dark, c)
    return c.mask(~(at_edge & (c.area > 0.1 * dark.size) & (rel > THICK)))   # a digit cut by the edge is thin


def _fill_hollow_strokes(paper: np.ndarray, darkness: np.ndarray, k: int, side: int) -> np.ndarray:
    """A stroke wider than the closing's window comes out hollow (its middle taken for
    background). Where a ring of strong ink encloses pixels that a window 2.5 times as wide
    calls ink, take that wider window's darkness (the inside of a 0 stays paper under both)."""
    strong = darkness > 0.5 * float(darkness.max())
    holes = fill_holes(strong) & ~strong
    if not holes.any():
        return darkness
    # a stroke's hollow middle is a thin region and a small one; a shadow ringed by ink is not
    c = label(holes)
    _, rel = _strokes(holes, c)
    holes = c.mask((rel < STROKE) & (c.area <= 0.05 * holes.size))
    if not holes.any():
        return darkness
    k2 = max(k + 2, int(min(2.5 * k, 0.4 * side)) | 1)
    wide = np.clip(1 - paper / np.maximum(box_blur(closing(paper, k2), k2 // 6), 1e-3), 0, 1)
    return np.where(holes, np.maximum(darkness, wide), darkness)


def _components(mask, darkness, sheet, frame_edge, strongest, centre):
    """Lines out, components, the digit's group: (components, keep, notes, lines, mass), or
    None when nothing is left or, with a ``sheet``, the heaviest ink is not inside it."""
    h, w = mask.shape
    region = sheet if sheet is not None else np.ones((h, w), bool)
    lines = find_lines(mask, darkness, region, strongest)
    c = label(mask & ~lines)
    if c.n == 0:
        return None
    mass = c.sums(darkness)
    edge = frame_edge
    outside = np.zeros(c.n, bool)
    if sheet is not None:
        r = max(2, int(0.01 * min(h, w)))
        edge = frame_edge | (sheet & dilate(~sheet, r))   # the sheet's own edge band
        outside = c.sums(sheet.astype(np.float32)) < 0.5 * c.area
        on_edge = c.sums(edge.astype(np.float32)) > 0
        # ink outside the sheet, clear of its edge and the frame's, heavier than all inside it:
        # the "sheet" was the lit part of the paper and the digit lies in the shadow
        inside = ~outside & ~on_edge
        ys, xs = np.nonzero(sheet)
        cy, cx = ys.mean(), xs.mean()
        around = (c.top < cy) & (c.bottom > cy) & (c.left < cx) & (c.right > cx)   # the sheet's shadow, ringing it
        away = outside & ~around & ~(c.sums(frame_edge.astype(np.float32)) > 0)   # off the sheet, clear of the frame's edge
        if away.any() and (not inside.any() or mass[away].max() > mass[inside].max()):
            return None
        if not inside.any():
            raise NoInk(False)                          # a blank sheet: nothing on it but its own edge
    touching = (c.sums(edge.astype(np.float32)) > 0) | outside
    keep, notes = select_digit(c, np.where(outside, 0.0, mass), touching, centre, float(math.hypot(h, w)) / 2)
    return c, keep, notes, lines, mass
