"""Generate photo-like digit images and an out-of-distribution set, for photo_bench and the tests.

    .venv/bin/python scripts/make_photos.py [OUT] [--photos 400] [--ood 250] [--clean 300] [--seed 0]

OUT (default /tmp/digitnet-photos, outside the repository) gets three folders, each with a
``labels.csv``:

- ``photos/``: a digit written or printed on paper and photographed: the sheet (plain, ruled,
  squared, or a sticky note) lying on a desk that shows around it or filling the frame, turned
  and seen in perspective, lit unevenly (a gradient, vignetting, a cast shadow that may cross
  the digit), out of focus, with sensor noise, saved as JPEG at qualities 35-95 (a few PNG)
  and sizes from 0.3 to 12 megapixels. Columns: file, label, paper, hand, pen, desk (in view
  or not), megapixels, quality.
- ``ood/``: what is not one digit, shot the same way (or clean, a third of them): noise,
  letters (those not shaped like a digit: no O, I, l, S, Z, B, G, g, q, b), two-digit numbers,
  blank paper, scribbles. Columns: file, kind, what (the letter, the number, …), paper, megapixels.
- ``clean/``: the person-made clean images of tests/digit_images.py (seed 7), as before.

The hands: real MNIST test digits (the embedded set's test split, which no shipped model trained
on) drawn large as pen strokes; a pen following one of several skeletons per digit (a 1 with or
without a flag and foot, a crossed 7, an open 4, …); and every font on the machine.
Seeded: the same seed gives the same files on a machine with the same fonts.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# Output sizes (width, height) of the photos, landscape; a photo is turned to portrait half the time.
SIZES = [(640, 480), (1280, 960), (2048, 1536), (3264, 2448), (4000, 3000)]
SIZE_WEIGHTS = [0.25, 0.25, 0.2, 0.1, 0.2]
RENDER_MAX = 1400      # the scene is drawn at most this wide, then scaled up to the output size
PAPERS = ("plain", "ruled", "squared", "note")
# Letters shaped like no digit; O, I, l, S, Z, B, G, g, q, b are digits to a digit reader.
LETTERS = "ACDEFHJKLMNPRTUVWXYacdefhkmnprtuvwxy"
OOD_KINDS = ("noise", "letters", "two-digit", "blank", "scribble")


# ---------------------------------------------------------------------------------------------
# Strokes: skeletons of hand-written digits, several per digit, in a unit box (x, y), y down.

def _arc(cx, cy, rx, ry, start, end, n=14):
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(start, end, n)]


PI = math.pi
HANDS: dict[str, list[list[list[tuple[float, float]]]]] = {
    "0": [[_arc(0.5, 0.5, 0.38, 0.49, -PI / 2, 1.5 * PI + 0.2)],
          [_arc(0.5, 0.5, 0.3, 0.49, 0.3 - PI / 2, 1.5 * PI + 0.1)]],
    "1": [[[(0.5, 0.0), (0.48, 1.0)]],
          [[(0.25, 0.25), (0.55, 0.0), (0.55, 1.0)]],
          [[(0.25, 0.22), (0.55, 0.0), (0.55, 1.0)], [(0.25, 1.0), (0.85, 1.0)]]],
    "2": [[[(0.12, 0.25), (0.3, 0.04), (0.6, 0.0), (0.85, 0.22), (0.75, 0.5), (0.1, 1.0), (0.92, 0.98)]],
          [_arc(0.5, 0.3, 0.36, 0.3, -PI, 0.25 * PI) + [(0.1, 1.0), (0.9, 0.95)]],
          [[(0.15, 0.2), (0.5, 0.0), (0.85, 0.2), (0.6, 0.6), (0.3, 0.8), (0.15, 0.95), (0.4, 0.85), (0.9, 1.0)]]],
    "3": [[[(0.12, 0.12), (0.45, 0.0), (0.8, 0.15), (0.75, 0.38), (0.42, 0.48), (0.85, 0.62), (0.85, 0.85),
            (0.5, 1.0), (0.1, 0.88)]],
          [[(0.1, 0.0), (0.85, 0.0), (0.4, 0.4), (0.85, 0.6), (0.8, 0.9), (0.45, 1.0), (0.1, 0.85)]]],
    "4": [[[(0.62, 0.0), (0.06, 0.68), (0.95, 0.68)], [(0.68, 0.3), (0.68, 1.0)]],
          [[(0.2, 0.0), (0.1, 0.55), (0.9, 0.55)], [(0.7, 0.05), (0.7, 1.0)]],
          [[(0.25, 0.0), (0.15, 0.5), (0.75, 0.5)], [(0.75, 0.0), (0.75, 1.0)]]],
    "5": [[[(0.85, 0.0), (0.22, 0.02), (0.15, 0.45), (0.5, 0.36), (0.85, 0.55), (0.85, 0.85), (0.5, 1.0), (0.1, 0.9)]],
          [[(0.25, 0.0), (0.18, 0.45), (0.5, 0.36), (0.85, 0.55), (0.85, 0.85), (0.5, 1.0), (0.1, 0.9)],
           [(0.25, 0.0), (0.85, 0.0)]]],
    "6": [[[(0.72, 0.0), (0.35, 0.2), (0.15, 0.6)] + _arc(0.5, 0.72, 0.35, 0.27, PI, 3 * PI)],
          [[(0.6, 0.0), (0.2, 0.5)] + _arc(0.5, 0.7, 0.33, 0.3, PI - 0.3, 3 * PI)]],
    "7": [[[(0.08, 0.02), (0.92, 0.0), (0.4, 1.0)]],
          [[(0.08, 0.02), (0.92, 0.0), (0.45, 1.0)], [(0.35, 0.5), (0.85, 0.5)]],
          [[(0.1, 0.15), (0.1, 0.02), (0.9, 0.02), (0.55, 0.5), (0.5, 1.0)]]],
    "8": [[_arc(0.5, 0.25, 0.28, 0.25, 0.5 * PI, 2.5 * PI) + _arc(0.5, 0.74, 0.36, 0.26, -0.5 * PI, 1.5 * PI)],
          [_arc(0.5, 0.27, 0.3, 0.26, 0, 2 * PI), _arc(0.5, 0.74, 0.36, 0.26, 0, 2 * PI)]],
    "9": [[_arc(0.5, 0.28, 0.34, 0.28, 0.0, 2 * PI) + [(0.84, 0.6), (0.72, 1.0)]],
          [_arc(0.45, 0.3, 0.32, 0.3, 0.0, 2 * PI) + [(0.77, 0.3), (0.77, 1.0)]]],
    # a few hand-written letters for the OOD set
    "A": [[[(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)], [(0.22, 0.6), (0.78, 0.6)]]],
    "E": [[[(0.9, 0.0), (0.1, 0.0), (0.1, 1.0), (0.9, 1.0)], [(0.1, 0.5), (0.7, 0.5)]]],
    "H": [[[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.9, 1.0)], [(0.1, 0.5), (0.9, 0.5)]]],
    "K": [[[(0.15, 0.0), (0.15, 1.0)], [(0.85, 0.0), (0.15, 0.55), (0.9, 1.0)]]],
    "M": [[[(0.0, 1.0), (0.1, 0.0), (0.5, 0.7), (0.9, 0.0), (1.0, 1.0)]]],
    "R": [[[(0.15, 1.0), (0.15, 0.0)] + _arc(0.4, 0.27, 0.4, 0.27, -PI / 2, PI / 2) + [(0.15, 0.54), (0.9, 1.0)]]],
    "W": [[[(0.0, 0.0), (0.25, 1.0), (0.5, 0.3), (0.75, 1.0), (1.0, 0.0)]]],
    "X": [[[(0.05, 0.0), (0.95, 1.0)], [(0.95, 0.0), (0.05, 1.0)]]],
    "Y": [[[(0.05, 0.0), (0.5, 0.5), (0.95, 0.0)], [(0.5, 0.5), (0.5, 1.0)]]],
    "e": [[[(0.1, 0.55), (0.9, 0.55)] + _arc(0.5, 0.6, 0.4, 0.4, 0, 1.75 * PI)]],
    "h": [[[(0.15, 0.0), (0.15, 1.0)], [(0.15, 0.6)] + _arc(0.5, 0.65, 0.35, 0.3, PI, 2 * PI) + [(0.85, 1.0)]]],
    "k": [[[(0.15, 0.0), (0.15, 1.0)], [(0.8, 0.35), (0.15, 0.7), (0.85, 1.0)]]],
    "m": [[[(0.05, 1.0), (0.05, 0.35), (0.3, 0.3), (0.5, 0.45), (0.5, 1.0)], [(0.5, 0.45), (0.75, 0.3), (0.95, 0.4), (0.95, 1.0)]]],
    "r": [[[(0.2, 1.0), (0.2, 0.3)], [(0.2, 0.5), (0.5, 0.3), (0.85, 0.35)]]],
    "x": [[[(0.1, 0.3), (0.9, 1.0)], [(0.9, 0.3), (0.1, 1.0)]]],
}


def _smooth(points: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Chaikin corner cutting: a polyline -> a smooth curve near it."""
    for _ in range(rounds):
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.vstack([points[:1], np.column_stack([q, r]).reshape(-1, 2), points[-1:]])
    return points


