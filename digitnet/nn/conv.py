"""Convolution and max pooling over feature maps (m, C, H, W), in NumPy.

The forward pass is im2col: a strided view of every k×k window (no copy), one reshape that
lays the windows out as rows (m·H'·W', C·k·k), and one matrix product with the filters
(F, C·k·k) — the same BLAS product a dense layer makes. Backward is that product's two
transposes and col2im, which adds each window's gradient back where the window came from
(k² slice additions, one per kernel offset, each over the whole batch).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitnet.nn.layers import Layer, _fill_normal


def _windows(a: np.ndarray, k: int, s: int) -> np.ndarray:
    """Every k×k window of a (m, C, H, W) at stride s, as a view (m, C, H', W', k, k)."""
    return sliding_window_view(a, (k, k), axis=(2, 3))[:, :, ::s, ::s]


def _col2im(dwin: np.ndarray, shape: tuple, k: int, s: int) -> np.ndarray:
    """Inverse of ``_windows`` for gradients: dwin (m, C, H', W', k, k) summed back into
    an array of ``shape`` (m, C, H, W); overlapping windows add."""
    out = np.zeros(shape, dwin.dtype)
    ho, wo = dwin.shape[2:4]
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] += dwin[:, :, :, :, i, j]
    return out


class Conv(Layer):
    """``filters`` k×k filters over all input channels: z[f] = Σ_c W[f, c] ⋆ a[c] + b[f].
    W (F, C, k, k), b (F,); ``padding`` zeros around the input, ``stride`` between windows."""

    type = "conv"
    SETTINGS = {"filters": (int, 1, 1024), "kernel": (int, 1, 64), "stride": (int, 1, 64), "padding": (int, 0, 64)}

    def __init__(self, filters: int, kernel: int, stride: int = 1, padding: int = 0):
        self.filters, self.kernel, self.stride, self.padding = filters, kernel, stride, padding

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ValueError(f"{self.describe()} needs feature maps (channels, height, width), got shape {in_shape}")
        c, h, w = in_shape
        k, s, p = self.kernel, self.stride, self.padding
        if h + 2 * p < k or w + 2 * p < k:
            raise ValueError(f"{self.describe()}: a {k}×{k} kernel does not fit {h}×{w} maps (padding {p})")
        return (self.filters, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    def param_shapes(self):
        return {"W": (self.filters, self.in_shape[0], self.kernel, self.kernel), "b": (self.filters,)}

    def init_params(self, p, rng, gain):
        k2 = self.kernel * self.kernel
        _fill_normal(p["W"], rng, self.in_shape[0] * k2, self.filters * k2, gain)

    def forward(self, p, a, train=False, rng=None):
        m, (c, h, w), (f, ho, wo), k = len(a), self.in_shape, self.out_shape, self.kernel
        if self.padding:
            q = self.padding
            a = np.pad(a, ((0, 0), (0, 0), (q, q), (q, q)))
        cols = _windows(a, k, self.stride).transpose(0, 2, 3, 1, 4, 5).reshape(m * ho * wo, c * k * k)
        z = cols @ p["W"].reshape(f, -1).T + p["b"]          # (m·H'·W', F)
        return z.reshape(m, ho, wo, f).transpose(0, 3, 1, 2), (cols, a.shape)   # (m, F, H', W')

    def backward(self, p, cache, delta, g, need_dx=True):
        cols, padded = cache
        m, (c, h, w), (f, ho, wo), k = len(delta), self.in_shape, self.out_shape, self.kernel
        D = delta.transpose(0, 2, 3, 1).reshape(m * ho * wo, f)          # δ as rows (m·H'·W', F)
        np.matmul(D.T, cols, out=g["W"].reshape(f, -1))                   # ∂C/∂W = Σ δ ⊗ window
        np.sum(D, axis=0, out=g["b"])                                     # ∂C/∂b = Σ δ over positions
        if not need_dx:
            return None
        dcols = (D @ p["W"].reshape(f, -1)).reshape(m, ho, wo, c, k, k)   # ∂C/∂window
        da = _col2im(dcols.transpose(0, 3, 1, 2, 4, 5), padded, k, self.stride)
        q = self.padding
        return da[:, :, q:q + h, q:q + w] if q else da                    # (m, C, H, W)

    def macs(self):
        f, ho, wo = self.out_shape
        return f * ho * wo * self.in_shape[0] * self.kernel ** 2

    def scratch(self):
        f, ho, wo = self.out_shape                  # output, z and the im2col rows
        return 2 * f * ho * wo + ho * wo * self.in_shape[0] * self.kernel ** 2

    def describe(self):
        s = f"s{self.stride}" if self.stride != 1 else ""
        p = f"p{self.padding}" if self.padding else ""
        return f"conv{self.filters}x{self.kernel}{s}{p}"


class MaxPool(Layer):
    """The largest value of each ``size``×``size`` window (stride ``stride``, default ``size``).
    Backward sends each window's gradient to its maximum; of tied maxima, to the first
    in reading order (a valid subgradient: the gradient's total is kept)."""

    type = "maxpool"
    SETTINGS = {"size": (int, 1, 64), "stride": (int, 1, 64)}

    def __init__(self, size: int = 2, stride: int | None = None):
        self.size, self.stride = size, stride or size

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ValueError(f"{self.describe()} needs feature maps (channels, height, width), got shape {in_shape}")
        c, h, w = in_shape
        if h < self.size or w < self.size:
            raise ValueError(f"{self.describe()}: a {self.size}×{self.size} window does not fit {h}×{w} maps")
        return (c, (h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1)

    def forward(self, p, a, train=False, rng=None):
        m, (c, ho, wo), k = len(a), self.out_shape, self.size
        win = _windows(a, k, self.stride).reshape(m, c, ho, wo, k * k)
        idx = win.argmax(axis=-1)[..., None]                              # (m, C, H', W', 1)
        return np.take_along_axis(win, idx, axis=-1)[..., 0], (idx, a.shape)

    def backward(self, p, cache, grad, g, need_dx=True):
        if not need_dx:
            return None
        idx, shape = cache
        k = self.size
        dwin = np.zeros(idx.shape[:-1] + (k * k,), grad.dtype)
        np.put_along_axis(dwin, idx, grad[..., None], axis=-1)            # to the argmax of each window
        return _col2im(dwin.reshape(dwin.shape[:-1] + (k, k)), shape, k, self.stride)

    def describe(self):
        return f"pool{self.size}" + (f"s{self.stride}" if self.stride != self.size else "")
