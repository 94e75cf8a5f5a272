"""The numba kernels: mini-batch SGD by backpropagation, and affine augmentation of digits.

Only training imports this module (importing numba costs ~0.3 s; predict and inspect never
pay it). Kernels take arrays and numbers only, float32 and C-contiguous at the boundary so
each compiles once; randomness is drawn outside with a seeded NumPy Generator and passed in.

Parameters are one flat float32 vector (see ``digitnet.network``): layer l's W (n_l, n_{l-1})
and b (n_l,) are reshaped views at ``w_off[l-1]`` and ``b_off[l-1]``. A batch is a stack of
rows, so ``z = W @ a + b`` is computed for all rows at once as ``Z = A @ W.T + b``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _cache_dir() -> str:
    """A writable directory for numba's cache: $NUMBA_CACHE_DIR, else the user cache dir,
    else a temporary one. A read-only install must still train, so this never fails."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (Path(base) / "digitnet" / "numba",):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            return str(candidate)
        except OSError:
            pass
    return tempfile.mkdtemp(prefix="digitnet-numba-")


os.environ["NUMBA_CACHE_DIR"] = _cache_dir()

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

SIGMOID, RELU, TANH = 0, 1, 2      # hidden activation codes (network.ACTIVATIONS[...].code)
QUADRATIC, CROSS_ENTROPY = 0, 1    # cost codes (network.COSTS[...].code)


@njit(cache=True)
def _activate(Z, b, act):
    """In place: Z <- sigma(Z + b), bias add and activation fused in one pass. Z (m, n)."""
    m, n = Z.shape
    for i in range(m):
        for j in range(n):
            z = Z[i, j] + b[j]
            if act == SIGMOID:
                Z[i, j] = 1.0 / (1.0 + np.exp(-z))
            elif act == RELU:
                Z[i, j] = z if z > 0 else 0.0
            else:
                Z[i, j] = np.tanh(z)


@njit(cache=True)
def _softmax(Z, b):
    """In place: each row of Z <- softmax(Z + b)."""
    m, n = Z.shape
    for i in range(m):
        top = -np.inf
        for j in range(n):
            Z[i, j] += b[j]
            top = max(top, Z[i, j])
        s = 0.0
        for j in range(n):
            Z[i, j] = np.exp(Z[i, j] - top)
            s += Z[i, j]
        for j in range(n):
            Z[i, j] /= s


@njit(cache=True)
def _times_sigma_prime(D, A, act):
    """In place: D <- D ⊙ sigma'(z), with sigma' written in terms of a = sigma(z)."""
    m, n = D.shape
    for i in range(m):
        for j in range(n):
            a = A[i, j]
            if act == SIGMOID:
                D[i, j] *= a * (1.0 - a)
            elif act == RELU:
                if a <= 0:
                    D[i, j] = 0.0
            else:
                D[i, j] *= 1.0 - a * a