def _draw_strokes(strokes, size: int, rng: np.random.Generator, width: int, aspect: float, jitter=0.03) -> Image.Image:
    """Strokes (lists of unit-box points) drawn with a round pen as a white-on-black mask."""
    pad = width + 4
    w, h = int(size * aspect), size
    im = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    draw = ImageDraw.Draw(im)
    for stroke in strokes:
        p = np.asarray(stroke, float) + rng.normal(0, jitter, (len(stroke), 2))
        p = _smooth(p) * [w, h] + pad
        pts = [tuple(v) for v in p]
        draw.line(pts, fill=255, width=width, joint="curve")
        r = width / 2
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return im


def pen_glyph(char: str, size: int, rng: np.random.Generator, width: int) -> Image.Image:
    """A character written with a pen through one of its skeletons."""
    strokes = HANDS[char][int(rng.integers(len(HANDS[char])))]
    return _draw_strokes(strokes, size, rng, width, rng.uniform(0.55, 0.9) if char not in "MWmwA" else rng.uniform(0.8, 1.1))


def font_glyph(text: str, size: int, rng: np.random.Generator, fonts: list[Path]) -> Image.Image:
    """Text typed in a random font, as a white-on-black mask cropped near its ink."""
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
    left, top, right, bottom = font.getbbox(text)
    im = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(im).text((4 - left, 4 - top), text, fill=255, font=font)
    return im


