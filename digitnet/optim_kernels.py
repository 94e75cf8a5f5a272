"""The optimizers' step as one compiled pass over the parameters: the fast path of
``digitnet.nn.optim`` (its NumPy steps stay the reference, and these give the same bits).

NumPy's step walks the whole parameter vector once per operation: SGD with momentum and L2
makes six passes over five arrays (λ·W, + ∇C, · η, μ·v, v − …, θ + v), Adam about fifteen.
For a conv net of ~0.3 M parameters (two-conv, an epoch at batch 32 on 2 cores) that was
0.7-0.9 ms of each ~7.5 ms mini-batch, on one core while the other waited. Here
each element is read once, updated, and written once, the vector cut into one range per
thread: the same float32 operations in the same order as NumPy's, so the same bits, for any
thread count (each element's update depends on that element alone).

``FAST`` maps an optimizer's name to a factory with ``OPTIMIZERS``' signature; its objects
are the NumPy optimizers (the same state and results) with the step compiled for float32
vectors in one piece, NumPy's for anything else.
"""

from __future__ import annotations

import numpy as np

from digitnet import conv_kernels as ck
from digitnet.nn.optim import SGD, Adam

from numba import njit, prange  # noqa: E402  (conv_kernels has set numba's cache and threading layer)


@njit(cache=True, parallel=True)
def sgd_step(n_chunks, params, grad, velocity, l2_mask, lr, momentum, decay):
    """θ <- θ + v with v <- μ v − η (∇C + λ W) (``SGD.step``): t = λ·mask·θ + ∇C when
    ``decay`` (else t = ∇C), t = t·η, then v = μ v − t and θ = θ + v when μ ≠ 0, else θ = θ − t.
    lr, momentum: float32; l2_mask: λ on weights, 0 on biases."""
    n = params.size
    for c in prange(n_chunks):
        lo, hi = ck._chunk(n, n_chunks, c)
        for i in range(lo, hi):
            j = np.uint64(i)
            t = l2_mask[j] * params[j] + grad[j] if decay else grad[j]
            t = t * lr
            if momentum != 0:
                v = velocity[j] * momentum - t
                velocity[j] = v
                params[j] = params[j] + v
            else:
                params[j] = params[j] - t


@njit(cache=True, parallel=True)
def adam_step(n_chunks, params, grad, m, v, l2_mask, lr, b1, b1c, b2, b2c, scale1, scale2, eps, decay):
    """``Adam.step`` after its counter has moved on: m = β1 m + (1 − β1) ∇;
    v = β2 v + (1 − β2) ∇²; θ = θ − η (m·scale1 / (√(v·scale2) + ε) + λ·mask·θ), with
    b1c = 1 − β1, b2c = 1 − β2, scale1 = 1/(1 − β1ᵗ), scale2 = 1/(1 − β2ᵗ): all float32,
    as NumPy casts them."""
    n = params.size
    for c in prange(n_chunks):
        lo, hi = ck._chunk(n, n_chunks, c)
        for i in range(lo, hi):
            j = np.uint64(i)
            g = grad[j]
            mj = m[j] * b1 + g * b1c
            vj = v[j] * b2 + g * b2c * g
            m[j], v[j] = mj, vj
            step = mj * scale1 / (np.sqrt(vj * scale2) + eps)
            if decay:
                step = step + l2_mask[j] * params[j]
            params[j] = params[j] - step * lr


def _fits(*arrays) -> bool:
    """True for float32 vectors laid out in one piece (what the kernels are compiled for)."""
    return all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)


class CompiledSGD(SGD):
    """``SGD`` whose step is ``sgd_step`` (float32; NumPy's step otherwise)."""

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``params`` in place from ``grad`` at rate ``lr``, as ``SGD.step`` does."""
        if not _fits(params, grad, self.velocity, self._l2_mask):
            return super().step(params, grad, lr)
        sgd_step(ck._threads(), params, grad, self.velocity, self._l2_mask, np.float32(lr), self.momentum,
                 bool(self.l2))


class CompiledAdam(Adam):
    """``Adam`` whose step is ``adam_step`` (float32; NumPy's step otherwise)."""

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``params`` in place from ``grad`` at rate ``lr``, as ``Adam.step`` does."""
        if not _fits(params, grad, self.m, self.v, self._l2_mask):
            return super().step(params, grad, lr)
        self.t += 1
        f32, b1, b2 = np.float32, self.beta1, self.beta2
        adam_step(ck._threads(), params, grad, self.m, self.v, self._l2_mask, f32(lr), f32(b1), f32(1 - b1), f32(b2),
                  f32(1 - b2), f32(1.0 / (1 - b1 ** self.t)), f32(1.0 / (1 - b2 ** self.t)), f32(self.eps),
                  bool(self.l2))


# name -> factory(n, momentum, l2, decay_mask), as digitnet.nn.optim.OPTIMIZERS
FAST = {
    "sgd": lambda n, momentum, l2, mask: CompiledSGD(n, momentum, l2, mask),
    "adam": lambda n, momentum, l2, mask: CompiledAdam(n, l2, mask),
}