@njit(cache=True)
def train_batches(X, labels, order, params, velocity, grad, sizes, w_off, b_off, act, cost,
                  batch_size, first, last, lr, momentum, l2, acts, deltas, stats):
    """SGD over mini-batches ``first … last-1`` of the shuffled ``order``; updates params in place.

    X (N, n_0) float32 in [0, 1]; labels (N,) int64; order (N,) int64, a permutation of rows.
    params, velocity, grad: flat float32 (P,). sizes (L+1,), w_off/b_off (L,) int64.
    acts: float32 buffer of batch_size * sum(sizes); deltas: float32 of 2 * batch_size * max(sizes).
    stats (2,) float64 accumulates the summed per-sample cost and the number classified right.
    Update: v <- momentum v - lr (nabla + l2 W) (no decay on biases); params <- params + v.
    """
    N = order.shape[0]
    L = sizes.shape[0] - 1
    a_off = np.zeros(L + 1, np.int64)           # where each layer's (m, n_l) block starts in acts
    for l in range(1, L + 1):
        a_off[l] = a_off[l - 1] + batch_size * sizes[l - 1]
    half = deltas.shape[0] // 2
    n_L = sizes[L]
    for batch in range(first, last):
        start = batch * batch_size
        m = min(batch_size, N - start)
        inv_m = np.float32(1.0 / m)
        # a_0 = x: gather this batch's rows                                  (m, n_0)
        A0 = acts[0:m * sizes[0]].reshape(m, sizes[0])
        for i in range(m):
            A0[i, :] = X[order[start + i]]
        # forward: z_l = W_l a_{l-1} + b_l, a_l = sigma(z_l)                  (m, n_l)
        for l in range(1, L + 1):
            n_in, n_out = sizes[l - 1], sizes[l]
            A = acts[a_off[l - 1]:a_off[l - 1] + m * n_in].reshape(m, n_in)
            Z = acts[a_off[l]:a_off[l] + m * n_out].reshape(m, n_out)
            W = params[w_off[l - 1]:w_off[l - 1] + n_out * n_in].reshape(n_out, n_in)
            b = params[b_off[l - 1]:b_off[l - 1] + n_out]
            np.dot(A, W.T, Z)
            if l < L:
                _activate(Z, b, act)
            elif cost == QUADRATIC:
                _activate(Z, b, SIGMOID)
            else:
                _softmax(Z, b)
        # output error delta_L (m, n_L), with the batch mean 1/m folded in:
        #   quadratic: (a - y) ⊙ a(1 - a);   cross-entropy with softmax: a - y
        aL = acts[a_off[L]:a_off[L] + m * n_L].reshape(m, n_L)
        D = deltas[0:m * n_L].reshape(m, n_L)
        for i in range(m):
            y = labels[order[start + i]]
            best = 0
            for j in range(n_L):
                a = aL[i, j]
                t = 1.0 if j == y else 0.0
                if cost == QUADRATIC:
                    stats[0] += 0.5 * (a - t) * (a - t)
                    D[i, j] = (a - t) * a * (1.0 - a) * inv_m
                else:
                    D[i, j] = (a - t) * inv_m
                if a > aL[i, best]:
                    best = j
            if cost == CROSS_ENTROPY:
                stats[0] -= np.log(max(aL[i, y], 1e-12))
            if best == y:
                stats[1] += 1
        # backward: nabla_b = delta, nabla_W = delta a_{l-1}^T, delta_{l-1} = (W^T delta) ⊙ sigma'
        side = 0
        for l in range(L, 0, -1):
            n_in, n_out = sizes[l - 1], sizes[l]
            D = deltas[side * half:side * half + m * n_out].reshape(m, n_out)
            A = acts[a_off[l - 1]:a_off[l - 1] + m * n_in].reshape(m, n_in)
            gW = grad[w_off[l - 1]:w_off[l - 1] + n_out * n_in].reshape(n_out, n_in)
            gb = grad[b_off[l - 1]:b_off[l - 1] + n_out]
            np.dot(D.T, A, gW)                                            # (n_l, n_{l-1})
            gb[:] = 0.0
            for i in range(m):
                for j in range(n_out):
                    gb[j] += D[i, j]
            if l > 1:
                W = params[w_off[l - 1]:w_off[l - 1] + n_out * n_in].reshape(n_out, n_in)
                Dprev = deltas[(1 - side) * half:(1 - side) * half + m * n_in].reshape(m, n_in)
                np.dot(D, W, Dprev)                                       # (m, n_{l-1})
                _times_sigma_prime(Dprev, A, act)
                side = 1 - side
        # the SGD step, after the whole backward pass has used the old weights
        for l in range(L):
            w0, b0, b1 = w_off[l], b_off[l], b_off[l] + sizes[l + 1]
            for k in range(w0, b1):
                g = grad[k] + l2 * params[k] if k < b0 else grad[k]
                if momentum != 0.0:
                    velocity[k] = momentum * velocity[k] - lr * g
                    params[k] += velocity[k]
                else:
                    params[k] -= lr * g


@njit(cache=True)
def warp_images(src, mats, thickness, out):
    """Augment: out[i] = affine warp of src[i] (bilinear), then ``|thickness[i]|`` passes of a
    3×3 cross dilation (thickness > 0: bolder strokes) or erosion (< 0: thinner); pixels
    scaled to [0, 1].

    src (N, H, W) uint8; mats (N, 2, 3) float32 maps an output pixel (x, y, 1), measured from
    the image centre, to its source position measured from the centre; thickness (N,) int8;
    out (N, H*W) float32.
    """
    N, H, Wd = src.shape
    cy, cx = (H - 1) / 2.0, (Wd - 1) / 2.0
    img = np.empty((H, Wd), np.float32)
    tmp = np.empty((H, Wd), np.float32)
    for n in range(N):
        M = mats[n]
        for r in range(H):
            for c in range(Wd):
                x, y = c - cx, r - cy
                sx = M[0, 0] * x + M[0, 1] * y + M[0, 2] + cx
                sy = M[1, 0] * x + M[1, 1] * y + M[1, 2] + cy
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                fx, fy = sx - x0, sy - y0
                v = 0.0
                for dy in range(2):
                    yy = y0 + dy
                    if yy < 0 or yy >= H:
                        continue
                    wy = fy if dy else 1.0 - fy
                    for dx in range(2):
                        xx = x0 + dx
                        if 0 <= xx < Wd:
                            v += wy * (fx if dx else 1.0 - fx) * src[n, yy, xx]
                img[r, c] = v / 255.0
        t = thickness[n]
        for _ in range(abs(t)):
            tmp[:, :] = img
            for r in range(H):
                for c in range(Wd):
                    v = tmp[r, c]
                    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < H and 0 <= cc < Wd:
                            v = max(v, tmp[rr, cc]) if t > 0 else min(v, tmp[rr, cc])
                    img[r, c] = v
        for r in range(H):
            for c in range(Wd):
                out[n, r * Wd + c] = img[r, c]