def mnist_glyph(image: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    """A real MNIST digit (28×28 uint8) drawn large: scaled smoothly, then given a pen's crisp edge."""
    ink = image[4:24, 4:24] if image[:4].max() == image[24:].max() == 0 else image
    big = np.asarray(Image.fromarray(ink).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
    level = rng.uniform(0.25, 0.55)                  # where the pen's edge falls: thinner or bolder
    m = np.clip((big - level) / 0.15 + 0.5, 0, 1)
    return Image.fromarray((m * 255).astype(np.uint8))


def scribble_glyph(size: int, rng: np.random.Generator, width: int) -> Image.Image:
    """A tangle: a random smooth curve through many points, sometimes hatched or filled."""
    kind = rng.choice(["tangle", "hatch", "blot", "zigzag"])
    if kind == "tangle":
        strokes = [rng.uniform(0, 1, (int(rng.integers(8, 20)), 2)).tolist()]
    elif kind == "hatch":
        strokes = []
        for k in np.linspace(0, 1, int(rng.integers(6, 14))):
            strokes.append([(k, 0.0), (max(0.0, k - 0.4), 1.0)])
        strokes.append([(0.0, rng.uniform(0.2, 0.8)), (1.0, rng.uniform(0.2, 0.8))])
    elif kind == "zigzag":
        n = int(rng.integers(6, 12))
        strokes = [[(i / n, float(i % 2) * rng.uniform(0.6, 1.0)) for i in range(n + 1)]]
    else:
        strokes = [_arc(0.5, 0.5, r, r * rng.uniform(0.6, 1.0), 0, 2 * PI + 0.3)
                   for r in np.linspace(0.05, 0.5, int(rng.integers(6, 12)))]
    return _draw_strokes(strokes, size, rng, width, rng.uniform(0.8, 1.5), jitter=0.02)


# ---------------------------------------------------------------------------------------------
# The scene: a desk, a sheet in perspective, light, a camera.

def _low_freq(rng, h: int, w: int, cells: int = 6) -> np.ndarray:
    """Smooth random field (h, w) in about [-1, 1]."""
    small = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC), np.float32)


