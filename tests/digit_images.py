"""A generator of digit images made the way a person makes them, for predict's tests and benchmark.

Two kinds, each drawn from a seeded NumPy Generator so a set is the same on every run:

- ``font``: a digit typed in one of the machine's fonts (whatever ``font_files`` finds; only
  DejaVu on a bare Debian, more when fonts-* packages are installed), at a random size,
  position, rotation and slant, bolder or thinner strokes, blurred, on light or dark paper
  with noise, saved as PNG (sometimes with a transparent background) or JPEG;
- ``hand``: a digit drawn with a pen: a few strokes through jittered control points of a
  hand-written skeleton, with the same variations of size, position, paper and format.

``make_image(label, rng)`` returns (PIL image, parameters); ``write_set(folder, n, seed)``
writes n images and a ``labels.csv`` (``file,label``) like ../shared/samples/user-digits.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_ROOTS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
# Fonts whose digits are not ordinary digits (symbols, or math alphabets that lack them).
SKIP_FONTS = ("Symbol", "Emoji", "Dingbat", "Math")


def font_files() -> list[Path]:
    """TrueType/OpenType fonts on this machine that can draw digits, sorted (may be empty)."""
    found = []
    for root in FONT_ROOTS:
        if root.is_dir():
            found += [p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf")
                      and not any(s in p.name for s in SKIP_FONTS)]
    return sorted(found)


def _glyph_font(label: int, rng: np.random.Generator, fonts: list[Path], size: int) -> Image.Image:
    """The digit typed in a random font as a white-on-black mask, cropped to its ink."""
    font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size)
    stroke = int(rng.choice([0, 0, 0, 1, 2, 3])) * max(1, size // 40)  # sometimes bolder than the font
    left, top, right, bottom = font.getbbox(str(label), stroke_width=stroke)
    im = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(im).text((4 - left, 4 - top), str(label), fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return im


# Skeletons of hand-written digits: strokes of control points (x, y) in a unit box, y down.
def _ellipse(cx, cy, rx, ry, start=0.0, end=2 * math.pi, n=16):
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(start, end, n)]


SKELETONS: dict[int, list[list[tuple[float, float]]]] = {
    0: [_ellipse(0.5, 0.5, 0.36, 0.49)],
    1: [[(0.3, 0.22), (0.55, 0.0), (0.55, 1.0)]],
    2: [[(0.12, 0.25), (0.3, 0.04), (0.6, 0.0), (0.85, 0.22), (0.75, 0.5), (0.1, 1.0), (0.92, 0.98)]],
    3: [[(0.12, 0.12), (0.45, 0.0), (0.8, 0.15), (0.75, 0.38), (0.42, 0.48), (0.85, 0.62), (0.85, 0.85),
         (0.5, 1.0), (0.1, 0.88)]],
    4: [[(0.62, 0.0), (0.06, 0.68), (0.95, 0.68)], [(0.68, 0.3), (0.68, 1.0)]],
    5: [[(0.85, 0.0), (0.22, 0.02), (0.15, 0.45), (0.5, 0.36), (0.85, 0.55), (0.85, 0.85), (0.5, 1.0), (0.1, 0.9)]],
    6: [[(0.72, 0.0), (0.35, 0.2), (0.15, 0.6)] + _ellipse(0.5, 0.72, 0.35, 0.27, math.pi, 3 * math.pi)],
    7: [[(0.08, 0.02), (0.92, 0.0), (0.4, 1.0)]],
    8: [_ellipse(0.5, 0.25, 0.28, 0.25, 0.5 * math.pi, 2.5 * math.pi) + _ellipse(0.5, 0.74, 0.36, 0.26, -0.5 * math.pi, 1.5 * math.pi)],
    9: [_ellipse(0.5, 0.28, 0.34, 0.28, 0.0, 2 * math.pi) + [(0.84, 0.6), (0.72, 1.0)]],
}


def _smooth(points: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Chaikin corner cutting: a polyline -> a smooth curve through its neighbourhood."""
    for _ in range(rounds):
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.vstack([points[:1], np.column_stack([q, r]).reshape(-1, 2), points[-1:]])
    return points


def _glyph_hand(label: int, rng: np.random.Generator, size: int) -> Image.Image:
    """The digit drawn with a pen through jittered skeleton points, as a white-on-black mask."""
    width = max(2, int(size * rng.uniform(0.06, 0.16)))
    aspect = rng.uniform(0.6, 0.95)
    pad = width + 4
    im = Image.new("L", (int(size * aspect) + 2 * pad, size + 2 * pad), 0)
    draw = ImageDraw.Draw(im)
    for stroke in SKELETONS[label]:
        p = np.asarray(stroke) + rng.normal(0, 0.03, (len(stroke), 2))
        p = _smooth(p) * [size * aspect, size] + pad
        pts = [tuple(v) for v in p]
        draw.line(pts, fill=255, width=width, joint="curve")
        r = width / 2
        for x, y in (pts[0], pts[-1]):  # round pen ends
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return im


