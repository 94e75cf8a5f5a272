"""Images as the network saw its training digits: reading picture files and MNIST-style preprocessing.

MNIST digits are white ink on black, the ink's bounding box scaled (keeping its aspect ratio,
anti-aliased) so the longer side is 20 px, then placed in a 28×28 field with the centre of
mass at the centre (pixel (14, 14), which is where the real MNIST digits have it on average).
A person's image is usually dark ink on light paper, of any size, anywhere in the frame:
``to_mnist`` closes that gap. ``resize_plain`` is what ``--no-preprocess`` feeds instead.

Every function takes and returns float32 arrays with values in [0, 1]; 1 is white.
Pillow is imported here, so import this module only in commands that read images.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from digitnet.errors import DataError

# Refused before decoding: a 100-megapixel greyscale image is already 400 MB as float32.
MAX_PIXELS = 100_000_000
# JPEG (and some other) decoders can decode at 1/2, 1/4, 1/8 scale for free; a digit keeps
# plenty of detail at this many pixels on the shorter side.
DRAFT_SIZE = 512
# Other formats above REDUCE_ABOVE pixels are reduced (box filter) by a whole factor that keeps
# at least REDUCE_TO pixels on the shorter side, before conversion to float: a 12-megapixel
# PNG would otherwise be 48 MB of float32 for a digit that needs a few hundred pixels.
REDUCE_ABOVE, REDUCE_TO = 4_000_000, 1024
# Ink brighter than the background by less than this (on a 0-1 scale) is no ink at all.
MIN_CONTRAST = 0.08
# Pixels above this fraction of the ink's contrast decide the bounding box (JPEG ringing
# and paper texture stay below it); fainter pixels inside the box are kept, anti-aliasing.
INK_THRESHOLD = 0.3
MNIST_SIZE, MNIST_BOX = 28, 20
# More components than this in a clean image's ink, none large, is noise (see _refuse_scattered).
SCATTERED = 100
# Stroke thickness (2·area / perimeter, in pixels of the 20-px box): MNIST's median is 2.0,
# its 95th percentile 3.0. Bolder ink (marker pens, bold fonts) is thinned towards TARGET.
STROKE_MAX, STROKE_TARGET = 3.0, 2.2
_WORK = 4  # thinning works at this multiple of the box's resolution


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as greyscale float32 (H, W) in [0, 1] (1 = white).

    PNG, JPEG, BMP, GIF, TIFF and anything else Pillow reads (first frame only); transparent
    pixels are composited onto white, the EXIF orientation is applied. Large images come back
    smaller: a JPEG decoded at 1/2-1/8 scale (at least DRAFT_SIZE px a side), anything else
    above REDUCE_ABOVE pixels reduced to at least REDUCE_TO px on the shorter side. Raises DataError with
    one line for a missing/unreadable file, a file that is not an image, or an image of more
    than MAX_PIXELS pixels (refused from its header, before decoding).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise DataError(f"{path}: {w}×{h} image is too large ({w * h / 1e6:.0f} megapixels; "
                                    f"the limit is {MAX_PIXELS / 1e6:.0f})")
                if im.format == "JPEG":
                    im.draft("L", (DRAFT_SIZE, DRAFT_SIZE))
                im = ImageOps.exif_transpose(im)
                if w * h > REDUCE_ABOVE and im.mode in ("L", "LA", "RGB", "RGBA") and min(im.size) >= 2 * REDUCE_TO:
                    im = im.reduce(min(im.size) // REDUCE_TO)   # a 12 MP PNG: what draft does for JPEG
                try:
                    return _to_gray(im)
                except DataError as e:
                    raise DataError(f"{path}: {e}") from None
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        # Pillow refuses twice its own limit from the header, before our check: say it in our words
        size = re.search(r"\((\d+) pixels\)", str(e))
        mp = f"{int(size.group(1)) / 1e6:.0f} megapixels" if size else "too many pixels"
        raise DataError(f"{path}: refused as a decompression bomb ({mp}; the limit is "
                        f"{MAX_PIXELS / 1e6:.0f}), before decoding") from None
    except PermissionError:
        raise DataError(f"{path}: cannot read (permission denied)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # truncated or corrupt data surfaces while decoding
        raise DataError(f"{path}: corrupt or truncated image ({e})") from None


def _to_gray(im: Image.Image) -> np.ndarray:
    """A decoded Pillow image -> float32 (H, W) in [0, 1], alpha composited onto white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: Pillow's convert("L") would clip, so scale here.
        a = np.asarray(im, np.float32)
        if not np.isfinite(a).all():
            raise DataError("the image holds NaN or infinite values")
        top = 65535.0 if im.mode != "F" else max(float(a.max(initial=0)), 1.0)
        return np.clip(a / top, 0, 1).astype(np.float32)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    gray = np.asarray(im.convert("L"), np.float32)
    return gray * np.float32(1 / 255)