def desk(rng, h: int, w: int) -> np.ndarray:
    """A desk (h, w, 3) float32 in [0, 1]: wood, a dark or grey surface, or a light table."""
    kind = rng.choice(["wood", "dark", "grey", "light"])
    colour = {"wood": rng.uniform([0.35, 0.2, 0.08], [0.7, 0.45, 0.25]),
              "dark": rng.uniform(0.05, 0.25, 3),
              "grey": np.full(3, rng.uniform(0.3, 0.6)) + rng.uniform(-0.05, 0.05, 3),
              "light": np.full(3, rng.uniform(0.6, 0.8)) + rng.uniform(-0.05, 0.05, 3)}[kind]
    tex = 0.08 * _low_freq(rng, h, w)
    if kind == "wood":
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        a = rng.uniform(0, PI)
        u = (xx * math.cos(a) + yy * math.sin(a)) / max(h, w)
        tex = tex + 0.08 * np.sin(u * rng.uniform(40, 120) + 3 * _low_freq(rng, h, w, 4))
    return np.clip(colour[None, None, :].astype(np.float32) * (1 + tex[..., None]), 0, 1)


def sheet(rng, w: int, h: int, paper: str) -> tuple[np.ndarray, tuple[float, float]]:
    """A blank sheet (h, w, 3) in [0, 1] of the given paper, and the line spacing (px, 0 for none)."""
    colour = (rng.uniform([0.95, 0.85, 0.3], [1.0, 0.97, 0.6]) if paper == "note" and rng.random() < 0.6 else
              rng.uniform([0.85, 0.6, 0.6], [1.0, 0.85, 0.9]) if paper == "note" else
              np.full(3, rng.uniform(0.88, 1.0)) - rng.uniform(0, 0.05, 3))
    s = np.ones((h, w, 3), np.float32) * colour.astype(np.float32)
    s *= 1 + 0.015 * _low_freq(rng, h, w, 10)[..., None]
    spacing = 0.0
    if paper in ("ruled", "squared"):
        line = rng.uniform([0.45, 0.6, 0.75], [0.75, 0.8, 0.95]) if rng.random() < 0.7 else np.full(3, rng.uniform(0.55, 0.8))
        spacing = max(h, w) * rng.uniform(0.03, 0.06) if paper == "ruled" else max(h, w) * rng.uniform(0.02, 0.04)
        thick = max(1, int(round(spacing * rng.uniform(0.04, 0.1))))
        offset = rng.uniform(0, spacing)
        for y in np.arange(offset, h, spacing):
            s[int(y):int(y) + thick] = line
        if paper == "squared":
            for x in np.arange(rng.uniform(0, spacing), w, spacing):
                s[:, int(x):int(x) + thick] = line
        elif rng.random() < 0.4:                      # the red margin
            x = int(w * rng.uniform(0.08, 0.15))
            s[:, x:x + thick + 1] = [0.85, 0.35, 0.35]
    return s, spacing


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """Pillow's PERSPECTIVE coefficients mapping output points dst (4, 2) to input points src (4, 2)."""
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    return np.linalg.solve(np.asarray(a, float), np.asarray(b, float)).tolist()