def make_image(label: int, rng: np.random.Generator, kind: str | None = None,
               fonts: list[Path] | None = None) -> tuple[Image.Image, dict]:
    """One person-made image of ``label`` and the parameters drawn for it.

    kind: "font" or "hand" (default: font three times in four when fonts exist).
    The image is mode L, or LA when the background is transparent.
    """
    fonts = font_files() if fonts is None else fonts
    if kind is None:
        kind = "font" if fonts and rng.random() < 0.75 else "hand"
    w = int(rng.integers(40, 480))
    h = int(np.clip(w * rng.uniform(0.7, 1.4), 32, 640))
    height = int(min(w, h) * rng.uniform(0.3, 0.85))  # the digit's height in the canvas
    glyph = _glyph_font(label, rng, fonts, max(height, 12)) if kind == "font" else _glyph_hand(label, rng, max(height, 12))
    angle = float(rng.uniform(-15, 15))
    shear = float(rng.uniform(-0.25, 0.25))
    # shear first (slant), then rotate; both keep the mask's ink inside an expanded frame
    gw, gh = glyph.size
    glyph = glyph.transform((gw + int(abs(shear) * gh) + 2, gh), Image.Transform.AFFINE,
                            (1, shear, -max(shear, 0) * gh, 0, 1, 0), resample=Image.Resampling.BICUBIC)
    glyph = glyph.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    bbox = glyph.getbbox() or (0, 0, *glyph.size)
    glyph = glyph.crop(bbox)
    scale = min(height / glyph.size[1], 0.95 * w / glyph.size[0], 0.95 * h / glyph.size[1])
    glyph = glyph.resize((max(1, int(glyph.size[0] * scale)), max(1, int(glyph.size[1] * scale))), Image.Resampling.LANCZOS)
    x = int(rng.integers(0, w - glyph.size[0] + 1))
    y = int(rng.integers(0, h - glyph.size[1] + 1))
    mask = Image.new("L", (w, h), 0)
    mask.paste(glyph, (x, y))
    blur = float(rng.choice([0, 0, rng.uniform(0.3, 1.5)])) * max(1.0, height / 60)
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    dark_on_light = rng.random() < 0.7
    paper = rng.uniform(0.75, 1.0) if dark_on_light else rng.uniform(0.0, 0.25)
    ink = rng.uniform(0.0, 0.3) if dark_on_light else rng.uniform(0.7, 1.0)
    m = np.asarray(mask, np.float32) / 255
    noise = float(rng.choice([0.0, rng.uniform(0.005, 0.04)]))
    pixels = paper + (ink - paper) * m + rng.normal(0, noise, m.shape) if noise else paper + (ink - paper) * m
    fmt = "jpeg" if rng.random() < 0.35 else "png"
    transparent = fmt == "png" and dark_on_light and rng.random() < 0.2
    img = Image.fromarray(np.clip(pixels * 255, 0, 255).round().astype(np.uint8), "L")
    if transparent:  # ink as alpha over nothing: predict composites it onto white
        img = Image.merge("LA", (Image.new("L", (w, h), int(ink * 255)), mask))
    params = dict(label=label, kind=kind, size=(w, h), height=height, angle=round(angle, 1), shear=round(shear, 2),
                  blur=round(blur, 2), dark_on_light=bool(dark_on_light), noise=round(noise, 3), format=fmt,
                  transparent=bool(transparent), box=(x, y, x + glyph.size[0], y + glyph.size[1]))
    return img, params


def write_set(folder: str | Path, n: int, seed: int = 0, kind: str | None = None) -> list[dict]:
    """Write ``n`` images (labels cycling 0-9) and labels.csv into ``folder``; return each
    image's parameters with its ``file`` name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fonts = font_files()
    rows = []
    for i in range(n):
        label = i % 10
        img, params = make_image(label, rng, kind, fonts)
        name = f"{label}_{i:04d}." + ("jpg" if params["format"] == "jpeg" else "png")
        if params["format"] == "jpeg":
            img.save(folder / name, quality=int(rng.integers(60, 96)))
        else:
            img.save(folder / name)
        rows.append(dict(params, file=name))
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        writer.writerows((r["file"], r["label"]) for r in rows)
    return rows


if __name__ == "__main__":  # python tests/digit_images.py OUT_DIR [N] [SEED]
    import sys

    out = sys.argv[1]
    rows = write_set(out, int(sys.argv[2]) if len(sys.argv) > 2 else 200, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    print(f"wrote {len(rows)} images and labels.csv to {out}")