def _ink_bright(gray: np.ndarray) -> np.ndarray:
    """Detect polarity from the border (the paper) and return the image with ink bright:
    dark ink on light paper is inverted. Then subtract the paper's level and stretch the
    ink's contrast to [0, 1]. Raises DataError when there is no ink."""
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    paper = float(np.median(border))
    if paper > 0.5:
        gray, paper = 1.0 - gray, 1.0 - paper
    contrast = float(gray.max()) - paper
    if contrast < 1 / 255:
        raise DataError("no digit found: the image is blank (one level throughout)")
    if contrast < MIN_CONTRAST:
        from digitnet.photo import NO_INK

        raise DataError("no digit found: " + NO_INK["faint"].format(strength=contrast, ink=MIN_CONTRAST))
    return np.clip((gray - paper) / contrast, 0, 1).astype(np.float32)


def _refuse_scattered(ink: np.ndarray) -> None:
    """DataError when the "ink" of a clean image (H, W) is grain scattered all over it: more than
    SCATTERED components above INK_THRESHOLD, the largest under a tenth of their area (grainy
    blank paper, noise). A digit's ink is one to a few components; a dot-matrix digit has 35 dots."""
    from digitnet.components import label
    from digitnet.photo import NO_INK

    c = label(ink > INK_THRESHOLD)
    if c.n > SCATTERED and float(c.area.max()) < 0.1 * float(c.area.sum()):
        raise DataError(f"no digit found: {NO_INK['noise']}")


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels above INK_THRESHOLD, half-open."""
    mask = ink > INK_THRESHOLD
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Anti-aliased resize of a float image with Pillow (mode "F")."""
    out = Image.fromarray(np.ascontiguousarray(a, np.float32), mode="F").resize((width, height), Image.Resampling.LANCZOS,
                                                                                  reducing_gap=3.0)
    return np.asarray(out, np.float32)


def _stroke_width(a: np.ndarray) -> float:
    """Mean stroke thickness of ink a (H, W): for a stroke of width t and length L the ink's
    area is t·L and its outline 2·L, so t = 2·area / outline (soft, from grey levels)."""
    outline = np.abs(np.diff(a, axis=0)).sum() + np.abs(np.diff(a, axis=1)).sum()
    return float(2 * a.sum() / max(outline, 1e-6))


def _thin_bold(ink: np.ndarray, box: int) -> np.ndarray:
    """Cropped ink -> the same, thinned by grey erosion when its strokes would be bolder than
    STROKE_MAX px once scaled to ``box``; cropped again to the ink. Ordinary ink is untouched."""
    h, w = ink.shape
    scale = _WORK * box / max(h, w)
    work = np.clip(_resize(ink, max(1, round(w * scale)), max(1, round(h * scale))), 0, 1)
    t = _stroke_width(work) / _WORK
    if t <= STROKE_MAX:
        return ink
    im = Image.fromarray(work, mode="F")
    for _ in range(min(int(round((t - STROKE_TARGET) * _WORK / 2)), 3 * _WORK)):
        im = im.filter(ImageFilter.MinFilter(3))  # one pass: 2 work px = 0.5 box px thinner
    work = np.asarray(im, np.float32)
    if work.max() < INK_THRESHOLD:
        return ink
    top, bottom, left, right = _ink_box(work)
    return work[top:bottom, left:right]