def place(frame: np.ndarray, content: np.ndarray, quad: np.ndarray, shadow: float = 0.0) -> None:
    """Warp ``content`` (h, w, 3) onto ``frame`` in place, its corners landing on ``quad`` (4, 2)
    (top-left, top-right, bottom-right, bottom-left); ``shadow`` darkens a soft band beside it."""
    H, W = frame.shape[:2]
    h, w = content.shape[:2]
    coeffs = _perspective_coeffs(quad, np.array([[0, 0], [w, 0], [w, h], [0, h]], float))
    rgb = Image.fromarray((np.clip(content, 0, 1) * 255).astype(np.uint8))
    warped = np.asarray(rgb.transform((W, H), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC),
                        np.float32) / 255
    mask = Image.new("L", (w, h), 255).transform((W, H), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    if shadow:
        soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(max(2, 0.01 * max(W, H)))), np.float32) / 255
        shifted = np.roll(soft, (int(0.006 * H) + 1, int(0.006 * W) + 1), axis=(0, 1))
        frame *= (1 - shadow * shifted)[..., None]
    m = np.asarray(mask, np.float32)[..., None] / 255
    frame *= 1 - m
    frame += m * warped


def write_on(surface: np.ndarray, glyph: Image.Image, rng, height: int, centre: tuple[float, float],
             angle: float, ink: np.ndarray, strength: float) -> None:
    """Write the glyph mask onto ``surface`` (h, w, 3) in place: ``height`` px tall, centred near
    ``centre``, turned by ``angle``; ``ink`` the pen's colour, ``strength`` its opacity."""
    g = glyph.crop(glyph.getbbox() or (0, 0, *glyph.size))
    scale = height / g.size[1]
    g = g.resize((max(1, int(g.size[0] * scale)), max(1, int(g.size[1] * scale))), Image.Resampling.LANCZOS)
    g = g.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    H, W = surface.shape[:2]
    x0 = int(np.clip(centre[0] - g.size[0] / 2, 0, max(0, W - g.size[0])))
    y0 = int(np.clip(centre[1] - g.size[1] / 2, 0, max(0, H - g.size[1])))
    m = np.asarray(g, np.float32)[: H - y0, : W - x0] / 255
    m = m * strength * (1 + 0.1 * rng.uniform(-1, 1, m.shape)).astype(np.float32)
    region = surface[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
    # ink absorbs light: multiply towards the pen's colour
    region *= 1 - m[..., None] * (1 - ink[None, None, :])


def light(rng, h: int, w: int) -> np.ndarray:
    """Illumination (h, w): a gradient, vignetting and sometimes a cast shadow with a soft edge."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    a = rng.uniform(0, 2 * PI)
    L = 1 - rng.uniform(0, 0.35) * (0.5 + xx * math.cos(a) + yy * math.sin(a))
    L *= 1 - rng.uniform(0, 0.5) * (xx ** 2 + yy ** 2) * 2
    if rng.random() < 0.5:                          # a shadow: a soft-edged half-plane or blob
        b = rng.uniform(0, 2 * PI)
        d = xx * math.cos(b) + yy * math.sin(b) - rng.uniform(-0.25, 0.3)
        if rng.random() < 0.4:
            d = 0.25 - np.hypot(xx - rng.uniform(-0.4, 0.4), yy - rng.uniform(-0.4, 0.4)) * rng.uniform(1, 2)
        soft = rng.uniform(0.01, 0.08)
        L *= 1 - rng.uniform(0.25, 0.55) / (1 + np.exp(np.clip(-d / soft, -50, 50)))
    return L.astype(np.float32)


def camera(rng, scene: np.ndarray, size: tuple[int, int], fmt: str, quality: int, path: Path, noise: float) -> None:
    """Blur, scale to ``size`` (w, h), add sensor noise and save as JPEG (or PNG)."""
    im = Image.fromarray((np.clip(scene, 0, 1) * 255).astype(np.uint8))
    blur = float(rng.choice([0, rng.uniform(0.5, 1.5), rng.uniform(1.5, 3.0)], p=[0.3, 0.5, 0.2]))
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(blur * max(scene.shape[:2]) / 1000))
    if im.size != size:
        im = im.resize(size, Image.Resampling.BICUBIC)
    a = np.asarray(im).copy()
    if noise:
        for y in range(0, a.shape[0], 256):          # a few rows at a time: bounded memory at 12 MP
            n = rng.normal(0, noise * 255, (min(256, a.shape[0] - y), a.shape[1], 1)).astype(np.float32)
            n = n + rng.normal(0, noise * 100, n.shape[:2] + (3,)).astype(np.float32)   # chroma noise
            a[y:y + 256] = np.clip(a[y:y + 256] + n, 0, 255).astype(np.uint8)
    out = Image.fromarray(a)
    if fmt == "jpg":
        out.save(path, quality=quality)
    else:
        out.save(path)


def photo(rng, content, path: Path, paper: str | None = None, fonts=None) -> dict:
    """Shoot one photo of ``content(surface, rng, spacing)`` written on a sheet; returns its parameters."""
    W, H = SIZES[int(rng.choice(len(SIZES), p=SIZE_WEIGHTS))]
    if rng.random() < 0.5:
        W, H = H, W
    r = min(1.0, RENDER_MAX / max(W, H))
    w, h = int(W * r), int(H * r)
    paper = paper or str(rng.choice(PAPERS))
    frame = desk(rng, h, w)
    fills = rng.random() < 0.3 and paper != "note"   # the sheet fills the frame: no desk in view
    side = min(w, h)
    if paper == "note":
        base = None
        if rng.random() < 0.5:                      # the note stuck on a white sheet
            base, _ = sheet(rng, int(w * 1.2), int(h * 1.2), "plain")
            place(frame, base, _quad(rng, w, h, 1.3, 0.05), shadow=0.3)
        n = int(side * rng.uniform(0.45, 0.8))
        surface, spacing = sheet(rng, n, n, "note")
        quad = _quad(rng, w, h, n / side, 0.06, square=True)
    else:
        sw, sh = (int(w * 1.3), int(h * 1.3)) if fills else (int(side * rng.uniform(0.8, 1.0) * 0.95),) * 2
        surface, spacing = sheet(rng, sw, sh, paper)
        quad = _quad(rng, w, h, 1.3 if fills else sw / side * rng.uniform(0.9, 1.0), 0.05 if fills else 0.08,
                     square=not fills)
    params = content(surface, rng, spacing)
    place(frame, surface, quad, shadow=0.0 if fills else rng.uniform(0.1, 0.4))
    frame *= light(rng, h, w)[..., None]
    fmt = "png" if rng.random() < 0.08 else "jpg"
    quality = int(rng.choice([35, 50, 65, 80, 95]))
    noise = float(rng.choice([0.004, rng.uniform(0.01, 0.035)]))
    camera(rng, frame, (W, H), fmt, quality, path.with_suffix("." + fmt), noise)
    return dict(params, paper=paper, megapixels=round(W * H / 1e6, 1), file=path.with_suffix("." + fmt).name,
                quality=quality if fmt == "jpg" else "", desk="no" if fills else "yes")


def _quad(rng, w: int, h: int, rel: float, tilt: float, square: bool = False) -> np.ndarray:
    """Corners (4, 2) of a sheet about ``rel`` of the frame's shorter side, turned a little and
    seen in perspective (each corner moved by up to ``tilt`` of the side)."""
    side = min(w, h)
    sw = sh = rel * side
    if not square:
        sw, sh = rel * w, rel * h
    cx, cy = w / 2 + rng.uniform(-0.08, 0.08) * w, h / 2 + rng.uniform(-0.08, 0.08) * h
    a = rng.uniform(-0.25, 0.25)
    corners = np.array([[-sw / 2, -sh / 2], [sw / 2, -sh / 2], [sw / 2, sh / 2], [-sw / 2, sh / 2]])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    q = corners @ rot.T + [cx, cy] + rng.uniform(-tilt, tilt, (4, 2)) * side
    return q


def _ink(rng) -> tuple[np.ndarray, float, str]:
    """A pen: its colour, opacity and name."""
    pen = str(rng.choice(["black", "blue", "pencil", "marker"], p=[0.35, 0.3, 0.15, 0.2]))
    colour = {"black": rng.uniform(0.05, 0.2, 3), "blue": rng.uniform([0.05, 0.1, 0.3], [0.2, 0.25, 0.6]),
              "pencil": np.full(3, rng.uniform(0.25, 0.45)), "marker": rng.uniform(0.0, 0.15, 3)}[pen]
    strength = rng.uniform(0.85, 1.0) if pen != "pencil" else rng.uniform(0.7, 0.9)
    return colour.astype(np.float32), strength, pen


def glyph_for(char: str, rng, fonts, mnist, height: int, hand: str | None = None):
    """(mask, hand) for one character: a real MNIST digit, a pen, or a font."""
    digit = char.isdigit()
    hand = hand or str(rng.choice(["mnist", "pen", "font"] if digit else ["pen", "font"],
                                  p=[0.4, 0.3, 0.3] if digit else [0.3, 0.7]))
    if hand == "pen" and char not in HANDS:
        hand = "font"
    if hand == "mnist":
        images, labels = mnist
        choices = np.flatnonzero(labels == int(char))
        return mnist_glyph(images[int(rng.choice(choices))], max(height, 60), rng), hand
    if hand == "pen":
        return pen_glyph(char, max(height, 40), rng, width=max(2, int(height * rng.uniform(0.05, 0.14)))), hand
    return font_glyph(char, max(height, 40), rng, fonts), hand


def digit_content(label: int, fonts, mnist):
    def content(surface, rng, spacing):
        h, w = surface.shape[:2]
        height = int(min(h, w) * rng.uniform(0.25, 0.55))
        glyph, hand = glyph_for(str(label), rng, fonts, mnist, height)
        ink, strength, pen = _ink(rng)
        write_on(surface, glyph, rng, height, (w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)),
                 rng.uniform(-12, 12), ink, strength)
        return dict(label=label, hand=hand, pen=pen)
    return content


def ood_content(kind: str, fonts, mnist):
    def content(surface, rng, spacing):
        h, w = surface.shape[:2]
        height = int(min(h, w) * rng.uniform(0.25, 0.5))
        ink, strength, pen = _ink(rng)
        centre = (w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6))
        what = ""
        if kind == "letters":
            what = str(rng.choice(list(LETTERS)))
            glyph, _ = glyph_for(what, rng, fonts, mnist, height)
            write_on(surface, glyph, rng, height, centre, rng.uniform(-10, 10), ink, strength)
        elif kind == "two-digit":
            what = str(int(rng.integers(10, 100)))
            hand = str(rng.choice(["mnist", "pen", "font"]))
            gap = rng.uniform(0.05, 0.3) * height
            glyphs = [glyph_for(c, rng, fonts, mnist, height, hand)[0] for c in what]
            for i, g in enumerate(glyphs):
                g = g.crop(g.getbbox() or (0, 0, *g.size))
                gw = g.size[0] * height / g.size[1]
                dx = (-1 if i == 0 else 1) * (gw / 2 + gap / 2)
                write_on(surface, g, rng, height, (centre[0] + dx, centre[1]), rng.uniform(-5, 5), ink, strength)
        elif kind == "scribble":
            glyph = scribble_glyph(height, rng, width=max(2, int(height * rng.uniform(0.02, 0.08))))
            what = "scribble"
            write_on(surface, glyph, rng, height, centre, rng.uniform(-30, 30), ink, strength)
        elif kind == "blank":
            what = "blank"
        return dict(kind=kind, what=what)
    return content


def noise_image(rng, path: Path) -> dict:
    """Pure noise: uniform, Gaussian, blocky or salt-and-pepper, grey or colour, small or large."""
    W, H = [(28, 28), (100, 100), (320, 240), (1280, 960)][int(rng.integers(4))]
    kind = str(rng.choice(["uniform", "gauss", "blocks", "salt"]))
    shape = (H, W, 3) if rng.random() < 0.5 else (H, W)
    if kind == "uniform":
        a = rng.uniform(0, 1, shape)
    elif kind == "gauss":
        a = np.clip(rng.normal(rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3), shape), 0, 1)
    elif kind == "blocks":
        small = rng.uniform(0, 1, (max(2, H // 16), max(2, W // 16)))
        a = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((W, H), Image.Resampling.NEAREST)) / 255
    else:
        a = np.where(rng.random((H, W)) < rng.uniform(0.02, 0.2), rng.choice([0.0, 1.0], (H, W)), rng.uniform(0.4, 0.9))
    fmt = "png" if rng.random() < 0.5 else "jpg"
    out = path.with_suffix("." + fmt)
    Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).save(out)
    return dict(kind="noise", what=kind, megapixels=round(W * H / 1e6, 2), file=out.name)


def clean_image(rng, content, path: Path) -> dict:
    """The same content on a clean white (or black) canvas, as a scan or a drawing program gives."""
    w, h = int(rng.integers(120, 600)), int(rng.integers(120, 600))
    surface = np.ones((h, w, 3), np.float32)
    params = content(surface, rng, 0.0)
    g = surface.mean(axis=2)
    if rng.random() < 0.2:
        g = 1 - g
    Image.fromarray((g * 255).astype(np.uint8)).save(path.with_suffix(".png"))
    return dict(params, megapixels=round(w * h / 1e6, 2), file=path.with_suffix(".png").name, paper="clean")


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="/tmp/digitnet-photos")
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--ood", type=int, default=250)
    parser.add_argument("--clean", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from digit_images import font_files, write_set

    from digitnet.datasets import load_dataset

    out = Path(args.out)
    fonts = font_files()
    if not fonts:
        raise SystemExit("no fonts found under /usr/share/fonts: install fonts-dejavu-core")
    test = load_dataset("embedded")
    mnist = (test.test_images, test.test_labels)

    rng = np.random.default_rng(args.seed)
    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.photos):
        label = i % 10
        paper = PAPERS[(i // 10) % len(PAPERS)]
        rows.append(photo(rng, digit_content(label, fonts, mnist), folder / f"{label}_{i:04d}", paper))
        print(f"\rphotos {i + 1}/{args.photos}", end="", file=sys.stderr)
    _write_csv(folder / "labels.csv", rows, ["file", "label", "paper", "hand", "pen", "desk", "megapixels", "quality"])

    rng = np.random.default_rng(args.seed + 1)
    folder = out / "ood"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.ood):
        kind = OOD_KINDS[i % len(OOD_KINDS)]
        path = folder / f"{kind}_{i:04d}"
        if kind == "noise":
            rows.append(noise_image(rng, path))
        elif kind != "blank" and rng.random() < 0.3:
            rows.append(dict(clean_image(rng, ood_content(kind, fonts, mnist), path), paper="clean"))
        else:
            rows.append(photo(rng, ood_content(kind, fonts, mnist), path))
        print(f"\rood {i + 1}/{args.ood}   ", end="", file=sys.stderr)
    _write_csv(folder / "labels.csv", rows, ["file", "kind", "what", "paper", "megapixels"])

    write_set(out / "clean", args.clean, seed=7)
    print(f"\rwrote {args.photos} photos, {args.ood} OOD images and {args.clean} clean images to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
