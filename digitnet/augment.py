"""Augmentation: the variations real handwriting has (position, size, slant, rotation, stroke
width), drawn per image from a seeded Generator and applied to a whole epoch in one compiled pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentRange:
    """How far each random transform may go: degrees, relative scale, shear, pixels; the
    probabilities of thinner (one erosion), bolder (one dilation) and much bolder (two) strokes.
    Typed and printed digits are often far bolder than MNIST's pen strokes."""

    rotate: float = 12.0
    scale: float = 0.12
    shear: float = 0.25
    shift: float = 2.0
    thinner: float = 0.1
    bolder: float = 0.2
    much_bolder: float = 0.15
    flip: float = 0.0            # probability of a left-right mirror image


# What varies depends on what the images are: pen strokes rotate, slant and change weight;
# photographed objects (Fashion-MNIST) are upright and filled, so they only move and resize, and
# a shirt or a shoe mirrored left-right is still one (a mirrored 2 is not a 2).
PROFILES: dict[str, AugmentRange] = {
    "handwriting": AugmentRange(),
    "objects": AugmentRange(rotate=0.0, scale=0.06, shear=0.0, shift=2.0, thinner=0.0, bolder=0.0, much_bolder=0.0,
                            flip=0.5),
}


def draw_transforms(rng: np.random.Generator, n: int, r: AugmentRange = AugmentRange()) -> tuple[np.ndarray, np.ndarray]:
    """Random inverse affine maps (n, 2, 3) float32 and stroke changes (n,) int8 in {-1, 0, 1, 2}."""
    theta = np.deg2rad(rng.uniform(-r.rotate, r.rotate, n))
    scale = np.exp(rng.uniform(np.log(1 - r.scale), np.log(1 + r.scale), n))
    aspect = np.exp(rng.uniform(-r.scale / 2, r.scale / 2, n))
    shear = rng.uniform(-r.shear, r.shear, n)
    shift = rng.uniform(-r.shift, r.shift, (n, 2))
    c, s = np.cos(theta), np.sin(theta)
    # Forward map A = R(theta) · Shear · diag(scale·aspect, scale/aspect); we store A^-1 so the
    # kernel can pull each output pixel from its source position.
    sx, sy = scale * aspect, scale / aspect
    a00, a01 = c * sx, (c * shear - s) * sy
    a10, a11 = s * sx, (s * shear + c) * sy
    det = a00 * a11 - a01 * a10
    mats = np.empty((n, 2, 3), np.float32)
    mats[:, 0, 0], mats[:, 0, 1] = a11 / det, -a01 / det
    mats[:, 1, 0], mats[:, 1, 1] = -a10 / det, a00 / det
    mats[:, 0, 2] = -(mats[:, 0, 0] * shift[:, 0] + mats[:, 0, 1] * shift[:, 1])
    mats[:, 1, 2] = -(mats[:, 1, 0] * shift[:, 0] + mats[:, 1, 1] * shift[:, 1])
    u = rng.random(n)
    edges = np.cumsum([r.thinner, r.bolder, r.much_bolder])
    thickness = np.array([-1, 1, 2, 0], np.int8)[np.searchsorted(edges, u, side="right")]
    if r.flip > 0:                # drawn only then: handwriting keeps its random stream (and its bits)
        mirror = rng.random(n) < r.flip
        mats[mirror, :, 0] *= -1  # out(x, y) = warped(-x, y): the warped image, mirrored
    return mats, thickness


def augment(images: np.ndarray, rng: np.random.Generator, r: AugmentRange = AugmentRange(),
            out: np.ndarray | None = None) -> np.ndarray:
    """A randomly transformed float32 copy (N, H*W) in [0, 1] of uint8 images (N, H, W)."""
    from digitnet.kernels import warp_images

    mats, thickness = draw_transforms(rng, len(images), r)
    if out is None:
        out = np.empty((len(images), images.shape[1] * images.shape[2]), np.float32)
    warp_images(np.ascontiguousarray(images), mats, thickness, out)
    return out