def _checked_gray(gray) -> np.ndarray:
    """The image as float32 (H, W); DataError for another shape, a non-finite pixel or
    one outside [0, 1] (grey levels; 255 would overflow the photo analysis's histograms)."""
    with np.errstate(over="ignore"):   # float64 beyond float32's range becomes inf, refused below
        gray = np.asarray(gray, np.float32)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise DataError(f"expected a greyscale image (H, W), got an array of shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise DataError("the image holds NaN or infinite values")
    lo, hi = float(gray.min()), float(gray.max())
    if lo < 0 or hi > 1:
        raise DataError(f"expected grey levels in [0, 1], got values from {lo:.4g} to {hi:.4g}")
    return gray


def to_mnist(gray: np.ndarray, size: int = MNIST_SIZE, box: int = MNIST_BOX, *,
             notes: dict | None = None, steps: dict | None = None) -> np.ndarray:
    """MNIST preprocessing of a greyscale image (H, W) in [0, 1] -> float32 (size, size) in
    [0, 1], white ink on black. The one preprocessing of images: predict, ``data import``,
    the drawing page and inspect all call it.

    Steps, as LeCun et al. made MNIST: detect polarity (dark ink on light paper is inverted)
    -> remove the background level -> crop to the ink's bounding box -> scale the longer side
    to ``box`` px keeping the aspect ratio, anti-aliased -> paste into size×size shifted so
    the centre of mass is at pixel (size/2, size/2). A photo first goes through
    ``photo.find_ink`` (the sheet, uneven light, ruled lines and stray marks removed); a clean
    image comes out exactly as it always did. An image with no digit (blank, its ink too faint,
    only noise) raises DataError, "no digit found" and why, rather than feeding the network
    an empty field.

    ``notes``, when given, receives what the doubt rules read (``photo.Found.notes``);
    ``steps`` receives what each step made, for ``--show`` (see ``step_panels``).
    """
    from digitnet.photo import NoInk, find_ink

    gray = _checked_gray(gray)
    try:
        found = find_ink(gray)
    except NoInk as e:
        if not e.even or e.why == "noise":           # (a grainy image's plain path would read its grain)
            raise DataError(f"no digit found: {e}") from None
        found = None                                   # a clean image: the plain path decides
    ink = _ink_bright(gray) if found is None or found.clean else found.ink
    if found is None or found.clean:
        _refuse_scattered(ink)
    if notes is not None and found is not None:
        notes.update(found.notes)
    top, bottom, left, right = _ink_box(ink)
    if steps is not None:
        steps.update(found=found, ink=ink, box=(top, bottom, left, right))
    out = _mnist_field(_thin_bold(ink[top:bottom, left:right], box), size, box)
    if steps is not None:
        steps["input"] = out
    return out


def _mnist_field(ink: np.ndarray, size: int, box: int) -> np.ndarray:
    """Cropped ink (h, w) -> (size, size): longer side scaled to ``box``, peak 1, centre of mass
    at the field's centre."""
    h, w = ink.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    digit = np.clip(_resize(ink, nw, nh), 0, 1)
    peak = float(digit.max())
    if peak > 0:
        digit /= peak  # a thin stroke averaged down by the resize stays as bright as MNIST ink
    out = np.zeros((size, size), np.float32)
    mass = float(digit.sum())
    cy = float(digit.sum(axis=1) @ np.arange(nh)) / mass
    cx = float(digit.sum(axis=0) @ np.arange(nw)) / mass
    # top-left corner that puts the centre of mass on (size/2, size/2), kept inside the field
    y0 = min(max(int(round(size / 2 - cy)), 0), size - nh)
    x0 = min(max(int(round(size / 2 - cx)), 0), size - nw)
    out[y0:y0 + nh, x0:x0 + nw] = digit
    return out


def resize_plain(gray: np.ndarray, size: int = MNIST_SIZE, *, notes: dict | None = None,
                 steps: dict | None = None) -> np.ndarray:
    """What ``--no-preprocess`` feeds: the whole image resized to size×size (anti-aliased,
    aspect ratio not kept), float32 in [0, 1]. It does NOT invert: a dark-on-light image
    reaches the network dark-on-light, which is the point of comparing with ``to_mnist``.
    ``notes`` and ``steps`` as for ``to_mnist`` (there are no notes; the one step is the input)."""
    gray = _checked_gray(gray)
    out = np.clip(_resize(gray, size, size), 0, 1)
    if steps is not None:
        steps["input"] = out
    return out


# The model file's "preprocessing" names one of these; each is fn(gray, size, *, notes, steps).
PREPROCESSORS = {"mnist": to_mnist, "none": resize_plain}


def step_panels(gray: np.ndarray, size: int = MNIST_SIZE, height: int = 28,
                preprocessing: str = "mnist") -> list[tuple[str, np.ndarray]]:
    """What ``--show`` draws for one image, so a user sees why an answer came out: (title,
    grey image (h, w) in [0, 1], at most ``height`` px tall and 2·height wide) per step:
    the image as analysed, the sheet's outline drawn (one pixel, black) when one was found;
    the paper removed (ink bright); the components kept (white), dropped (grey) and the lines
    taken out (dim); and the size×size the network saw. A clean image shows the first and the last:
    it takes MNIST's steps alone; so does ``preprocessing`` "none" (PREPROCESSORS' keys: the
    model's, or "none" for ``--no-preprocess``). Raises DataError as ``to_mnist`` does."""
    if preprocessing not in PREPROCESSORS:
        raise DataError(f"unknown preprocessing {preprocessing!r} (known: {', '.join(PREPROCESSORS)})")
    steps: dict = {}
    x = PREPROCESSORS[preprocessing](gray, size, steps=steps)
    return panels_of(gray, steps, x, height)


def panels_of(gray: np.ndarray, steps: dict, x: np.ndarray, height: int = 28) -> list[tuple[str, np.ndarray]]:
    """``step_panels`` from a preprocessing run already made: ``gray`` its input, ``steps``
    what it left there (its ``steps=`` argument), ``x`` its size×size result."""
    from digitnet.components import dilate

    found = steps.get("found")
    work = found.work if found is not None else _checked_gray(gray)
    panels = [("image", work)]
    if found is not None and not found.clean:
        d = found.darkness
        panels.append(("paper removed", d / max(float(d.max()), 1e-6)))
        parts = np.zeros(work.shape, np.float32)
        parts[found.lines] = 0.2
        parts[found.dropped] = 0.45
        parts[found.kept] = 1.0
        panels.append(("kept", parts))
    panels = [(title, _fit(a, height)) for title, a in panels]
    if found is not None and found.sheet is not None:
        sheet = _fit(found.sheet.astype(np.float32), height) > 0.5     # the sheet at the panel's scale
        panels[0][1][sheet & dilate(~sheet, 1)] = 0.0                   # its outline: one pixel, black
    return panels + [("network saw", x)]


def _fit(a: np.ndarray, height: int) -> np.ndarray:
    """a scaled (box filter) to at most ``height`` px tall and 2·height wide, keeping thin
    strokes visible: each output pixel is the brighter of its box's mean and max/2."""
    h, w = a.shape
    scale = min(height / h, 2 * height / w, 1.0)
    if scale >= 1.0:
        return np.clip(a, 0, 1).astype(np.float32)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    im = Image.fromarray(np.ascontiguousarray(a, np.float32), mode="F")
    mean = np.asarray(im.resize((nw, nh), Image.Resampling.BOX), np.float32)
    peak = np.asarray(im.resize((nw, nh), Image.Resampling.NEAREST, reducing_gap=None), np.float32)
    return np.clip(np.maximum(mean, peak / 2), 0, 1)
